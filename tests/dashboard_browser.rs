//! The dashboard in a real headless browser (Debian's `chromium`, driven by `chromedriver`'s
//! WebDriver HTTP API over a plain TcpStream) while a graph runs: the page, loaded once, must
//! show the workers and then follow the run by itself (server-sent events): a worker's tasks
//! running, a prefix's progress moving from 0 to done. A screenshot is kept under target/.
//!
//! Without chromium and chromedriver this test FAILS, saying what to install (`.ci/run`
//! installs them): the dashboard's page is only tested here.

mod common;
mod dashboard_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::{wait_until, Proc, TestCluster, DEADLINE};
use dashboard_support::dashboard_address;
use serde_json::{json, Value as Json};
use zask::graph::{task, Graph, Node};
use zask::value::Value;

/// Where a program is: `$var` if set, else the first of `candidates` that exists.
fn program(var: &str, candidates: &[&str], package: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no {} on this machine (looked for {candidates:?}; set {var} to use another): \
                 this test needs a real browser; install Debian's {package} \
                 (apt-get install chromium chromium-driver, as .ci/run does)",
                candidates[0]
            )
        })
}

/// One WebDriver call: `method path` with an optional JSON body; returns the `value` of the
/// answer, panicking with the driver's error otherwise.
fn webdriver(port: u16, method: &str, path: &str, body: Option<&Json>) -> Json {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("chromedriver is listening");
    s.set_read_timeout(Some(DEADLINE * 2)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    // Read the head, then exactly Content-Length bytes (the driver may keep the connection).
    let (head_end, length) = loop {
        let n = s.read(&mut chunk).expect("chromedriver answers");
        assert!(
            n > 0,
            "chromedriver closed before answering {method} {path}"
        );
        raw.extend_from_slice(&chunk[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("chromedriver sends Content-Length");
            break (i + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let n = s.read(&mut chunk).expect("chromedriver's answer");
        assert!(n > 0, "chromedriver's answer cut short");
        raw.extend_from_slice(&chunk[..n]);
    }
    let answer: Json =
        serde_json::from_slice(&raw[head_end..head_end + length]).expect("JSON from chromedriver");
    let value = answer["value"].clone();
    if let Some(error) = value.get("error") {
        panic!("WebDriver {method} {path}: {error}: {}", value["message"]);
    }
    value
}

/// A browser session; quits the browser when dropped (also when the test fails), before
/// chromedriver itself is killed.
struct Browser {
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    // Declared last: dropped (killed) after the session is deleted.
    _driver: Proc,
}

impl Browser {
    fn start(log_dir: &Path) -> Browser {
        let chromium = program("ZASK_CHROMIUM", &["/usr/bin/chromium"], "chromium");
        let driver = program(
            "ZASK_CHROMEDRIVER",
            &["/usr/bin/chromedriver"],
            "chromium-driver",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let driver = Proc::spawn(
            "chromedriver",
            driver.to_str().unwrap(),
            &[format!("--port={port}")],
            log_dir.join("chromedriver.log"),
        );
        wait_until("chromedriver to be ready", DEADLINE, || {
            TcpStream::connect(("127.0.0.1", port)).ok()?;
            let status = webdriver(port, "GET", "/status", None);
            status["ready"].as_bool().filter(|r| *r)
        });
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let session = webdriver(port, "POST", "/session", Some(&capabilities));
        let session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            port,
            session,
            _profile: profile,
            _driver: driver,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Json>) -> Json {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.port, method, &path, body)
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` in the page and returns what it returns.
    fn run(&self, script: &str) -> Json {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self, path: &Path) {
        let png = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        // Best effort: a failing test must not panic again here.
        let _ = std::panic::catch_unwind(|| webdriver(self.port, "DELETE", &path, None));
    }
}

/// What the page shows, read from its DOM: the worker table and the progress table.
#[derive(Clone, Debug, PartialEq)]
struct Page {
    connection: String,
    /// address → (tasks given to it: running and queued, keys held)
    workers: BTreeMap<String, (u64, u64)>,
    /// prefix → (done, total, erred, pending)
    progress: BTreeMap<String, (u64, u64, u64, u64)>,
}

const READ_PAGE: &str = r##"
const n = (td) => Number(td.textContent);
const workers = {};
for (const tr of document.querySelectorAll("#workers tbody tr")) {
  const given = n(tr.querySelector(".n-running")) + n(tr.querySelector(".n-queued"));
  workers[tr.dataset.address] = [given, n(tr.querySelector(".n-keys"))];
}
const progress = {};
for (const tr of document.querySelectorAll("#progress tbody tr")) {
  progress[tr.dataset.prefix] = [".n-done", ".n-total", ".n-erred", ".n-pending"].map((c) => n(tr.querySelector(c)));
}
return { connection: document.getElementById("connection").textContent, workers, progress };
"##;

fn read_page(browser: &Browser) -> Page {
    let v = browser.run(READ_PAGE);
    let pair = |a: &Json| (a[0].as_u64().unwrap(), a[1].as_u64().unwrap());
    Page {
        connection: v["connection"].as_str().unwrap_or_default().to_owned(),
        workers: v["workers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, a)| (k.clone(), pair(a)))
            .collect(),
        progress: v["progress"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, a)| {
                let x = |i: usize| a[i].as_u64().unwrap();
                (k.clone(), (x(0), x(1), x(2), x(3)))
            })
            .collect(),
    }
}

/// Polls the page (never reloading it) until `ready` holds for what it shows.
fn wait_for_page(browser: &Browser, what: &str, ready: impl Fn(&Page) -> bool) -> Page {
    let mut last = None;
    let found = wait_until_or_none(DEADLINE, || {
        let page = read_page(browser);
        let ok = ready(&page);
        last = Some(page.clone());
        ok.then_some(page)
    });
    found.unwrap_or_else(|| panic!("the page never showed {what}; last seen: {last:#?}"))
}

fn wait_until_or_none<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `WAITS` tasks `wait-i` that block until `release` exists, `INCS` short tasks `inc-i`, and
/// `total`, their sum.
fn graph(release: &Path) -> Graph {
    let mut g = Graph::new();
    let mut parts = Vec::new();
    for i in 0..WAITS {
        let key = format!("wait-{i}");
        g.insert(
            key.clone(),
            task("wait_for_file", [Node::from(release.display().to_string())]),
        );
        parts.push(task(
            "length",
            [Node::Value(Value::List(vec![Value::from(key)]))],
        ));
    }
    for i in 0..INCS {
        let key = format!("inc-{i}");
        // A little work each (50 ms), so the task stream has something to draw.
        g.insert(
            key.clone(),
            task("slow_inc", [Node::from(i as i64), Node::from(0.05)]),
        );
        parts.push(Node::from(key.as_str()));
    }
    g.insert("total", task("sum", [Node::List(parts)]));
    g
}

const WAITS: u64 = 4;
const INCS: u64 = 8;

#[test]
fn the_page_follows_a_running_graph_live() {
    let cluster = TestCluster::options()
        .workers(2)
        // More threads than blocking tasks, wherever they land: the quick ones always run.
        .nthreads(WAITS as u32 + 1)
        .with_test_functions()
        .scheduler_args(&["--dashboard-port", "0"])
        .start();
    let address = dashboard_address(&cluster);
    let browser = Browser::start(cluster.dir());
    browser.open(&format!("http://{address}/"));

    // Loaded once; from here on only its own script changes it.
    let before = wait_for_page(&browser, "both workers, idle", |p| {
        p.connection == "live" && p.workers.len() == 2 && p.workers.values().all(|w| w.0 == 0)
    });
    let mut expected: Vec<&String> = cluster.worker_addresses().iter().collect();
    expected.sort();
    assert_eq!(before.workers.keys().collect::<Vec<_>>(), expected);
    assert!(before.progress.is_empty(), "nothing ran yet: {before:?}");

    let release = cluster.dir().join("release");
    let g = graph(&release);
    let client = cluster.client();
    let running = std::thread::spawn(move || client.get(&g, "total"));

    // The quick tasks are done, the blocked ones are running on the workers.
    let during = wait_for_page(&browser, "the incs done and the waits running", |p| {
        p.progress.get("inc") == Some(&(INCS, INCS, 0, 0))
            && p.progress.get("wait") == Some(&(0, WAITS, 0, WAITS))
            && p.workers.values().map(|w| w.0).sum::<u64>() == WAITS
    });
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot);
    println!("dashboard screenshot: {}", shot.display());

    std::fs::write(&release, b"go").unwrap();
    let after = wait_for_page(&browser, "every task done and the workers idle", |p| {
        p.progress.get("wait") == Some(&(WAITS, WAITS, 0, 0))
            && p.progress.get("total").is_some_and(|t| t.0 == 1)
            && p.workers.values().all(|w| w.0 == 0)
    });
    let result = running.join().expect("the client thread");
    assert_eq!(
        result,
        Ok(Value::from((WAITS + (1..=INCS).sum::<u64>()) as i64))
    );
    // The same worker rows, their figures changed, and the numbers moved: all by the page's
    // own updates.
    assert_eq!(after.workers.keys().collect::<Vec<_>>(), expected);
    assert_ne!(before.workers, during.workers);
    assert_ne!(during.progress, after.progress);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-after.png");
    browser.screenshot(&shot);
    println!("dashboard screenshot after the run: {}", shot.display());
}
