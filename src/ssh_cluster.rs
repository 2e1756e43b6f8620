//! A cluster over ssh: the first host runs the scheduler, the others run the workers (all
//! hosts when there is one), each started with the system's `ssh` command. It is a `Cluster`:
//! it scales and adapts by starting and stopping workers over ssh.
//!
//! What a remote process needs to know in secret (the scheduler's keys, the worker's access)
//! travels on ssh's standard input into a file of a new directory only that user can read
//! (`mktemp -d` under umask 077), never on a command line. The remote shell then waits on the
//! same standard input: when it closes (the cluster stops the worker, is dropped, or this
//! process dies and its ssh connections with it) the remote process gets SIGTERM (a worker's
//! nanny retires it: its results move first), is waited for, and the directory is removed.
//!
//! The remote programs are given by path (`scheduler_program`, `worker_program`); the default
//! is the path of the local ones, which is right when the hosts share a filesystem.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig, ClientError, ClientSecurity};
use crate::cluster::{Cluster, ClusterError, ManagedCluster};
use crate::processes::{self, BinaryNotFound, Spawner};
use crate::protocol::WorkerAddress;
use crate::security::{ClusterKeys, Role, SecurityError};

/// How long a stopped remote process (its ssh connection) has to finish before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The shell that runs on each remote host: it reads the secret file from its standard input
/// into a private directory, starts the program with that file's flag, and stops the program
/// (SIGTERM, then waits) once its standard input closes. Arguments: the file's length in
/// bytes (0: no file), its flag, its name, then the program and its arguments.
const REMOTE_SCRIPT: &str = r#"set -e
umask 077
d=$(mktemp -d "${TMPDIR:-/tmp}/zask-ssh.XXXXXX")
trap 'rm -rf "$d"' EXIT
n=$1; flag=$2; name=$3; shift 3
if [ "$n" -gt 0 ]; then head -c "$n" > "$d/$name"; set -- "$@" "$flag" "$d/$name"; fi
"$@" &
pid=$!
cat > /dev/null || true
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
"#;

/// How to build an `SshCluster` (`SshCluster::builder(hosts)`); each setting says its default.
#[derive(Clone, Debug)]
pub struct SshClusterBuilder {
    /// `[user@]host` of each machine: the first runs the scheduler, the others the workers.
    hosts: Vec<String>,
    /// The ssh program. Default: `ssh` (on PATH).
    ssh_program: PathBuf,
    /// Options given to every ssh command before the host (`-p 2222`, `-i KEY`, `-o ...`).
    ssh_options: Vec<String>,
    /// `zask-scheduler` on the first host. Default: the local one's path.
    scheduler_program: Option<PathBuf>,
    /// `zask-worker` on the worker hosts. Default: the local one's path.
    worker_program: Option<PathBuf>,
    /// Workers started on each worker host. Default: 1.
    workers_per_host: usize,
    /// Task threads per worker. Default: 1.
    threads_per_worker: u32,
    /// Each worker's `--memory-limit` (300MB, 0.25, auto...). Default: none.
    memory_limit: Option<String>,
    /// The interface the scheduler listens on. Default: the first host's name (without
    /// `user@`); `0.0.0.0` for every interface.
    scheduler_listen: Option<String>,
    /// The scheduler's ports (0: any free port). Default: 0.
    worker_port: u16,
    client_port: u16,
    /// Workers offer the test functions (`--test-functions`). Default: no.
    test_functions: bool,
    /// No CURVE. Default: keys made for the cluster.
    insecure: bool,
    /// How long to wait for the scheduler's addresses and for each worker to start.
    /// Default: 30 s.
    start_timeout: Duration,
}

impl SshClusterBuilder {
    pub fn ssh_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.ssh_program = program.into();
        self
    }

    /// Options for every ssh command, before the host: `["-p", "2222", "-i", "KEY"]`.
    pub fn ssh_options<S: Into<String>>(mut self, options: impl IntoIterator<Item = S>) -> Self {
        self.ssh_options = options.into_iter().map(Into::into).collect();
        self
    }

    pub fn scheduler_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.scheduler_program = Some(path.into());
        self
    }

    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_program = Some(path.into());
        self
    }

    pub fn workers_per_host(mut self, n: usize) -> Self {
        self.workers_per_host = n;
        self
    }

    pub fn threads_per_worker(mut self, n: u32) -> Self {
        self.threads_per_worker = n.max(1);
        self
    }

    pub fn memory_limit(mut self, limit: impl Into<String>) -> Self {
        self.memory_limit = Some(limit.into());
        self
    }

    pub fn scheduler_listen(mut self, interface: impl Into<String>) -> Self {
        self.scheduler_listen = Some(interface.into());
        self
    }

    pub fn ports(mut self, worker_port: u16, client_port: u16) -> Self {
        self.worker_port = worker_port;
        self.client_port = client_port;
        self
    }

    pub fn test_functions(mut self) -> Self {
        self.test_functions = true;
        self
    }

    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the scheduler on the first host and `workers_per_host` workers on each other
    /// host; returns once every worker has registered.
    pub fn start(self) -> Result<SshCluster, SshClusterError> {
        let Some(first) = self.hosts.first().cloned() else {
            return Err(SshClusterError::NoHosts);
        };
        let scheduler_program = match &self.scheduler_program {
            Some(p) => p.clone(),
            None => processes::find_binary("zask-scheduler", processes::SCHEDULER_BIN_ENV)
                .map_err(SshClusterError::NoProgram)?,
        };
        let worker_program = match &self.worker_program {
            Some(p) => p.clone(),
            None => processes::find_binary("zask-worker", processes::WORKER_BIN_ENV)
                .map_err(SshClusterError::NoProgram)?,
        };
        let keys = if self.insecure {
            None
        } else {
            Some(ClusterKeys::generate().map_err(SshClusterError::Security)?)
        };
        let spawner = Spawner::start().map_err(SshClusterError::Ssh)?;
        let listen = self
            .scheduler_listen
            .clone()
            .unwrap_or_else(|| host_name(&first).to_owned());
        let mut args = vec![
            scheduler_program.display().to_string(),
            "--host".into(),
            listen,
            "--worker-port".into(),
            self.worker_port.to_string(),
            "--client-port".into(),
            self.client_port.to_string(),
        ];
        let secret = match &keys {
            Some(k) => Some((
                "--security-file",
                "keys.json",
                serde_json::to_string(k).expect("keys encode"),
            )),
            None => {
                args.push("--insecure".into());
                None
            }
        };
        let ssh = Ssh {
            program: self.ssh_program.clone(),
            options: self.ssh_options.clone(),
        };
        let mut scheduler = ssh
            .launch(&spawner, &first, secret, &args)
            .map_err(SshClusterError::Ssh)?;
        let deadline = Instant::now() + self.start_timeout;
        let address_to_workers = scheduler.line_after("address_to_workers ", deadline);
        let address_to_clients = scheduler.line_after("address_to_clients ", deadline);
        let (Some(address_to_workers), Some(address_to_clients)) =
            (address_to_workers, address_to_clients)
        else {
            scheduler.stop(&mut [], STOP_GRACE);
            return Err(SshClusterError::SchedulerDidNotStart {
                host: first,
                waited_ms: self.start_timeout.as_millis() as u64,
            });
        };
        log::info!("ssh: scheduler on {first}: workers connect to {address_to_workers}, clients to {address_to_clients}");
        let worker_hosts: Vec<String> = if self.hosts.len() > 1 {
            self.hosts[1..].to_vec()
        } else {
            self.hosts.clone()
        };
        let initial = worker_hosts.len() * self.workers_per_host;
        let inner = Arc::new(SshWorkers {
            workers: Mutex::new(Vec::new()),
            scheduler: Mutex::new(Some(scheduler)),
            address_to_workers,
            address_to_clients,
            keys,
            worker_hosts,
            worker_program,
            ssh,
            settings: self,
            next_index: AtomicUsize::new(0),
            spawner,
        });
        inner
            .start_workers(initial)
            .map_err(SshClusterError::Cluster)?;
        let cluster = ManagedCluster::managing(inner);
        cluster.wait_for_workers(initial)?;
        Ok(cluster)
    }
}

/// `host` of `user@host`.
fn host_name(target: &str) -> &str {
    target.rsplit_once('@').map_or(target, |(_, h)| h)
}

/// A word as the remote shell reads it: in single quotes, each quote written '\''.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// How to reach the hosts.
struct Ssh {
    program: PathBuf,
    options: Vec<String>,
}

impl Ssh {
    /// Runs `REMOTE_SCRIPT` on `host` with the program `args` and, if any, the secret file
    /// (flag, name, contents), which is written to ssh's standard input (kept open: closing it
    /// stops the remote program).
    fn launch(
        &self,
        spawner: &Spawner,
        host: &str,
        secret: Option<(&str, &str, String)>,
        args: &[String],
    ) -> std::io::Result<Remote> {
        let (length, flag, name, contents) = match &secret {
            Some((flag, name, contents)) => (contents.len(), *flag, *name, contents.as_str()),
            None => (0, "-", "-", ""),
        };
        let mut remote = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            shell_quote(REMOTE_SCRIPT),
            "zask-ssh".to_owned(),
            length.to_string(),
            shell_quote(flag),
            shell_quote(name),
        ];
        remote.extend(args.iter().map(|a| shell_quote(a)));
        let mut command = Command::new(&self.program);
        command
            .args(["-T", "-o", "BatchMode=yes"])
            .args(&self.options)
            .arg(host)
            .arg(remote.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = spawner.spawn(command)?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(contents.as_bytes())?;
        stdin.flush()?;
        let stdout = child.stdout.take().expect("piped");
        let (lines_to, lines) = mpsc::channel();
        let host_owned = host.to_owned();
        std::thread::Builder::new()
            .name("zask-ssh-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    log::debug!("ssh {host_owned}: {line}");
                    let _ = lines_to.send(line);
                }
            })?;
        Ok(Remote {
            host: host.to_owned(),
            child,
            stdin: Some(stdin),
            lines,
            address: None,
        })
    }
}

/// A program running on a host, through its ssh connection.
struct Remote {
    host: String,
    /// The local ssh process.
    child: Child,
    /// Its standard input: closing it stops the remote program.
    stdin: Option<ChildStdin>,
    /// The remote program's standard output, line by line.
    lines: mpsc::Receiver<String>,
    /// A worker's peer address, once it said it.
    address: Option<WorkerAddress>,
}

impl Remote {
    /// The rest of the first line starting with `prefix`, waiting until `deadline`.
    fn line_after(&mut self, prefix: &str, deadline: Instant) -> Option<String> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_owned());
            }
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A worker's address as it last said it: its nanny may have restarted it on another
    /// port.
    fn current_address(&mut self) -> Option<WorkerAddress> {
        for line in self.lines.try_iter() {
            if let Some(rest) = line.strip_prefix("worker ") {
                self.address = Some(WorkerAddress::from(rest.trim().to_owned()));
            }
        }
        self.address.clone()
    }

    /// Closes the standard input of this and `others` (their remote programs get SIGTERM and
    /// are waited for), then waits for the ssh processes, killing them past `grace`.
    fn stop(mut self, others: &mut [Remote], grace: Duration) {
        self.stdin.take();
        for o in others.iter_mut() {
            o.stdin.take();
        }
        let deadline = Instant::now() + grace;
        let mut all: Vec<&mut Child> = std::iter::once(&mut self.child)
            .chain(others.iter_mut().map(|o| &mut o.child))
            .collect();
        loop {
            let mut running = 0;
            for c in all.iter_mut() {
                if matches!(c.try_wait(), Ok(None)) {
                    running += 1;
                }
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        processes::terminate(&mut all, Duration::from_secs(2));
    }
}

/// Stops remote programs all at once (see `Remote::stop`).
fn stop_all(mut remotes: Vec<Remote>) {
    if let Some(first) = remotes.pop() {
        first.stop(&mut remotes, STOP_GRACE);
    }
}

/// A scheduler and workers on other machines, over ssh. Dropping it stops them all.
pub type SshCluster = ManagedCluster<SshWorkers>;

/// What an `SshCluster` runs, shared with its adaptive thread (which holds it weakly); used
/// only through `SshCluster`.
pub struct SshWorkers {
    workers: Mutex<Vec<Remote>>,
    /// The scheduler's ssh connection (taken when stopped).
    scheduler: Mutex<Option<Remote>>,
    address_to_workers: String,
    address_to_clients: String,
    keys: Option<ClusterKeys>,
    /// The hosts workers start on, in turn.
    worker_hosts: Vec<String>,
    worker_program: PathBuf,
    ssh: Ssh,
    settings: SshClusterBuilder,
    /// The next worker's index: its name is `ssh-<index>`, its host `worker_hosts[index %
    /// len]`.
    next_index: AtomicUsize,
    /// Starts every ssh process (dropped last: see `crate::processes`).
    spawner: Spawner,
}

impl Drop for SshWorkers {
    /// Stops the workers (they retire while the scheduler runs), then the scheduler.
    fn drop(&mut self) {
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        stop_all(workers);
        let scheduler = self
            .scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = scheduler {
            s.stop(&mut [], STOP_GRACE);
        }
    }
}

impl SshWorkers {
    fn start_worker(&self) -> Result<WorkerAddress, ClusterError> {
        let i = self.next_index.fetch_add(1, Ordering::SeqCst);
        let host = &self.worker_hosts[i % self.worker_hosts.len()];
        let s = &self.settings;
        let mut args = vec![
            self.worker_program.display().to_string(),
            self.address_to_workers.clone(),
            "--name".into(),
            format!("ssh-{i}"),
            "--nthreads".into(),
            s.threads_per_worker.to_string(),
        ];
        if let Some(limit) = &s.memory_limit {
            args.extend(["--memory-limit".into(), limit.clone()]);
        }
        if s.test_functions {
            args.push("--test-functions".into());
        }
        let secret = match &self.keys {
            Some(k) => Some((
                "--access-file",
                "worker.access",
                serde_json::to_string(&k.access(Role::Worker)).expect("access encodes"),
            )),
            None => {
                args.push("--insecure".into());
                None
            }
        };
        let mut remote = self
            .ssh
            .launch(&self.spawner, host, secret, &args)
            .map_err(ClusterError::Ssh)?;
        let deadline = Instant::now() + s.start_timeout;
        let Some(address) = remote.line_after("worker ", deadline) else {
            let waited_ms = s.start_timeout.as_millis() as u64;
            remote.stop(&mut [], Duration::from_secs(2));
            return Err(ClusterError::RemoteStart {
                host: host.clone(),
                waited_ms,
            });
        };
        let address = WorkerAddress::from(address);
        log::info!("ssh: worker ssh-{i} on {host} at {address}");
        remote.address = Some(address.clone());
        self.workers.lock().expect("never poisoned").push(remote);
        Ok(address)
    }

    fn client(&self) -> Result<Client, ClientError> {
        let security = match self.keys.as_ref().map(|k| k.access(Role::Operator)) {
            Some(access) => ClientSecurity::Access(access),
            None => ClientSecurity::Insecure,
        };
        let config = ClientConfig {
            security,
            ..ClientConfig::default()
        };
        Client::connect_with(&self.address_to_clients, config)
    }
}

impl Cluster for SshWorkers {
    fn start_workers(&self, n: usize) -> Result<Vec<WorkerAddress>, ClusterError> {
        (0..n).map(|_| self.start_worker()).collect()
    }

    /// Closes their ssh connections' input: each remote worker gets SIGTERM, retires (its
    /// results move first) and exits. Returns when all are gone.
    fn stop_workers(&self, addresses: &[WorkerAddress]) -> Result<(), ClusterError> {
        let leaving: Vec<Remote> = {
            let mut workers = self.workers.lock().expect("never poisoned");
            for w in workers.iter_mut() {
                w.current_address();
            }
            let (leaving, staying) = std::mem::take(&mut *workers)
                .into_iter()
                .partition(|w: &Remote| w.address.as_ref().is_some_and(|a| addresses.contains(a)));
            *workers = staying;
            leaving
        };
        for w in &leaving {
            log::info!(
                "ssh: stopping worker {} on {}",
                w.address.as_ref().map_or("?", |a| a.as_str()),
                w.host
            );
        }
        stop_all(leaving);
        Ok(())
    }

    fn scheduler_address(&self) -> &str {
        &self.address_to_clients
    }

    fn client(&self) -> Result<Client, ClientError> {
        SshWorkers::client(self)
    }

    fn started(&self) -> Vec<WorkerAddress> {
        self.workers
            .lock()
            .expect("never poisoned")
            .iter_mut()
            .filter_map(|w| {
                if w.is_running() {
                    w.current_address()
                } else {
                    None
                }
            })
            .collect()
    }

    fn threads_per_worker(&self) -> u32 {
        self.settings.threads_per_worker
    }
}

impl SshCluster {
    /// A cluster on `hosts` (`[user@]host`): the first runs the scheduler, the others the
    /// workers.
    pub fn builder<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> SshClusterBuilder {
        SshClusterBuilder {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ssh_program: "ssh".into(),
            ssh_options: Vec::new(),
            scheduler_program: None,
            worker_program: None,
            workers_per_host: 1,
            threads_per_worker: 1,
            memory_limit: None,
            scheduler_listen: None,
            worker_port: 0,
            client_port: 0,
            test_functions: false,
            insecure: false,
            start_timeout: Duration::from_secs(30),
        }
    }

    pub fn address_to_clients(&self) -> &str {
        &self.inner.address_to_clients
    }

    pub fn address_to_workers(&self) -> &str {
        &self.inner.address_to_workers
    }

    /// What a peer of `role` needs to connect; None when insecure.
    pub fn access(&self, role: Role) -> Option<crate::security::Access> {
        self.inner.keys.as_ref().map(|k| k.access(role))
    }

    /// Whether the scheduler stopped by itself (an operator's `zask shutdown`; its workers
    /// were dismissed): its ssh connection ended. What is left to do is to drop the cluster.
    pub fn shut_down(&self) -> bool {
        match self.inner.scheduler.lock() {
            Ok(mut scheduler) => scheduler.as_mut().is_some_and(|s| !s.is_running()),
            Err(_) => false,
        }
    }

    /// Waits (bounded by the start timeout) until `n` workers have registered.
    fn wait_for_workers(&self, n: usize) -> Result<(), SshClusterError> {
        let client = self.client().map_err(SshClusterError::Client)?;
        let limit = self.inner.settings.start_timeout;
        let deadline = Instant::now() + limit;
        loop {
            let have = client.workers().map_err(SshClusterError::Client)?.len();
            if have >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SshClusterError::Unregistered {
                    registered: have,
                    started: n,
                    waited_ms: limit.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Why an `SshCluster` did not start. `retry_may_help` says whether starting it again,
/// unchanged, can succeed.
#[derive(Debug)]
pub enum SshClusterError {
    /// No host was given.
    NoHosts,
    /// A program's path was not given and no local one was found.
    NoProgram(BinaryNotFound),
    /// The ssh program could not be run or fed (its own error kind decides).
    Ssh(std::io::Error),
    /// The keys could not be made.
    Security(SecurityError),
    /// The scheduler did not say its addresses in time: ssh could not connect, or the
    /// remote program is missing or failed (ssh's and its messages are on stderr).
    SchedulerDidNotStart { host: String, waited_ms: u64 },
    /// A worker did not start.
    Cluster(ClusterError),
    /// The cluster's client could not ask the scheduler about its workers.
    Client(ClientError),
    /// Not every worker registered in time: may pass.
    Unregistered {
        registered: usize,
        started: usize,
        waited_ms: u64,
    },
}

impl SshClusterError {
    pub fn retry_may_help(&self) -> bool {
        match self {
            SshClusterError::NoHosts | SshClusterError::NoProgram(_) => false,
            SshClusterError::Ssh(e) => e.kind() != std::io::ErrorKind::NotFound,
            SshClusterError::Security(e) => e.retry_may_help(),
            SshClusterError::SchedulerDidNotStart { .. } => true,
            SshClusterError::Cluster(e) => e.retry_may_help(),
            SshClusterError::Client(e) => e.retry_may_help(),
            SshClusterError::Unregistered { .. } => true,
        }
    }
}

impl std::fmt::Display for SshClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshClusterError::NoHosts => write!(f, "no host given: the first runs the scheduler"),
            SshClusterError::NoProgram(e) => write!(f, "{e}"),
            SshClusterError::Ssh(e) => write!(f, "running ssh: {e}"),
            SshClusterError::Security(e) => write!(f, "securing the cluster: {e}"),
            SshClusterError::SchedulerDidNotStart { host, waited_ms } => write!(
                f,
                "the scheduler on {host} did not say its addresses within {waited_ms} ms \
                 (ssh's and the scheduler's messages are above)"
            ),
            SshClusterError::Cluster(e) => write!(f, "{e}"),
            SshClusterError::Client(e) => write!(f, "{e}"),
            SshClusterError::Unregistered {
                registered,
                started,
                waited_ms,
            } => write!(
                f,
                "only {registered} of {started} workers registered within {waited_ms} ms"
            ),
        }
    }
}

impl std::error::Error for SshClusterError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_reaches_the_remote_shell_unchanged() {
        for word in ["plain", "with space", "it's", "$HOME `x` \"q\"", ""] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
        }
    }

    #[test]
    fn the_remote_script_writes_the_secret_privately_and_stops_the_program_on_eof() {
        // Run the script with sh here (as ssh would there). The program is `sh -c PROGRAM x`
        // followed by the flag and the file: it prints the file's path, mode and contents,
        // then sleeps until the script's SIGTERM.
        let program =
            r#"f=$2; echo "$1"; echo "$f"; stat -c %a "$f"; cat "$f"; echo; exec sleep 30"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(REMOTE_SCRIPT)
            .args([
                "zask-ssh", "6", "--secret", "s.txt", "sh", "-c", program, "x",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"s3cr3t").unwrap();
        stdin.flush().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().unwrap().unwrap();
        assert_eq!(next(), "--secret");
        let path = PathBuf::from(next());
        assert!(path.ends_with("s.txt"), "{path:?}");
        assert_eq!(next(), "600");
        assert_eq!(next(), "s3cr3t");
        // Closing its input stops the program (sleep 30 would outlast the test) and removes
        // the directory.
        let started = Instant::now();
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(!path.parent().unwrap().exists(), "{path:?}");
    }
}
