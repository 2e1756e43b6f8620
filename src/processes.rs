//! Processes a cluster manager starts on this machine (`LocalCluster` with processes, and the
//! `ssh` clients of `SshCluster`): finding Zask's binaries, a private directory for the files
//! they read (access files: never on a command line, where `ps` shows them), starting them so
//! that they die with this process, and stopping them (SIGTERM, a bounded wait, then SIGKILL).
//!
//! Dying with this process: each child asks the kernel for SIGTERM when its parent goes
//! (`PR_SET_PDEATHSIG`). The kernel means the parent *thread*, so every child is spawned by one
//! thread (`Spawner`) that lives until its owner has stopped all of them; a manager whose
//! process is killed outright still leaves no worker behind.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a binary was looked for and not found: how to fix it is in the message.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryNotFound {
    /// The program, e.g. `zask-worker`.
    pub name: String,
    /// The variable that names it, e.g. `ZASK_WORKER_BIN`.
    pub env: String,
    /// Every path tried, in order.
    pub looked: Vec<PathBuf>,
}

impl std::fmt::Display for BinaryNotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let looked: Vec<String> = self
            .looked
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        write!(
            f,
            "no {name} program found (looked at {looked}); build it (`cargo build --bins`), \
             put it on PATH, or set {env} to its path",
            name = self.name,
            env = self.env,
            looked = if looked.is_empty() {
                "nothing".to_owned()
            } else {
                looked.join(", ")
            },
        )
    }
}

impl std::error::Error for BinaryNotFound {}

/// The environment variable naming the `zask-worker` program.
pub const WORKER_BIN_ENV: &str = "ZASK_WORKER_BIN";
/// The environment variable naming the `zask-scheduler` program.
pub const SCHEDULER_BIN_ENV: &str = "ZASK_SCHEDULER_BIN";

/// Finds the program `name`: the path in `env` if set (it must exist), else beside the
/// current executable, else in that directory's parent (an example or a test runs from a
/// subdirectory of the one holding the binaries: target/debug/examples, target/debug/deps),
/// else on PATH.
pub fn find_binary(name: &str, env: &str) -> Result<PathBuf, BinaryNotFound> {
    let mut looked = Vec::new();
    let given = std::env::var_os(env).map(PathBuf::from);
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let path = std::env::var_os("PATH");
    let found = search(name, given, exe_dir, path.as_deref(), &mut looked, |p| {
        p.is_file()
    });
    found.ok_or_else(|| BinaryNotFound {
        name: name.to_owned(),
        env: env.to_owned(),
        looked,
    })
}

/// The search of `find_binary`, with what it reads passed in. `given` (from the environment)
/// decides alone when set.
fn search(
    name: &str,
    given: Option<PathBuf>,
    exe_dir: Option<PathBuf>,
    path: Option<&std::ffi::OsStr>,
    looked: &mut Vec<PathBuf>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(given) = given {
        looked.push(given.clone());
        return exists(&given).then_some(given);
    }
    let mut candidates = Vec::new();
    if let Some(dir) = exe_dir {
        candidates.push(dir.join(name));
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(name));
        }
    }
    if let Some(path) = path {
        candidates.extend(std::env::split_paths(path).map(|d| d.join(name)));
    }
    for c in candidates {
        looked.push(c.clone());
        if exists(&c) {
            return Some(c);
        }
    }
    None
}

/// A directory only this user can read (mode 0700), removed with everything in it when
/// dropped. For the files a cluster hands its processes.
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// A new directory under the system's temporary directory, named after `prefix`, this
    /// process and a counter. Never one that exists already.
    pub fn new(prefix: &str) -> io::Result<PrivateDir> {
        let base = std::env::temp_dir();
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        let salt = crate::net::unpredictable_token();
        for attempt in 0..100u64 {
            let path = base.join(format!(
                "{prefix}-{}-{:x}",
                std::process::id(),
                salt.wrapping_add(attempt)
            ));
            match builder.create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free name for a directory in {}", base.display()),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A request to the spawning thread.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread that starts every child of one owner, so that the kernel's parent-death signal
/// (sent when the spawning *thread* ends) comes only when the owner is gone. Dropping it ends
/// the thread: drop it after stopping the children.
pub struct Spawner {
    requests: Mutex<Option<mpsc::Sender<SpawnRequest>>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    pub fn start() -> io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("zask-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner {
            requests: Mutex::new(Some(requests)),
            thread: Some(thread),
        })
    }

    /// Starts `command`; the child gets SIGTERM if this process ends before it does.
    pub fn spawn(&self, mut command: Command) -> io::Result<Child> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing here allocates.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the request took effect: no signal will come.
                if libc::getppid() != parent {
                    return Err(io::Error::other("the parent process is gone"));
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .expect("never poisoned")
            .as_ref()
            .is_some_and(|r| r.send((command, reply)).is_ok());
        match sent {
            true => answer
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the spawning thread ended"))),
            false => Err(io::Error::other("the spawning thread ended")),
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.lock().expect("never poisoned").take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends SIGTERM to each child, waits up to `grace` for all of them together, then SIGKILLs
/// the ones left and reaps them. Returns once every child has exited.
pub fn terminate(children: &mut [&mut Child], grace: Duration) {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            signal(child, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut running = 0;
        for c in children.iter_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            log::warn!(
                "process {} did not stop within {} ms of SIGTERM: killing it",
                child.id(),
                grace.as_millis()
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to a child that has not been reaped.
pub fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) with the pid of our own unreaped child and a valid signal number.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: Z is a zombie, X dead.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_decides_alone_then_beside_the_program_then_its_parent_then_path() {
        let exists = |present: &'static [&'static str]| {
            move |p: &Path| present.iter().any(|q| Path::new(q) == p)
        };
        let mut looked = Vec::new();
        let found = search(
            "zask-worker",
            Some("/opt/w".into()),
            Some("/t/debug".into()),
            None,
            &mut looked,
            exists(&["/t/debug/zask-worker"]),
        );
        assert_eq!(
            found, None,
            "a variable set to a missing file is not passed over"
        );
        assert_eq!(looked, vec![PathBuf::from("/opt/w")]);

        let path = std::ffi::OsString::from("/usr/bin:/bin");
        let mut looked = Vec::new();
        let found = search(
            "zask-worker",
            None,
            Some("/t/debug/examples".into()),
            Some(&path),
            &mut looked,
            exists(&["/t/debug/zask-worker", "/bin/zask-worker"]),
        );
        assert_eq!(found, Some(PathBuf::from("/t/debug/zask-worker")));
        assert_eq!(
            looked,
            vec![
                PathBuf::from("/t/debug/examples/zask-worker"),
                PathBuf::from("/t/debug/zask-worker")
            ]
        );

        let mut looked = Vec::new();
        let found = search(
            "zask-worker",
            None,
            Some("/t/debug".into()),
            Some(&path),
            &mut looked,
            exists(&["/bin/zask-worker"]),
        );
        assert_eq!(found, Some(PathBuf::from("/bin/zask-worker")));
        assert_eq!(looked.len(), 4, "{looked:?}");
    }

    #[test]
    fn not_found_says_how_to_fix_it() {
        let e = BinaryNotFound {
            name: "zask-worker".into(),
            env: WORKER_BIN_ENV.into(),
            looked: vec!["/a/zask-worker".into()],
        };
        let text = e.to_string();
        assert!(text.contains("/a/zask-worker"), "{text}");
        assert!(text.contains("ZASK_WORKER_BIN"), "{text}");
        assert!(text.contains("cargo build"), "{text}");
    }

    #[test]
    fn a_private_dir_is_0700_and_goes_away() {
        use std::os::unix::fs::PermissionsExt;
        let dir = PrivateDir::new("zask-test").unwrap();
        let path = dir.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(path.join("f"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_spawned_child_is_terminated_and_reaped() {
        let spawner = Spawner::start().unwrap();
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut child = spawner.spawn(command).unwrap();
        let pid = child.id();
        assert!(pid_alive(pid));
        terminate(&mut [&mut child], Duration::from_secs(5));
        assert!(!pid_alive(pid));
    }
}
