//! SshCluster against a real ssh server on 127.0.0.1: the test makes a host key and a user
//! key, runs Debian's sshd (`.ci/run` installs openssh-server) on a free port as this user, and
//! starts a cluster whose scheduler and workers are reached over ssh. It computes, scales,
//! and leaves no process behind. If sshd cannot run here the test fails, saying why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zask::processes::pid_alive;
use zask::{Cluster, Graph, SshCluster, Value};

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd on 127.0.0.1 with its files in a temporary directory; killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen cannot run ({e}): install openssh-client"));
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server (.ci/run does)"
        );
        // sshd wants its privilege-separation directory, owned by root.
        std::fs::create_dir_all("/run/sshd")
            .unwrap_or_else(|e| panic!("cannot make /run/sshd for sshd: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_key");
        let key = dir.path().join("user_key");
        keygen(&host_key);
        keygen(&key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nPidFile {}\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                host_key.display(),
                authorized.display(),
                dir.path().join("sshd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{SSHD} cannot run: {e}"));
        let mut sshd = Sshd {
            child,
            port,
            key,
            dir,
        };
        // Up when a command runs through it (bounded).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ssh")
                .args(sshd.options())
                .args(["127.0.0.1", "true"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                return sshd;
            }
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!(
                    "sshd exited ({status}): {}",
                    std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "ssh to sshd on port {} did not work within 20 s: {}\nsshd log: {}",
                    sshd.port,
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn options(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ]
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes; returns whether it held.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn a_cluster_over_ssh_computes_scales_and_leaves_nothing_behind() {
    let sshd = Sshd::start();
    let cluster = SshCluster::builder(["127.0.0.1", "127.0.0.1"])
        .ssh_options(sshd.options())
        .scheduler_program(env!("CARGO_BIN_EXE_zask-scheduler"))
        .worker_program(env!("CARGO_BIN_EXE_zask-worker"))
        .workers_per_host(2)
        .start()
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
    let client = cluster.client().unwrap();
    assert_eq!(client.workers().unwrap().len(), 2);
    let mut graph = Graph::new();
    graph.insert("x", 41);
    graph.insert("y", ("inc", "x"));
    graph.insert("z", ("add", "y", "x"));
    assert_eq!(client.get(&graph, "z").unwrap(), Value::from(83));

    cluster.scale(3).unwrap();
    assert!(wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 3
    }));
    let pids: Vec<u32> = client.workers().unwrap().iter().map(|w| w.pid).collect();
    cluster.scale(1).unwrap();
    assert_eq!(cluster.started().len(), 1);
    assert!(wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 1
    }));
    let left = client.workers().unwrap()[0].pid;
    for pid in pids.iter().filter(|p| **p != left) {
        assert!(
            wait_for(Duration::from_secs(10), || !pid_alive(*pid)),
            "stopped worker process {pid} still runs"
        );
    }
    assert_eq!(client.get(&graph, "z").unwrap(), Value::from(83));
    drop(client);
    drop(cluster);
    // Every remote shell reaps its program before its ssh session ends.
    assert!(
        wait_for(Duration::from_secs(10), || !pid_alive(left)),
        "worker process {left} outlived the cluster"
    );
    drop(sshd);
}

#[test]
fn zask_ssh_runs_a_cluster_until_sigterm() {
    use std::io::BufRead;
    let sshd = Sshd::start();
    let mut args = vec![
        "ssh".to_owned(),
        "127.0.0.1".into(),
        "127.0.0.1".into(),
        "--workers-per-host".into(),
        "2".into(),
        "--worker-program".into(),
        env!("CARGO_BIN_EXE_zask-worker").into(),
        "--security-dir".into(),
        sshd.dir.path().join("access").display().to_string(),
    ];
    let options = sshd.options();
    for pair in options.chunks(2) {
        args.push("--ssh-option".into());
        args.push(pair.join(" "));
    }
    let mut zask = Command::new(env!("CARGO_BIN_EXE_zask"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(zask.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("no JSON line ({e}): {line:?}"));
    assert_eq!(json["workers"], 2, "{json}");
    let access = zask::security::Access::read_for(
        Path::new(json["access"]["operator"].as_str().unwrap()),
        &[zask::security::Role::Operator],
    )
    .unwrap();
    let config = zask::ClientConfig {
        security: zask::client::ClientSecurity::Access(access),
        ..zask::ClientConfig::default()
    };
    let client =
        zask::Client::connect_with(json["address_to_clients"].as_str().unwrap(), config).unwrap();
    let mut graph = Graph::new();
    graph.insert("x", 1);
    graph.insert("y", ("inc", "x"));
    assert_eq!(client.get(&graph, "y").unwrap(), Value::from(2));
    // zask scale reaches the manager through the scheduler, as for zask local.
    let scale = Command::new(env!("CARGO_BIN_EXE_zask"))
        .args(["scale", "3", "--scheduler"])
        .arg(json["address_to_clients"].as_str().unwrap())
        .arg("--access-file")
        .arg(json["access"]["operator"].as_str().unwrap())
        .env_remove("ZASK_ACCESS_FILE")
        .output()
        .unwrap();
    assert!(scale.status.success(), "{scale:?}");
    assert!(
        wait_for(Duration::from_secs(30), || client.workers().unwrap().len()
            == 3),
        "zask scale 3 did not reach 3 workers"
    );
    let pids: Vec<u32> = client.workers().unwrap().iter().map(|w| w.pid).collect();
    assert_eq!(pids.len(), 3);
    drop(client);
    let r = unsafe { libc::kill(zask.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
    assert!(
        wait_for(Duration::from_secs(30), || matches!(
            zask.try_wait(),
            Ok(Some(_))
        )),
        "zask ssh did not stop on SIGTERM"
    );
    assert_eq!(zask.wait().unwrap().code(), Some(0));
    for pid in pids {
        assert!(
            wait_for(Duration::from_secs(10), || !pid_alive(pid)),
            "worker process {pid} outlived zask ssh"
        );
    }
    drop(sshd);
}
