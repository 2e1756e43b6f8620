//! Garbage is dropped, on real processes: raw TCP connections that never complete a ZeroMQ
//! handshake (random bytes, or nothing at all) are closed by the other side within 10 s on
//! every port — the scheduler's worker and client ports and a worker's peer port — while a
//! legitimate client's `get` keeps working; a client that floods the scheduler past its
//! message rate limit gets its requests failed as rate-limited while another client is served.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_until, TestCluster, DEADLINE};
use zask::protocol::codec::{decode, encode};
use zask::protocol::{FromClient, RequestError, RequestId, ToClient, PROTOCOL_VERSION};
use zask::security::Role;
use zask::{graph, Client, ClientError, GetOptions, Graph, KeySpec, Value};

/// The bound the issue sets: a connection that does not complete a handshake is closed by
/// then. The scheduler and workers use 5 s (`zask::net::DEFAULT_HANDSHAKE_MS`).
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// `client.get` with a deadline, so a hang fails the test instead of blocking it.
fn get(client: &Client, dsk: &Graph, keys: impl Into<KeySpec>) -> Result<Value, ClientError> {
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    client.get_with(dsk, keys, options)
}

/// `n` bytes from a xorshift generator: random enough to be garbage, the same on every run.
fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// What a garbage connection sends.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// 1 MiB of random bytes.
    Random,
    /// Nothing at all.
    Silent,
    /// Well-framed ZMTP 1.0 messages of garbage, without end. ZMTP 1.0 has no greeting, so
    /// libzmq takes any first byte other than 0xFF for one, and random bytes soon break its
    /// framing (a length past the size limit closes them at once); these never do, and only
    /// the handshake timeout closes them.
    Zmtp10,
}

/// Opens a raw TCP connection to `address` (`tcp://HOST:PORT`), sends `garbage` and reads
/// (discarding whatever the other side sends, such as its ZeroMQ greeting) until the other
/// side closes it. Returns how long that took, or an error if it was still open after
/// `CLOSED_WITHIN`.
fn closed_by_peer(address: &str, garbage: Garbage, seed: u64) -> Result<Duration, String> {
    let host_port = address
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("not a tcp address: {address}"))?;
    let mut stream =
        TcpStream::connect(host_port).map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let start = Instant::now();
    // A writer of its own: the other side may stop reading (and then close), which would
    // block a write made here. Its errors (a reset once closed) are expected.
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    match garbage {
        Garbage::Random => {
            let bytes = random_bytes(1024 * 1024, seed);
            std::thread::spawn(move || {
                let _ = writer.write_all(&bytes);
            });
        }
        Garbage::Silent => {}
        Garbage::Zmtp10 => {
            std::thread::spawn(move || {
                // An empty identity (length 1: the flags byte only), then 11-byte messages
                // (flags + 10 bytes of body) until the other side closes, or for at most
                // twice the bound.
                let mut messages = Vec::new();
                for _ in 0..100 {
                    messages.extend_from_slice(&[11, 0]);
                    messages.extend_from_slice(&random_bytes(10, seed));
                }
                if writer.write_all(&[1, 0]).is_err() {
                    return;
                }
                let until = Instant::now() + 2 * CLOSED_WITHIN;
                while Instant::now() < until && writer.write_all(&messages).is_ok() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // ECONNRESET (closed with our bytes unread) or EPIPE: closed as well.
            Err(_) => return Ok(start.elapsed()),
        }
        if start.elapsed() > CLOSED_WITHIN {
            return Err(format!(
                "a {garbage:?} connection to {address} is still open after {CLOSED_WITHIN:?}"
            ));
        }
    }
}

#[test]
fn raw_tcp_garbage_is_closed_on_every_port_while_clients_are_served() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let mut ports = vec![
        (
            "scheduler worker port",
            cluster.address_to_workers().to_owned(),
        ),
        (
            "scheduler client port",
            cluster.address_to_clients().to_owned(),
        ),
    ];
    for (i, address) in cluster.worker_addresses().iter().enumerate() {
        ports.push((
            if i == 0 {
                "worker 0 peer port"
            } else {
                "worker 1 peer port"
            },
            address.clone(),
        ));
    }
    let (tx, rx) = mpsc::channel();
    let mut open = 0;
    for (i, (port, address)) in ports.iter().enumerate() {
        for garbage in [Garbage::Random, Garbage::Silent, Garbage::Zmtp10] {
            let (tx, port, address) = (tx.clone(), *port, address.clone());
            std::thread::spawn(move || {
                let outcome = closed_by_peer(&address, garbage, 0x9E37_79B9 + i as u64);
                let _ = tx.send((port, garbage, outcome));
            });
            open += 1;
        }
    }
    drop(tx);
    // While the garbage connections are open (or being closed), gets keep working; the loop
    // ends when every connection has been accounted for.
    let dsk = graph! { "x" => 1, "y" => ("add", "x", 2) };
    let mut gets = 0;
    let mut closed = Vec::new();
    let deadline = Instant::now() + CLOSED_WITHIN + DEADLINE;
    while closed.len() < open {
        assert_eq!(
            get(&client, &dsk, "y"),
            Ok(Value::from(3)),
            "get number {gets}"
        );
        gets += 1;
        while let Ok(outcome) = rx.try_recv() {
            closed.push(outcome);
        }
        assert!(
            Instant::now() < deadline,
            "the garbage connections never reported"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let failures: Vec<String> = closed
        .iter()
        .filter_map(|(port, garbage, outcome)| {
            outcome
                .as_ref()
                .err()
                .map(|e| format!("{port} ({garbage:?}): {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(gets > 0);
    // And after them, a fresh client is served as well.
    let other = cluster.client();
    assert_eq!(get(&other, &dsk, "y"), Ok(Value::from(3)));
}

/// The client limit the flood test sets: low enough that a burst of requests passes it, high
/// enough for the test's own polling client (`wait_for_workers` asks at most 20 times a
/// second).
const CLIENT_RATE: u32 = 20;

#[test]
fn a_client_flooding_past_its_rate_limit_is_refused_while_another_is_served() {
    let cluster = TestCluster::options()
        .scheduler_args(&["--client-max-messages-per-second", &CLIENT_RATE.to_string()])
        .start();
    let client = cluster.client();
    let ctx = zmq::Context::new();
    let flooder = ctx.socket(zmq::DEALER).unwrap();
    flooder.set_linger(0).unwrap();
    // An authenticated client: the limit is for those who get in.
    cluster.authenticate(&flooder, Role::Client);
    flooder.connect(cluster.address_to_clients()).unwrap();
    flooder
        .send(
            encode(&FromClient::Hello {
                protocol_version: PROTOCOL_VERSION,
            }),
            0,
        )
        .unwrap();
    // 500 requests at once: far past the burst (twice the rate).
    let flood = 500u64;
    for i in 0..flood {
        flooder
            .send(
                encode(&FromClient::Status {
                    request: RequestId(i + 1),
                }),
                0,
            )
            .unwrap();
    }
    // The other client is served meanwhile.
    let dsk = graph! { "x" => 1, "y" => ("add", "x", 2) };
    assert_eq!(get(&client, &dsk, "y"), Ok(Value::from(3)));

    // Every request of the flood is answered exactly once: with the status, or failed as
    // rate-limited (a retryable error naming the limit).
    let mut answered = std::collections::BTreeSet::new();
    let (mut served, mut limited) = (0, 0);
    let deadline = Instant::now() + DEADLINE;
    while (answered.len() as u64) < flood {
        assert!(
            Instant::now() < deadline,
            "only {} of {flood} requests answered",
            answered.len()
        );
        if flooder.poll(zmq::POLLIN, 200).unwrap() == 0 {
            continue;
        }
        let frames = flooder.recv_multipart(0).unwrap();
        match decode::<ToClient>(&frames[0]).expect("a readable answer") {
            ToClient::Welcome { .. } => {}
            ToClient::Status { request, .. } => {
                assert!(answered.insert(request), "{request:?} answered twice");
                served += 1;
            }
            ToClient::Failed { request, error } => {
                assert_eq!(
                    error,
                    RequestError::RateLimited {
                        max_messages_per_second: CLIENT_RATE
                    }
                );
                assert!(ClientError::Request(error).retry_may_help());
                assert!(answered.insert(request), "{request:?} answered twice");
                limited += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        limited > 0,
        "no request of the flood was limited ({served} served)"
    );
    assert!(served > 0, "the burst should have been served");

    // The warning names the limit, once per connection per second at most: far fewer lines
    // than dropped requests.
    let log = std::fs::read_to_string(cluster.dir().join("scheduler.log")).unwrap();
    let warnings = log
        .lines()
        .filter(|l| l.contains("messages per second"))
        .count();
    assert!(warnings > 0, "no warning about the flood:\n{log}");
    assert!(
        warnings < limited,
        "{warnings} warnings for {limited} dropped requests"
    );

    // Once it slows down, the flooder is served again.
    let mut next = flood;
    wait_until("the flooding client to be served again", DEADLINE, || {
        next += 1;
        flooder
            .send(
                encode(&FromClient::Status {
                    request: RequestId(next),
                }),
                0,
            )
            .unwrap();
        while flooder.poll(zmq::POLLIN, 100).unwrap() > 0 {
            let frames = flooder.recv_multipart(0).unwrap();
            if let ToClient::Status { .. } = decode::<ToClient>(&frames[0]).unwrap() {
                return Some(());
            }
        }
        None
    });
    // And the other client still is.
    assert_eq!(get(&client, &dsk, "y"), Ok(Value::from(3)));
}
