//! The 2015 system's Python side for the legacy tests: the Python 3.6 + dask 0.7.5 venv that
//! `compat/tests/legacy/setup.sh` makes (and `.ci/run` calls; made here too when missing),
//! a Python script run with a deadline, and unmodified 2015 Python workers as processes.
//! Without a Python 3.6 the tests FAIL, saying so: they never pass silently.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Proc;

fn venv() -> PathBuf {
    match std::env::var_os("ZASK_LEGACY_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/zask-legacy/py36")
        }
    }
}

/// The venv's python, made by setup.sh if it is not there yet.
pub fn legacy_python() -> PathBuf {
    let python = venv().join("bin/python");
    if !python.exists() {
        let setup = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat/tests/legacy/setup.sh");
        let out = Command::new("bash")
            .arg(&setup)
            .env("ZASK_LEGACY_VENV", venv())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", setup.display()));
        assert!(
            out.status.success(),
            "the 2015 Python environment (Python 3.6 + dask 0.7.5) could not be made by {}: {}{}",
            setup.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        python.exists(),
        "no legacy Python at {}: run compat/tests/legacy/setup.sh (needs Python 3.6)",
        python.display()
    );
    python
}

/// How a Python script ended: its status and what it printed.
pub struct ScriptRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `script` (written into `dir`, which is also its working directory: the 2015 package
/// writes its log files there) with `args`, killed after `deadline`.
pub fn run_script(
    dir: &Path,
    name: &str,
    script: &str,
    args: &[&str],
    deadline: Duration,
) -> ScriptRun {
    let python = legacy_python();
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    let mut child = Command::new(&python)
        .arg(&path)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} did not finish within {deadline:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    ScriptRun {
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An unmodified `dask.distributed.Worker` of 2015, heartbeating every second, its peer port
/// on loopback, working in `dir`.
const WORKER_SCRIPT: &str = r#"
import os, sys
os.chdir(sys.argv[2])
from dask.distributed import Worker
w = Worker(sys.argv[1], heartbeat=1, hostname='127.0.0.1', bind_to_workers='127.0.0.1')
print('worker', w.address.decode(), flush=True)
w.block()
"#;

/// Starts a 2015 Python worker that joins the scheduler at `address_to_workers`; returns the
/// process (killed when dropped) and the address it registers with.
pub fn python_worker(dir: &Path, address_to_workers: &str, i: usize) -> (Proc, String) {
    let python = legacy_python();
    let script = dir.join("python_worker.py");
    std::fs::write(&script, WORKER_SCRIPT).unwrap();
    let mut proc = Proc::spawn(
        &format!("python-worker-{i}"),
        python.to_str().expect("a UTF-8 path"),
        &[
            script.display().to_string(),
            address_to_workers.to_owned(),
            dir.display().to_string(),
        ],
        dir.join(format!("python-worker-{i}.log")),
    );
    let address = proc.read_line_after("worker ");
    (proc, address)
}
