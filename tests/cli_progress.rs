//! Progress: `zask get --progress` on a graph of about 100,000 tasks, its stderr a
//! pseudo-terminal (openpty), draws a bar that reaches 100 %; with stderr not a terminal it
//! draws nothing; `Client::get_with_progress` reports counts that only grow and end at the
//! total.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, TestCluster, ZASK};
use zask::{GetOptions, Progress, Value};

/// Leaves, partial sums of 100 leaves each, and their total: `leaves + leaves / 100 + 1`
/// tasks, as a JSON graph, and the total's value.
fn reduction_graph(leaves: usize) -> (String, i64) {
    let mut entries = Vec::with_capacity(leaves + leaves / 100 + 1);
    for i in 0..leaves {
        entries.push(format!(r#"["t-{i}", {{"task": ["inc", {i}]}}]"#));
    }
    let groups = leaves / 100;
    for g in 0..groups {
        let parts: Vec<String> = (g * 100..(g + 1) * 100)
            .map(|i| format!("\"t-{i}\""))
            .collect();
        entries.push(format!(
            r#"["s-{g}", {{"task": ["sum", [{}]]}}]"#,
            parts.join(", ")
        ));
    }
    let sums: Vec<String> = (0..groups).map(|g| format!("\"s-{g}\"")).collect();
    entries.push(format!(
        r#"["total", {{"task": ["sum", [{}]]}}]"#,
        sums.join(", ")
    ));
    let n = leaves as i64;
    // sum of (i + 1) for i in 0..n
    (format!("[{}]", entries.join(",\n")), n * (n + 1) / 2)
}

/// A pseudo-terminal of 24 rows and 120 columns: (the side we read, the side the child
/// writes to as its terminal).
fn open_pty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the integers given; the name buffer may be
    // null and the termios null (defaults); the window size is read only.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened for us and are owned by nothing else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn zask_get_progress_draws_a_bar_reaching_100_percent_on_a_terminal() {
    let cluster = TestCluster::options().workers(2).nthreads(2).start();
    let leaves = 100_000;
    let (graph, total) = reduction_graph(leaves);
    let tasks = leaves + leaves / 100 + 1;
    let file = cluster.dir().join("big.json");
    std::fs::write(&file, graph).expect("write the graph");

    let (mut master, slave) = open_pty();
    // The scheduler may take a while to take in 100,000 tasks on a loaded machine (a debug
    // build): the command waits for it longer than its default 5 s.
    let mut args = vec![
        "get".to_owned(),
        "--progress".to_owned(),
        "--scheduler-timeout".to_owned(),
        "60".to_owned(),
        "--scheduler".to_owned(),
        cluster.address_to_clients().to_owned(),
    ];
    args.extend(cluster.zask_security_args());
    args.extend([file.display().to_string(), "total".to_owned()]);
    let mut child = Command::new(ZASK)
        .args(&args)
        .env_remove("ZASK_SCHEDULER")
        .env_remove(zask::security::ACCESS_FILE_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("start zask");
    // Only the child holds the terminal now: reading ends (EIO) once it exits.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    let deadline = Instant::now() + Duration::from_secs(100);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("zask get --progress did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let terminal = reader.join().expect("the reader");
    assert!(status.success(), "{status:?}\n{terminal}");
    assert_eq!(stdout.trim(), total.to_string());
    let full = format!("{tasks}/{tasks} tasks 100%");
    assert!(
        terminal.contains(&full),
        "the bar reaches {full:?}; the terminal showed:\n{terminal}"
    );
}

#[test]
fn zask_get_progress_draws_nothing_when_stderr_is_not_a_terminal() {
    let cluster = TestCluster::new();
    let (graph, total) = reduction_graph(200);
    let file = cluster.dir().join("small.json");
    std::fs::write(&file, graph).expect("write the graph");
    let mut args = vec![
        "get",
        "--progress",
        "--scheduler",
        cluster.address_to_clients(),
    ];
    let security = cluster.zask_security_args();
    args.extend(security.iter().map(String::as_str));
    let file = file.display().to_string();
    args.extend([file.as_str(), "total"]);
    let out = run(ZASK, &args);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), total.to_string());
    assert_eq!(out.stderr, "", "no bar on a pipe");
}

#[test]
fn get_with_progress_reports_growing_counts_ending_at_the_total() {
    let cluster = TestCluster::options().workers(2).nthreads(2).start();
    let client = cluster.client();
    let (graph, total) = reduction_graph(5_000);
    let dsk = zask::graph::json::parse_graph(&graph).expect("a graph");
    let tasks = 5_000 + 50 + 1;
    let mut reports: Vec<Progress> = Vec::new();
    let value = client
        .get_with_progress(&dsk, "total", GetOptions::default(), |p| reports.push(p))
        .expect("the total");
    assert_eq!(value, Value::from(total));
    let last = *reports.last().expect("at least the last report");
    assert_eq!(
        last,
        Progress {
            done: tasks,
            total: tasks,
            erred: 0
        }
    );
    for pair in reports.windows(2) {
        assert!(pair[0].done <= pair[1].done, "{reports:?}");
        assert_eq!(pair[0].total, pair[1].total, "{reports:?}");
    }
    // A failing graph: the call fails, with no report claiming it finished.
    let failing = zask::graph! { "a" => ("fail", "boom"), "b" => ("inc", "a") };
    let mut reports: Vec<Progress> = Vec::new();
    let result =
        client.get_with_progress(&failing, "b", GetOptions::default(), |p| reports.push(p));
    assert!(result.is_err(), "{result:?}");
    assert!(
        reports.iter().all(|p| p.done < p.total || p.total == 0),
        "{reports:?}"
    );
}
