//! What the dashboard tests share: a plain HTTP/1.1 client over a TcpStream (one request per
//! connection, as the dashboard answers), and finding the dashboard of a `TestCluster` from
//! the scheduler's log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{wait_until, TestCluster, DEADLINE};

/// An answer: status, header lines, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Sends `request` (raw bytes) to `address` ("127.0.0.1:PORT") and reads the whole answer.
pub fn exchange(address: &str, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(address).unwrap_or_else(|e| panic!("{address}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("the dashboard answers UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r[..3].parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    Answer {
        status,
        headers: lines.map(str::to_owned).collect(),
        body: body.to_owned(),
    }
}

/// GET `path` (with extra header lines).
pub fn get(address: &str, path: &str, headers: &[&str]) -> Answer {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    exchange(address, req.as_bytes())
}

/// The dashboard's `host:port`, from the line the scheduler logs when it starts.
pub fn dashboard_address(cluster: &TestCluster) -> String {
    let log = cluster.dir().join("scheduler.log");
    wait_until("the scheduler to log its dashboard", DEADLINE, || {
        let text = std::fs::read_to_string(&log).ok()?;
        let rest = text.split("dashboard at http://").nth(1)?;
        Some(rest.split('/').next()?.to_owned())
    })
}

/// The metrics page as `name{labels}` → value, checking every sample has a TYPE line first
/// (which is returned too, by family name).
pub fn parse_metrics(
    text: &str,
) -> (
    std::collections::BTreeMap<String, f64>,
    std::collections::BTreeMap<String, String>,
) {
    let mut samples = std::collections::BTreeMap::new();
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with("# HELP ") || line.is_empty() {
        } else {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let family = series.split('{').next().unwrap();
            assert!(
                types.contains_key(family),
                "{family} has no TYPE before {line:?}"
            );
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?}"));
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "{series} twice"
            );
        }
    }
    (samples, types)
}

/// A short pause between polls of something that changes within a publishing interval.
pub const POLL: Duration = Duration::from_millis(100);
