//! The dashboard's pure parts: request parsing (hostile input included), routes and the
//! token, the Prometheus text; and one real server on loopback answering bad requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use super::http::{
    host_allowed, parse_request, route, Guard, Method, ParseError, Reply, REQUEST_HEAD_BYTES_MAX,
};
use super::*;
use crate::scheduler::core::{Counters, PrefixProgress, TaskCounts, WorkerFigures};

fn snapshot() -> Snapshot {
    Snapshot {
        address_to_workers: "tcp://127.0.0.1:1".into(),
        address_to_clients: "tcp://127.0.0.1:2".into(),
        messages_per_second: 12.5,
        core: CoreMetrics {
            now_ms: 5_000,
            counters: Counters {
                messages_total: 40,
                tasks_finished_total: 7,
                ..Counters::default()
            },
            journal_writes_total: 3,
            tasks: TaskCounts {
                total: 9,
                memory: 2,
                processing: 1,
                ..TaskCounts::default()
            },
            clients: 1,
            workers: vec![WorkerFigures {
                address: "tcp://127.0.0.1:9".into(),
                name: "w\"1".into(),
                nthreads: 4,
                memory_limit_bytes: 0,
                nbytes: 100,
                keys: 2,
                processing: 1,
                retiring: false,
                runs_python: false,
            }],
            prefixes: vec![PrefixProgress {
                prefix: "in\\c\n".into(),
                done: 7,
                erred: 1,
                pending: 1,
            }],
            task_stream: vec![],
        },
        events: vec![],
        logs: vec!["a line".into()],
    }
}

fn get(path: &str) -> super::http::Request {
    parse_request(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8787\r\n\r\n").as_bytes())
        .expect("well formed")
        .expect("complete")
}

fn full(reply: Reply) -> super::http::Response {
    match reply {
        Reply::Full(r) => r,
        Reply::Events { .. } => panic!("an event stream"),
    }
}

#[test]
fn requests_parse_and_bad_ones_are_typed_errors() {
    let r = get("/metrics?token=abc&x=1");
    assert_eq!((r.method, r.path.as_str()), (Method::Get, "/metrics"));
    assert_eq!(r.query_token.as_deref(), Some("abc"));
    assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost"), Ok(None));
    assert_eq!(
        parse_request(b"POST / HTTP/1.1\r\n\r\n"),
        Err(ParseError::Method)
    );
    assert_eq!(
        parse_request(b"\x00\x01garbage\r\n\r\n"),
        Err(ParseError::Malformed)
    );
    assert_eq!(
        parse_request(b"GET http://elsewhere/ HTTP/1.1\r\n\r\n"),
        Err(ParseError::Malformed)
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nX: {}",
        "a".repeat(REQUEST_HEAD_BYTES_MAX)
    );
    assert_eq!(parse_request(huge.as_bytes()), Err(ParseError::TooLarge));
    let many: String = (0..100).map(|i| format!("H{i}: v\r\n")).collect();
    assert_eq!(
        parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        Err(ParseError::TooLarge)
    );
    let with_cookie =
        parse_request(b"GET / HTTP/1.1\r\nCookie: a=b; zask_dashboard_token=t0k\r\n\r\n")
            .unwrap()
            .unwrap();
    assert_eq!(with_cookie.cookie_token.as_deref(), Some("t0k"));
}

#[test]
fn every_route_answers_and_unknown_paths_are_404() {
    let s = snapshot();
    for (path, status, kind) in [
        ("/", 200, "text/html; charset=utf-8"),
        ("/app.js", 200, "text/javascript; charset=utf-8"),
        ("/style.css", 200, "text/css; charset=utf-8"),
        ("/health", 200, "text/plain; charset=utf-8"),
        ("/metrics", 200, "text/plain; version=0.0.4; charset=utf-8"),
        ("/api/status", 200, "application/json"),
        ("/nope", 404, "text/plain; charset=utf-8"),
        ("/../etc/passwd", 404, "text/plain; charset=utf-8"),
    ] {
        let r = full(route(&get(path), Guard::LocalNames, &s));
        assert_eq!((r.status, r.content_type), (status, kind), "{path}");
    }
    assert!(matches!(
        route(&get("/events"), Guard::LocalNames, &s),
        Reply::Events { .. }
    ));
    let status: serde_json::Value =
        serde_json::from_slice(&full(route(&get("/api/status"), Guard::LocalNames, &s)).body)
            .unwrap();
    assert_eq!(status["tasks"]["total"], 9);
    assert_eq!(status["counters"]["tasks_finished_total"], 7);
    assert_eq!(status["workers"][0]["nthreads"], 4);
    assert_eq!(status["messages_per_second"], 12.5);
    assert_eq!(status["events"], serde_json::json!([]));
}

#[test]
fn with_a_token_only_health_is_open_and_the_query_sets_a_cookie() {
    let s = snapshot();
    let token = Guard::Token("secret");
    assert_eq!(full(route(&get("/health"), token, &s)).status, 200);
    for path in ["/", "/metrics", "/api/status", "/events", "/?token=wrong"] {
        assert_eq!(full(route(&get(path), token, &s)).status, 401, "{path}");
    }
    let r = full(route(&get("/?token=secret"), token, &s));
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .iter()
        .any(|h| h.starts_with("Set-Cookie: zask_dashboard_token=secret;")));
    let with_cookie =
        parse_request(b"GET /metrics HTTP/1.1\r\nCookie: zask_dashboard_token=secret\r\n\r\n")
            .unwrap()
            .unwrap();
    assert_eq!(full(route(&with_cookie, token, &s)).status, 200);
    let events =
        parse_request(b"GET /events HTTP/1.1\r\nCookie: zask_dashboard_token=secret\r\n\r\n")
            .unwrap()
            .unwrap();
    assert!(matches!(route(&events, token, &s), Reply::Events { .. }));
}

#[test]
fn metrics_text_has_help_type_and_escaped_labels() {
    let text = render_metrics(&snapshot());
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} twice"
            );
            assert!(kind == "gauge" || kind == "counter");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(typed.contains_key(name), "{name} sampled before its TYPE");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    assert!(text.contains("zask_tasks{state=\"memory\"} 2\n"));
    assert!(text.contains("zask_tasks_finished_total 7\n"));
    assert!(text.contains("zask_journal_writes_total 3\n"));
    assert!(text.contains("zask_workers 1\n"));
    assert!(text.contains("zask_worker_threads 4\n"));
    assert!(text.contains("zask_prefix_tasks_done_total{prefix=\"in\\\\c\\n\"} 7\n"));
}

#[test]
fn loopback_names_are_recognised() {
    for h in ["127.0.0.1", "::1", "[::1]", "localhost", "127.1.2.3"] {
        assert!(is_loopback(h), "{h}");
    }
    for h in ["0.0.0.0", "::", "10.0.0.1", "example.org"] {
        assert!(!is_loopback(h), "{h}");
    }
}

#[test]
fn a_token_is_made_once_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let t = load_or_create_token(dir.path()).unwrap();
    assert_eq!(t.len(), 32);
    assert_eq!(load_or_create_token(dir.path()).unwrap(), t);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(dir.path().join(TOKEN_FILE), "short").unwrap();
    assert!(load_or_create_token(dir.path()).is_err());
}

fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(address).unwrap();
    s.write_all(request).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_real_server_answers_garbage_with_400_and_keeps_serving() {
    let cell = Arc::new(SnapshotCell::default());
    cell.publish(snapshot());
    let config = DashboardConfig {
        port: 0,
        ..DashboardConfig::default()
    };
    let d = Dashboard::start(config, cell).unwrap();
    let a = d.address();
    assert!(exchange(a, b"\xff\xfe garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(exchange(a, b"DELETE / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(
        exchange(a, b"GET / HTTP/1.1\r\nHost").is_empty(),
        "no answer to half a head"
    );
    let health = exchange(a, b"GET /health HTTP/1.1\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"));
    let head = exchange(a, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
    drop(d);
    assert!(
        TcpStream::connect(a).is_err(),
        "stopped: the port is closed"
    );
}

#[test]
fn snapshots_are_made_only_while_someone_reads_them() {
    use crate::scheduler::core::{CoreConfig, SchedulerCore};
    use std::time::Duration;
    let core = SchedulerCore::new(CoreConfig::default());
    let cell = Arc::new(SnapshotCell::default());
    let mut publisher = Publisher::new(cell.clone(), 250, "w".into(), "c".into());
    publisher.maybe_publish(0, &core);
    let first = cell.latest();
    assert_eq!(
        first.address_to_clients, "c",
        "the first one is always made"
    );
    assert_eq!(publisher.next_due_ms(), 250);
    publisher.maybe_publish(100, &core);
    publisher.maybe_publish(1_000, &core);
    assert_eq!(
        publisher.next_due_ms(),
        1_250,
        "unwatched, it looks again an interval later (the core thread sleeps till then)"
    );
    assert!(
        Arc::ptr_eq(&first, &cell.latest()),
        "not due, then nobody asked"
    );
    // A reader with a fresh enough snapshot takes it, and asks for the next.
    let read = cell.fresh(Duration::from_secs(60), Duration::ZERO);
    assert!(Arc::ptr_eq(&first, &read));
    assert!(cell.wanted());
    publisher.maybe_publish(1_250, &core);
    assert!(!Arc::ptr_eq(&first, &cell.latest()));
    assert!(!cell.wanted());
    // A reader of a stale one waits for the next (here: from another thread).
    let stale = cell.latest();
    let reader = {
        let cell = cell.clone();
        std::thread::spawn(move || cell.fresh(Duration::ZERO, Duration::from_secs(60)))
    };
    while !cell.wanted() {
        std::thread::yield_now();
    }
    publisher.maybe_publish(1_500, &core);
    let got = reader.join().unwrap();
    assert!(!Arc::ptr_eq(&stale, &got), "the reader got the new one");
}

#[test]
fn an_open_dashboard_refuses_hosts_named_by_another_domain() {
    for h in [
        "127.0.0.1:8787",
        "127.0.0.1",
        "[::1]:8787",
        "localhost:8787",
        "LOCALHOST",
        "a.localhost:1",
        "10.1.2.3:80",
    ] {
        assert!(host_allowed(Some(h)), "{h}");
    }
    assert!(host_allowed(None));
    for h in [
        "evil.example:8787",
        "evil.example",
        "127.0.0.1.evil.example",
        "localhost.evil",
    ] {
        assert!(!host_allowed(Some(h)), "{h}");
    }
    let s = snapshot();
    let rebound = parse_request(b"GET /api/status HTTP/1.1\r\nHost: evil.example:8787\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(full(route(&rebound, Guard::LocalNames, &s)).status, 403);
    // With a token the token decides (a dashboard off loopback is reached by any name).
    let named = parse_request(b"GET /metrics?token=t HTTP/1.1\r\nHost: sched.example:8787\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(full(route(&named, Guard::Token("t"), &s)).status, 200);
    let health = parse_request(b"GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(full(route(&health, Guard::LocalNames, &s)).status, 200);
    // An insecure cluster's dashboard on a reachable address is open to any name.
    assert_eq!(full(route(&rebound, Guard::Open, &s)).status, 200);
    let config = |host: &str, token: Option<&str>| DashboardConfig {
        host: host.into(),
        token: token.map(str::to_owned),
        ..DashboardConfig::default()
    };
    assert_eq!(Guard::of(&config("127.0.0.1", None)), Guard::LocalNames);
    assert_eq!(Guard::of(&config("0.0.0.0", None)), Guard::Open);
    assert_eq!(Guard::of(&config("0.0.0.0", Some("t"))), Guard::Token("t"));
}

#[test]
fn connections_and_event_streams_are_bounded() {
    let cell = Arc::new(SnapshotCell::default());
    cell.publish(snapshot());
    let config = DashboardConfig {
        port: 0,
        connections_max: 2,
        subscribers_max: 1,
        events_interval_ms: 10,
        ..DashboardConfig::default()
    };
    let d = Dashboard::start(config, cell).unwrap();
    let a = d.address();
    // A stream holds a connection and the only subscriber slot.
    let mut stream = TcpStream::connect(a).unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\ndata: {") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended");
        seen.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/event-stream\r\n"),
        "{head}"
    );
    // A second stream finds no subscriber slot (it held the second connection meanwhile).
    let second = exchange(a, b"GET /events HTTP/1.1\r\n\r\n");
    assert!(second.starts_with("HTTP/1.1 503 "), "{second}");
    // An idle connection takes the second slot: the next connection is turned away.
    let _idle = TcpStream::connect(a).unwrap();
    let third = exchange(a, b"GET /health HTTP/1.1\r\n\r\n");
    assert!(third.starts_with("HTTP/1.1 503 "), "{third}");
    drop(stream);
    drop(d);
}
