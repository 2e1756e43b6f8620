//! Security on real processes: every port is CURVE-encrypted and lets in only the keys of
//! its roles. A client without keys, with a key the scheduler never made, or with the
//! workers' key cannot connect (and gets a clear error); a worker with a client's key cannot
//! register; a secret value never crosses the loopback in plaintext (read by a TCP proxy
//! between client and scheduler), while the same proxy does see it on an `--insecure`
//! cluster; the legitimate client keeps working throughout.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{wait_until, Proc, TestCluster, DEADLINE, WORKER};
use zask::client::ClientSecurity;
use zask::protocol::{ClientRole, RequestError};
use zask::security::{Access, KeyPair, Role};
use zask::{graph, Client, ClientConfig, ClientError, Value};

/// Short, so refused connections fail fast (a refused key looks like silence to a client).
const CONNECT_MS: u64 = 2_000;

fn connect(cluster: &TestCluster, security: ClientSecurity) -> Result<Client, ClientError> {
    let config = ClientConfig {
        connect_timeout_ms: CONNECT_MS,
        security,
        ..ClientConfig::default()
    };
    Client::connect_with(cluster.address_to_clients(), config)
}

fn access(cluster: &TestCluster, role: Role) -> Access {
    Access::read(&cluster.access_file(role)).unwrap()
}

fn assert_refused(result: Result<Client, ClientError>, what: &str) {
    match result {
        Err(ClientError::Connect { reason, .. }) => {
            assert!(reason.contains("no scheduler answered"), "{what}: {reason}")
        }
        Err(other) => panic!("{what}: expected a connect error, got {other}"),
        Ok(_) => panic!("{what}: connected"),
    }
}

fn scheduler_log(cluster: &TestCluster) -> String {
    std::fs::read_to_string(cluster.dir().join("scheduler.log")).unwrap()
}

#[test]
fn only_the_keys_of_a_role_open_its_port() {
    let cluster = TestCluster::with_workers(1);
    let seed = graph! { "x" => 1, "y" => ("add", "x", 2) };
    let legit = cluster.client();

    // No keys at all.
    assert_refused(connect(&cluster, ClientSecurity::Insecure), "plaintext");
    // A key pair the scheduler never made, presented to the right server key.
    let mut stranger = access(&cluster, Role::Client);
    stranger.key = KeyPair::generate().unwrap();
    assert_refused(
        connect(&cluster, ClientSecurity::Access(stranger)),
        "a stranger's key",
    );
    // The workers' key on the client port (as a client access, so only the scheduler
    // can refuse it).
    let mut worker_as_client = access(&cluster, Role::Client);
    worker_as_client.key = access(&cluster, Role::Worker).key;
    assert_refused(
        connect(&cluster, ClientSecurity::Access(worker_as_client)),
        "the worker key on the client port",
    );
    wait_until("the scheduler to log the refusals", DEADLINE, || {
        (scheduler_log(&cluster)
            .matches("refused a connection")
            .count()
            >= 2)
            .then_some(())
    });
    // The client's and the operator's keys work, and so does the legitimate client all along.
    for role in [Role::Client, Role::Operator] {
        let client = connect(&cluster, ClientSecurity::Access(access(&cluster, role))).unwrap();
        assert_eq!(client.get(&seed, "y").unwrap(), Value::from(3), "{role}");
    }
    assert_eq!(legit.get(&seed, "y").unwrap(), Value::from(3));
    // An access file of the wrong role is refused before anything is sent.
    let err = Access::read_for(&cluster.access_file(Role::Worker), &[Role::Client]).unwrap_err();
    assert!(err.to_string().contains("worker's access file"), "{err}");
}

#[test]
fn a_worker_with_a_clients_key_cannot_register() {
    let cluster = TestCluster::with_workers(1);
    let client = cluster.client();
    let mut forged = access(&cluster, Role::Worker);
    forged.key = access(&cluster, Role::Client).key;
    let path = cluster.dir().join("forged.access");
    forged.write(&path).unwrap();
    let args: Vec<String> = [
        cluster.address_to_workers(),
        "--no-nanny",
        "--access-file",
        path.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _forger = Proc::spawn(
        "forged worker",
        WORKER,
        &args,
        cluster.dir().join("forged.log"),
    );
    wait_until(
        "the scheduler to refuse the forged worker",
        DEADLINE,
        || {
            scheduler_log(&cluster)
                .contains("refused a connection")
                .then_some(())
        },
    );
    let log = scheduler_log(&cluster);
    assert!(log.contains("on the worker port"), "{log}");
    // Refused at the handshake: the scheduler still knows only the real worker, which works.
    assert_eq!(client.workers().unwrap().len(), 1);
    let seed = graph! { "x" => 1, "y" => ("add", "x", 2) };
    assert_eq!(client.get(&seed, "y").unwrap(), Value::from(3));
}

/// A TCP proxy on loopback that forwards one connection to `target` and records every byte
/// it carries, both ways.
fn recording_proxy(target: &str) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("tcp://").to_owned();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        let Ok((inbound, _)) = listener.accept() else {
            return;
        };
        let outbound = TcpStream::connect(&target).unwrap();
        let pipe = |mut from: TcpStream, mut to: TcpStream, seen: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        };
        pipe(
            inbound.try_clone().unwrap(),
            outbound.try_clone().unwrap(),
            recorded.clone(),
        );
        pipe(outbound, inbound, recorded);
    });
    (address, seen)
}

/// Gets a secret literal through a recording proxy; returns whether the proxy saw it.
fn secret_seen_on_the_wire(cluster: &TestCluster) -> bool {
    let secret = format!("the-secret-{}", std::process::id());
    let (proxy, seen) = recording_proxy(cluster.address_to_clients());
    let config = ClientConfig {
        security: cluster.client_security(Role::Client),
        ..ClientConfig::default()
    };
    let client = Client::connect_with(&proxy, config).unwrap();
    // The secret travels to the scheduler in the graph and back in the result; the proxy
    // records each byte before forwarding it, so everything is recorded once `get` returns.
    let dsk = graph! { "s" => secret.as_str() };
    assert_eq!(client.get(&dsk, "s").unwrap(), Value::from(secret.as_str()));
    let bytes = seen.lock().unwrap().clone();
    assert!(bytes.len() > secret.len(), "the proxy carried the traffic");
    bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
}

#[test]
fn a_secret_value_never_crosses_the_loopback_in_plaintext() {
    let secure = TestCluster::with_workers(1);
    assert!(
        !secret_seen_on_the_wire(&secure),
        "the secret crossed the wire in plaintext"
    );
    // The same proxy does see it when the cluster is insecure: the check can fail.
    let insecure = TestCluster::options().workers(1).insecure().start();
    assert!(secret_seen_on_the_wire(&insecure));
}

#[test]
fn a_clients_key_cannot_restart_the_cluster_or_release_what_another_client_owns() {
    let cluster = TestCluster::with_workers(1);
    let as_client = || {
        connect(
            &cluster,
            ClientSecurity::Access(access(&cluster, Role::Client)),
        )
    };
    let alice = as_client().unwrap();
    let bob = as_client().unwrap();
    alice.scatter(vec![("alices", 7)]).unwrap();
    match bob.release(vec!["alices"]) {
        Err(ClientError::Request(RequestError::Forbidden { needs, .. })) => {
            assert_eq!(needs, ClientRole::Operator)
        }
        other => panic!("bob released alice's data: {other:?}"),
    }
    assert_eq!(
        bob.gather("alices").unwrap(),
        Value::from(7),
        "reading stays open"
    );
    match bob.restart() {
        Err(ClientError::Request(RequestError::Forbidden { needs, .. })) => {
            assert_eq!(needs, ClientRole::Operator)
        }
        other => panic!("a client restarted the cluster: {other:?}"),
    }
    // The owner may release its own; the operator may release anyone's and restart.
    alice.scatter(vec![("again", 1)]).unwrap();
    alice.release(vec!["alices"]).unwrap();
    let operator = cluster.client();
    operator.release(vec!["again"]).unwrap();
    operator.restart().unwrap();
}
