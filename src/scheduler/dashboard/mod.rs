//! The scheduler's dashboard: an HTTP/1.1 server on its own threads serving a live web page
//! (`/`), Prometheus metrics (`/metrics`), `/health`, the status as JSON (`/api/status`) and
//! server-sent events (`/events`). It never touches the core: while someone reads, the core
//! thread publishes a `Snapshot` every `publish_interval_ms` into a `SnapshotCell` (a pointer
//! swap under a lock held for nothing else), and the HTTP threads read the latest one. `http.rs`: requests,
//! routes, the token; `prometheus.rs`: the text format; `assets/`: the page (plain HTML, CSS
//! and JS, compiled into the binary).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde::Serialize;

use super::core::{CoreMetrics, SchedulerCore};

mod http;
mod prometheus;

pub use prometheus::render as render_metrics;

/// How to run the dashboard (`SchedulerConfig::dashboard`).
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// Interface to listen on. Default 127.0.0.1: the page shows every key and worker, so it
    /// is reachable from other machines only when asked for (`--dashboard-host`).
    pub host: String,
    /// Default 8787 (dask's). 0: any free port. When the port is taken (another scheduler on
    /// this machine), any free port is used instead, with a warning naming it, as dask does:
    /// a dashboard elsewhere beats a scheduler that does not start.
    pub port: u16,
    /// When set, every route but `/health` needs this token, as `?token=` (which also sets a
    /// cookie, so the page's own requests carry it) or as the `zask_dashboard_token` cookie.
    /// `zask-scheduler` sets it when the cluster is secure and `host` is not a loopback
    /// address. Default None.
    pub token: Option<String>,
    /// Connections served at once; one more is answered 503 and closed. Default 32: a few
    /// browsers and a Prometheus scraper, each with a handful of connections.
    pub connections_max: usize,
    /// `/events` streams at once (each holds a connection and a thread); one more is
    /// answered 503. Default 8.
    pub subscribers_max: usize,
    /// How often the core thread publishes a snapshot while someone reads them (none is made
    /// while nobody does). Default 250 ms: a live page for one pass over the tasks four times
    /// a second.
    pub publish_interval_ms: u64,
    /// How often `/events` sends the latest snapshot. Default 500 ms.
    pub events_interval_ms: u64,
    /// A connection that sends no complete request (or does not read its answer) for this
    /// long is closed. Default 10 s.
    pub io_timeout_ms: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            token: None,
            connections_max: 32,
            subscribers_max: 8,
            publish_interval_ms: 250,
            events_interval_ms: 500,
            io_timeout_ms: 10_000,
        }
    }
}

/// The dashboard's default port (dask's).
pub const DEFAULT_PORT: u16 = 8787;

/// The scheduler's recent log lines sent with each snapshot.
pub const LOG_LINES_SHOWN: usize = 100;

/// What the page, `/api/status` and `/metrics` show: the core's figures (`CoreMetrics`,
/// flattened), the scheduler's addresses, its message rate and recent log lines.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub address_to_workers: String,
    pub address_to_clients: String,
    /// Messages handled per second since the previous snapshot (made a publishing interval
    /// earlier while the dashboard is watched).
    pub messages_per_second: f64,
    #[serde(flatten)]
    pub core: CoreMetrics,
    /// The scheduler's recent cluster events (worker lost with what it cost, task rescheduled,
    /// marked bad, worker retired, ...), oldest first, as `zask events` prints them.
    pub events: Vec<String>,
    /// The scheduler process's last `LOG_LINES_SHOWN` log lines, oldest first.
    pub logs: Vec<String>,
}

/// The latest snapshot: written by the core thread, read by the HTTP threads. Snapshots are
/// made only while someone reads them: a reader marks the cell wanted, and one whose
/// snapshot is stale waits (briefly) for the next, so an unwatched dashboard costs the core
/// nothing and a `/metrics` scrape still gets fresh figures.
#[derive(Default)]
pub struct SnapshotCell {
    /// The snapshot and when it was published (None: never).
    latest: Mutex<(Arc<Snapshot>, Option<Instant>)>,
    published: Condvar,
    /// Read since the last publication (or never published).
    wanted: AtomicBool,
}

impl SnapshotCell {
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        // Held only for the swap; a reader that panicked cannot have left it half-written.
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        *latest = (snapshot, Some(Instant::now()));
        // Under the lock: a reader asks (below) either before this or for the next one.
        self.wanted.store(false, Ordering::SeqCst);
        drop(latest);
        self.published.notify_all();
    }

    /// Whether a reader asked since the last publication.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::SeqCst)
    }

    /// The latest snapshot as it is, without asking for a new one.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The latest snapshot, asking for the next one; when it is older than `max_age`, waits up
    /// to `wait` for a newer one (and returns the old one if none comes: the core is busy).
    pub fn fresh(&self, max_age: Duration, wait: Duration) -> Arc<Snapshot> {
        let guard = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        self.wanted.store(true, Ordering::SeqCst);
        let at = guard.1;
        if at.is_some_and(|at| at.elapsed() <= max_age) {
            return guard.0.clone();
        }
        let (guard, _) = self
            .published
            .wait_timeout_while(guard, wait, |(_, published)| *published == at)
            .unwrap_or_else(|e| e.into_inner());
        guard.0.clone()
    }
}

/// The core thread's side: makes a snapshot from the core when one is due.
pub struct Publisher {
    cell: Arc<SnapshotCell>,
    interval_ms: u64,
    address_to_workers: String,
    address_to_clients: String,
    /// When the last snapshot was made (the core thread's clock) and the messages counted then.
    last: Option<(u64, u64)>,
    /// When to look again (whether someone wants a snapshot, and if so make one).
    next_due_ms: u64,
}

impl Publisher {
    pub fn new(
        cell: Arc<SnapshotCell>,
        interval_ms: u64,
        address_to_workers: String,
        address_to_clients: String,
    ) -> Publisher {
        Publisher {
            cell,
            interval_ms: interval_ms.max(1),
            address_to_workers,
            address_to_clients,
            last: None,
            next_due_ms: 0,
        }
    }

    /// When the next snapshot is due.
    pub fn next_due_ms(&self) -> u64 {
        self.next_due_ms
    }

    /// Publishes a snapshot of `core` if one is due at `now_ms` and someone asked for it
    /// since the last (the first is always made).
    pub fn maybe_publish(&mut self, now_ms: u64, core: &SchedulerCore) {
        if now_ms < self.next_due_ms {
            return;
        }
        // Nobody asked: look again an interval later (the core thread sleeps till then).
        self.next_due_ms = now_ms + self.interval_ms;
        if self.last.is_some() && !self.cell.wanted() {
            return;
        }
        let metrics = core.metrics();
        let messages = metrics.counters.messages_total;
        let messages_per_second = match self.last {
            Some((at, before)) if now_ms > at => {
                messages.saturating_sub(before) as f64 * 1000.0 / (now_ms - at) as f64
            }
            _ => 0.0,
        };
        self.last = Some((now_ms, messages));
        let mut logs = crate::logs::recent_lines();
        logs.drain(..logs.len().saturating_sub(LOG_LINES_SHOWN));
        self.cell.publish(Snapshot {
            address_to_workers: self.address_to_workers.clone(),
            address_to_clients: self.address_to_clients.clone(),
            messages_per_second,
            core: metrics,
            events: core.recent_events().iter().map(|e| e.to_string()).collect(),
            logs,
        });
    }
}

/// Why the dashboard could not start.
#[derive(Debug)]
pub struct DashboardError {
    /// The address it tried (`host:port`).
    pub address: String,
    pub error: std::io::Error,
}

impl DashboardError {
    /// A port in use or a lack of threads may pass; a bad address will not.
    pub fn retry_may_help(&self) -> bool {
        use std::io::ErrorKind::*;
        matches!(
            self.error.kind(),
            AddrInUse | WouldBlock | Interrupted | OutOfMemory
        )
    }
}

impl std::fmt::Display for DashboardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dashboard on {}: {}", self.address, self.error)
    }
}

impl std::error::Error for DashboardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A running dashboard server. Dropping it stops it.
pub struct Dashboard {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dashboard {
    /// Binds the port and starts the accept thread, which serves from `cell`.
    pub fn start(
        config: DashboardConfig,
        cell: Arc<SnapshotCell>,
    ) -> Result<Dashboard, DashboardError> {
        let listener = bind(&config.host, config.port)?;
        let address = listener.local_addr().map_err(|error| DashboardError {
            address: format!("{}:{}", config.host, config.port),
            error,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = http::Server::new(config, cell, stop.clone());
        let thread = crate::fatal::spawn_service("zask-sched-dashboard", move || {
            server.accept_loop(listener)
        })
        .map_err(|error| DashboardError {
            address: address.to_string(),
            error,
        })?;
        Ok(Dashboard {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop out of its blocking accept; it sees `stop` and ends. (Its
        // connection threads see it at their next read, write or tick.)
        let wake = match self.address {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            a => a,
        };
        let woken = std::net::TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        if let Some(t) = self.thread.take() {
            if woken {
                let _ = t.join();
            }
            // Else (its own address unreachable: nothing else can reach it either) it is
            // left to end with the process rather than hang the scheduler's shutdown.
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `host:port`; a port in use gives way to any free port, with a warning.
fn bind(host: &str, port: u16) -> Result<TcpListener, DashboardError> {
    let at = |port: u16| {
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    match TcpListener::bind(at(port)) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
            let l = TcpListener::bind(at(0)).map_err(|error| DashboardError {
                address: at(0),
                error,
            })?;
            if let Ok(a) = l.local_addr() {
                warn!("dashboard port {port} is in use; serving the dashboard on {a} instead");
            }
            Ok(l)
        }
        Err(error) => Err(DashboardError {
            address: at(port),
            error,
        }),
    }
}

/// Whether `host` names this machine only (the dashboard needs no token there).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Logs where the dashboard is (never the token: log lines travel to clients and the page).
pub fn log_address(address: SocketAddr, token: bool) {
    if token {
        info!(
            "dashboard at http://{address}/ (it needs its token: open \
             http://{address}/?token=TOKEN)"
        );
    } else {
        info!("dashboard at http://{address}/");
    }
}

/// The file beside the cluster's access files that holds the dashboard's token.
pub const TOKEN_FILE: &str = "dashboard.token";

/// The dashboard's token in `dir` (`TOKEN_FILE`): read when it exists, else made (128 random
/// bits from the kernel, as hex) and written readable by its owner only, so it stays the same
/// across restarts, like the cluster's keys beside it.
pub fn load_or_create_token(dir: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 && t.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Ok(t.trim().to_owned())
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is not a dashboard token (32 hex digits or more): remove it to \
                     make a new one",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    Ok(token)
}

#[cfg(test)]
mod tests;
