//! Fatal panics: a bug in one of Zask's own threads ends the process at once, loudly, instead
//! of leaving a half-dead scheduler or worker with its ports still open.
//!
//! A panic *inside a task* (a user function called by the executor) is not a Zask bug: the
//! executor catches it and it becomes that task's error. Every other panic in a Zask thread
//! (scheduler core, socket threads, journal, worker IO thread, executor outside the user
//! function, nanny, the client IO thread of the binaries) means Zask's own state can no longer
//! be trusted, and a thread that silently died would leave the others waiting forever (clients
//! see `SchedulerLost`, workers give up only after `--death-timeout-ms`). So the panic hook
//! installed here logs the panic with its thread name and location and exits the process with
//! [`EXIT_CODE`] at once (`_exit`: no unwinding, no destructors, no other thread runs on), so a
//! nanny, systemd or a `--state-dir` restart takes over.
//!
//! Two scopes:
//! - [`install_for_process`] (the binaries): every panic outside a task is fatal, whatever the
//!   thread.
//! - [`install`] (the library: `Scheduler::start`, `Worker::start`, hence `LocalCluster`):
//!   only panics on threads Zask started and marked with [`spawn_service`] / [`mark_service`]
//!   are fatal. An embedded cluster takes the whole process down with it, as the binaries do
//!   (a scheduler whose core thread died cannot be repaired from outside), but a panic in one
//!   of the user's own threads (a failed assertion in a test, say) keeps its usual meaning.
//!   The client of the library is not marked: its IO thread's panic fails its waiting calls
//!   with `ClientError::Closed` and leaves the user's process alone.
//!
//! Other panics are passed to the hook that was in place before (Rust's default prints the
//! message to stderr), as before. A hook the user installs *after* this one replaces it.

use std::cell::Cell;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::thread::JoinHandle;

/// Exit code of a process stopped by a fatal panic or an unrecoverable IO failure (sysexits'
/// EX_SOFTWARE, "internal software error"). Not the worker's "scheduler gone" code (3), so a
/// nanny restarts a worker that exited with it.
pub const EXIT_CODE: i32 = 70;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A thread Zask did not start (or a binary's thread: see `WHOLE_PROCESS`).
    Other,
    /// A thread Zask started: a panic here is fatal.
    Service,
}

thread_local! {
    static ROLE: Cell<Role> = const { Cell::new(Role::Other) };
    /// Set while a user function runs (see [`in_task`]); a counter because calls nest
    /// (`map` calls the mapped function).
    static TASK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Set by [`install_for_process`]: every thread is a service thread.
static WHOLE_PROCESS: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// For the binaries: from now on, a panic anywhere in this process outside a task exits it
/// with [`EXIT_CODE`]. Call it first thing in `main`.
pub fn install_for_process() {
    WHOLE_PROCESS.store(true, Ordering::SeqCst);
    install();
}

/// For the library: a panic on a thread marked as Zask's own exits the process with
/// [`EXIT_CODE`]; other threads keep the previous hook's behaviour. Idempotent.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if is_fatal() {
                die(info);
            }
            previous(info);
        }));
    });
}

/// Marks the calling thread as one of Zask's own: a panic on it ends the process (once
/// [`install`] has run).
pub fn mark_service() {
    ROLE.with(|r| r.set(Role::Service));
}

/// Starts a named thread marked as one of Zask's own.
pub fn spawn_service<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            mark_service();
            f()
        })
}

/// Runs a user function: a panic inside it unwinds normally (to the executor's
/// `catch_unwind`, which makes it the task's error) instead of ending the process.
pub fn in_task<R>(f: impl FnOnce() -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            TASK_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    TASK_DEPTH.with(|d| d.set(d.get() + 1));
    let _leave = Leave;
    f()
}

/// Whether a panic on this thread, now, would end the process.
pub fn is_fatal() -> bool {
    let in_task = TASK_DEPTH.with(|d| d.get() > 0);
    let service = ROLE.with(|r| r.get() == Role::Service);
    !in_task && (service || WHOLE_PROCESS.load(Ordering::SeqCst))
}

/// Stops the process at once because it cannot go on safely (e.g. the journal cannot be
/// written): logs `reason` and exits with [`EXIT_CODE`].
pub fn stop_process(reason: &str) -> ! {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    log::error!("fatal: {reason} (thread {name}); exiting with code {EXIT_CODE}");
    eprintln!("zask: fatal: {reason} (thread {name}); exiting with code {EXIT_CODE}");
    exit_now()
}

fn die(info: &PanicHookInfo<'_>) -> ! {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "an unknown location".into());
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    let backtrace = std::backtrace::Backtrace::capture();
    log::error!(
        "fatal: thread '{name}' panicked at {location}: {message}; exiting with code {EXIT_CODE}"
    );
    // Also straight to stderr, in case logging is not set up (or is filtered out).
    eprintln!(
        "zask: fatal: thread '{name}' panicked at {location}: {message}; exiting with code {EXIT_CODE}"
    );
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        eprintln!("{backtrace}");
    }
    exit_now()
}

fn exit_now() -> ! {
    log::logger().flush();
    // SAFETY: _exit(2) ends the process without running atexit handlers or destructors; it
    // is always safe to call. std::process::exit would run libzmq's static destructors while
    // its IO threads still run, which can crash and hide the exit code.
    unsafe { libc::_exit(EXIT_CODE) }
}
