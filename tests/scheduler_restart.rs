//! The scheduler dies (SIGKILL) and comes back on the same ports: with a state dir, a `get` in
//! flight completes; without one it fails clearly; a key name reused with a new definition
//! never returns the value of the old one; a 2015 client's collection is still there after it.

mod common;

use std::path::Path;
use std::sync::mpsc;

use common::{wait_until, Proc, DEADLINE, SCHEDULER, WORKER};
use zask::client::ClientSecurity;
use zask::protocol::RequestError;
use zask::{graph, Client, ClientConfig, ClientError, GetOptions, Value};

struct Cluster {
    dir: tempfile::TempDir,
    scheduler: Proc,
    workers: Vec<Proc>,
    worker_port: String,
    client_port: String,
    state_dir: bool,
}

fn insecure_client(address: &str) -> Result<Client, zask::ClientError> {
    let config = ClientConfig {
        security: ClientSecurity::Insecure,
        ..ClientConfig::default()
    };
    Client::connect_with(address, config)
}

fn port(address: &str) -> String {
    address.rsplit(':').next().unwrap().to_owned()
}

fn scheduler_args(worker_port: &str, client_port: &str, state: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--worker-port",
        worker_port,
        "--client-port",
        client_port,
        "--heartbeat-timeout-ms",
        "2000",
        // Restarts are what this file tests; tests/security.rs restarts a secure scheduler.
        "--insecure",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(dir) = state {
        args.push("--state-dir".into());
        args.push(dir.display().to_string());
    }
    args
}

impl Cluster {
    fn start(state_dir: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir.then(|| dir.path().join("state"));
        let mut scheduler = Proc::spawn(
            "scheduler",
            SCHEDULER,
            &scheduler_args("0", "0", state.as_deref()),
            dir.path().join("scheduler-1.log"),
        );
        let to_workers = scheduler.read_line_after("address_to_workers");
        let to_clients = scheduler.read_line_after("address_to_clients");
        let workers = (0..2)
            .map(|i| {
                let args: Vec<String> =
                    [&to_workers, "--nthreads", "2", "--no-nanny", "--insecure"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                Proc::spawn(
                    &format!("worker-{i}"),
                    WORKER,
                    &args,
                    dir.path().join(format!("worker-{i}.log")),
                )
            })
            .collect();
        let cluster = Cluster {
            dir,
            scheduler,
            workers,
            worker_port: port(&to_workers),
            client_port: port(&to_clients),
            state_dir,
        };
        cluster.wait_for_workers(2);
        cluster
    }

    fn client_address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.client_port)
    }

    /// A client that tolerates a scheduler outage of several seconds.
    fn client(&self) -> Client {
        let config = ClientConfig {
            scheduler_timeout_ms: 15_000,
            security: ClientSecurity::Insecure,
            ..ClientConfig::default()
        };
        Client::connect_with(&self.client_address(), config).unwrap()
    }

    fn wait_for_workers(&self, n: usize) {
        let client = insecure_client(&self.client_address()).unwrap();
        wait_until("workers to register", DEADLINE, || {
            (client.workers().ok()?.len() >= n).then_some(())
        });
    }

    /// SIGKILL the scheduler, then start a new one on the same ports (same state dir).
    fn crash_and_restart_scheduler(&mut self, generation: u32) {
        self.scheduler.kill();
        let state = self.state_dir.then(|| self.dir.path().join("state"));
        let mut scheduler = Proc::spawn(
            "scheduler",
            SCHEDULER,
            &scheduler_args(&self.worker_port, &self.client_port, state.as_deref()),
            self.dir.path().join(format!("scheduler-{generation}.log")),
        );
        scheduler.read_line_after("address_to_clients");
        self.scheduler = scheduler;
    }
}

/// Runs `f` on a thread and returns its result, failing the test if it takes longer than the
/// deadline (a hang is a failure, not a stuck test run).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .expect("the call returned within the deadline")
}

#[test]
fn a_get_in_flight_completes_after_the_scheduler_restarts_with_its_state_dir() {
    let mut cluster = Cluster::start(true);
    let client = cluster.client();
    let dsk = graph! {
        "a" => ("slow_inc", 1, 1.0),
        "b" => ("slow_inc", "a", 0.5),
        "c" => ("add", "a", "b"),
    };
    let get = std::thread::spawn(move || client.get(&dsk, "c"));
    // Kill the scheduler while the graph runs.
    let watcher = insecure_client(&cluster.client_address()).unwrap();
    wait_until("the graph to start", DEADLINE, || {
        (watcher.status().ok()?.processing > 0).then_some(())
    });
    drop(watcher);
    cluster.crash_and_restart_scheduler(2);
    let result = bounded(move || get.join().unwrap());
    assert_eq!(result.unwrap(), Value::from(5), "a = 2, b = 3, c = a + b");
    drop(cluster.workers);
}

#[test]
fn without_a_state_dir_a_get_in_flight_fails_clearly() {
    let mut cluster = Cluster::start(false);
    let client = cluster.client();
    let dsk = graph! { "a" => ("slow_inc", 1, 1.0), "b" => ("inc", "a") };
    let get = std::thread::spawn(move || client.get(&dsk, "b"));
    let watcher = insecure_client(&cluster.client_address()).unwrap();
    wait_until("the graph to start", DEADLINE, || {
        (watcher.status().ok()?.processing > 0).then_some(())
    });
    drop(watcher);
    cluster.crash_and_restart_scheduler(2);
    let result = bounded(move || get.join().unwrap());
    assert_eq!(
        result.unwrap_err(),
        ClientError::Request(RequestError::SchedulerRestarted)
    );
    // The restarted scheduler serves new work.
    cluster.wait_for_workers(2);
    let client = cluster.client();
    assert_eq!(
        client.get(&graph! { "x" => ("inc", 1) }, "x").unwrap(),
        Value::from(2)
    );
}

#[test]
fn a_key_reused_with_a_new_definition_after_a_restart_gives_the_new_result() {
    let mut cluster = Cluster::start(true);
    let client = cluster.client();
    let keep = GetOptions {
        keep_results: true,
        ..GetOptions::default()
    };
    let old = graph! { "x" => ("inc", 1) };
    assert_eq!(client.get_with(&old, "x", keep).unwrap(), Value::from(2));
    assert!(
        !client.who_has("x").unwrap()[&zask::Key::from("x")].is_empty(),
        "x stays on a worker"
    );
    drop(client);
    cluster.crash_and_restart_scheduler(2);
    cluster.wait_for_workers(2);
    let client = cluster.client();
    let new = graph! { "x" => ("inc", 10) };
    assert_eq!(client.get(&new, "x").unwrap(), Value::from(11));
    // And the old definition, asked again, is computed again rather than mixed up.
    assert_eq!(client.get(&old, "x").unwrap(), Value::from(2));
}

/// Sends the 2015 client's frames for `fixture` (compat/tests/fixtures/legacy/) from a fresh
/// DEALER and returns the reply's `[header, payload]`, bounded by the deadline.
fn legacy_request(address: &str, fixture: &str) -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
    let read = |part: &str| std::fs::read(format!("{dir}{fixture}.{part}.pkl")).unwrap();
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(DEADLINE.as_millis() as i32).unwrap();
    socket.connect(address).unwrap();
    socket
        .send_multipart([read("header"), read("payload")], 0)
        .unwrap();
    socket
        .recv_multipart(0)
        .unwrap_or_else(|e| panic!("no reply to legacy {fixture} within {DEADLINE:?}: {e}"))
}

fn status_of(header: &[u8]) -> String {
    let h = zask_compat::pickle::decode(header).unwrap();
    let status = h.dict_get(h.root, "status").expect("a status");
    h.str_of(status).expect("a str status").to_owned()
}

#[test]
fn a_legacy_collection_survives_a_scheduler_restart_with_its_state_dir() {
    let mut cluster = Cluster::start(true);
    let address = cluster.client_address();
    let set = legacy_request(&address, "set_collection");
    assert_eq!(status_of(&set[0]), "OK");
    cluster.crash_and_restart_scheduler(2);
    let got = legacy_request(&address, "get_collection");
    assert_eq!(status_of(&got[0]), "OK");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
    let stored = std::fs::read(format!("{dir}set_collection.payload.pkl")).unwrap();
    assert_eq!(got[1], stored, "the payload comes back verbatim");
    let names = cluster.client().list_collections().unwrap();
    assert_eq!(names, vec!["mybag".to_owned()]);
}
