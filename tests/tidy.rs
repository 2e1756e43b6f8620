//! Architecture guards: the scheduler and worker state machines stay pure (no sockets, threads,
//! channels, disk or clock), and every module says what it is for.

use std::fs;
use std::path::{Path, PathBuf};

const CORES: &[&str] = &["src/scheduler/core", "src/worker/core"];

const FORBIDDEN: &[(&str, &str)] = &[
    ("zmq", "a socket"),
    ("std::net", "a socket"),
    ("std::thread", "a thread"),
    ("crossbeam", "a channel"),
    ("std::sync::mpsc", "a channel"),
    ("sled", "the disk"),
    ("zask_storage", "the disk"),
    ("std::fs", "the disk"),
    ("Instant::now", "the clock"),
    ("SystemTime::now", "the clock"),
    ("thread::sleep", "the clock"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn state_machines_touch_no_socket_thread_channel_disk_or_clock() {
    let mut violations = Vec::new();
    for core in CORES {
        let mut files = Vec::new();
        rust_files(&root().join(core), &mut files);
        assert!(!files.is_empty(), "{core} has no sources");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for (pattern, what) in FORBIDDEN {
                    if code.contains(pattern) {
                        violations.push(format!(
                            "{}:{}: uses {pattern} ({what})",
                            file.strip_prefix(root()).unwrap().display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "core modules must stay pure:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_module_starts_by_saying_what_it_is_for() {
    let mut files = Vec::new();
    for dir in ["src", "storage/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a //! line: {missing:?}"
    );
}
