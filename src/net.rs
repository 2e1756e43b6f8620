//! Shared ZeroMQ plumbing for the IO layers: socket options, multipart send/receive, waking a
//! poll loop from other threads, endpoint parsing, the clock that feeds the pure cores, and the
//! typed errors of addresses (`AddressError`) and of starting a service (`StartError`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::Frame;

/// Largest message any Zask socket accepts (ZMQ_MAXMSGSIZE): bigger ones are dropped by libzmq
/// before they reach us. Results above this size must be split by the user.
pub const DEFAULT_MAX_MESSAGE_BYTES: i64 = 2 * 1024 * 1024 * 1024 - 1;

/// Milliseconds since a fixed start: the only clock the cores ever see.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Wakes a thread blocked in `zmq::poll` from any other thread. Cheap when called often: only
/// the first wake after the receiver drained writes a byte.
#[derive(Clone)]
pub struct Waker {
    inner: Arc<WakerInner>,
}

struct WakerInner {
    writer: UnixStream,
    pending: AtomicBool,
}

pub struct WakeReceiver {
    reader: UnixStream,
    inner: Arc<WakerInner>,
}

pub fn waker() -> std::io::Result<(Waker, WakeReceiver)> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    let inner = Arc::new(WakerInner {
        writer,
        pending: AtomicBool::new(false),
    });
    Ok((
        Waker {
            inner: inner.clone(),
        },
        WakeReceiver { reader, inner },
    ))
}

impl Waker {
    pub fn wake(&self) {
        if !self.inner.pending.swap(true, Ordering::AcqRel) {
            // A full pipe already means "awake"; nothing else can go wrong worth reporting.
            let _ = (&self.inner.writer).write(&[1]);
        }
    }
}

impl WakeReceiver {
    pub fn fd(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    /// Call before draining the channel the wakes are about. The pipe is emptied before the
    /// flag is cleared: the other order could swallow the byte of a wake that then finds the
    /// flag set, and no later wake would ever write again.
    pub fn reset(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.reader).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        self.inner.pending.store(false, Ordering::Release);
    }
}

/// How long a thread that waits for a message first looks without sleeping, in µs
/// (`ZASK_SPIN_US`, default 100; 0: never). On a virtual machine a CPU that went idle takes
/// hundreds of µs to wake (measured here: a one-task `get` takes 550–660 µs on a quiet machine
/// and 150–230 µs while a spare CPU is kept busy), and a `get` crosses several threads, each
/// of which would otherwise sleep between the request and its answer. Looking for at most
/// this long after each wake-up keeps a request–reply chain on awake CPUs; it yields the CPU
/// between looks, so a thread with real work on the same CPU runs first.
pub fn spin_us() -> u64 {
    static SPIN_US: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SPIN_US.get_or_init(|| {
        std::env::var("ZASK_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Calls `ready` (which must not block) until it gives something or `spin_us` has passed,
/// yielding the CPU between calls; `None` then, for the caller to block.
pub fn spin_until<T>(mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let spin = std::time::Duration::from_micros(spin_us());
    if spin.is_zero() {
        return None;
    }
    let start = Instant::now();
    loop {
        if let Some(t) = ready() {
            return Some(t);
        }
        if start.elapsed() >= spin {
            return None;
        }
        std::thread::yield_now();
    }
}

/// `zmq::poll` that treats an interrupting signal as a wake-up with nothing ready (signal
/// handlers for graceful shutdown make EINTR an ordinary event). A wait first spins for
/// `spin_us`.
pub fn poll(items: &mut [zmq::PollItem], timeout_ms: i64) -> zmq::Result<()> {
    if timeout_ms != 0 {
        let spun = spin_until(|| match zmq::poll(items, 0) {
            Ok(0) => None,
            Ok(_) | Err(zmq::Error::EINTR) => Some(Ok(())),
            Err(e) => Some(Err(e)),
        });
        if let Some(r) = spun {
            return r;
        }
    }
    match zmq::poll(items, timeout_ms) {
        Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `recv_timeout` on a channel that first spins for `spin_us` (see there).
pub fn recv_spinning<T>(
    rx: &crossbeam_channel::Receiver<T>,
    timeout: std::time::Duration,
) -> Result<T, crossbeam_channel::RecvTimeoutError> {
    use crossbeam_channel::{RecvTimeoutError, TryRecvError};
    let spun = spin_until(|| match rx.try_recv() {
        Ok(t) => Some(Ok(t)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
    });
    match spun {
        Some(r) => r,
        None => rx.recv_timeout(timeout),
    }
}

/// High-water mark of sockets whose component has no setting of its own (the nanny's): whole
/// messages queued per connection, each way.
pub const DEFAULT_QUEUE_MAX_MESSAGES: i32 = 1_000;

/// `configure_bounded` with `DEFAULT_QUEUE_MAX_MESSAGES`.
pub fn configure(socket: &zmq::Socket, max_message_bytes: i64) -> zmq::Result<()> {
    configure_bounded(socket, max_message_bytes, DEFAULT_QUEUE_MAX_MESSAGES)
}

/// How long a new connection has to complete the ZeroMQ handshake (ZMQ_HANDSHAKE_IVL) before
/// it is closed: 5 s. A Zask peer, or any ZeroMQ peer, completes it in a few round trips
/// (milliseconds, even on a loaded machine or with CURVE's key exchange); a connection that
/// sends nothing, or bytes that are not a ZeroMQ greeting, never does. libzmq's own default is
/// 30 s, long enough for such connections to pile up. libzmq takes a peer whose first byte is
/// not ZMTP's 0xFF for a ZMTP 1.0 one (no greeting) and decodes what it sends as messages, but
/// it never marks that handshake complete, so this timer closes those connections too.
pub const DEFAULT_HANDSHAKE_MS: i32 = 5_000;

/// Options every Zask socket gets: no lingering at close, a message size limit, a handshake
/// timeout (`DEFAULT_HANDSHAKE_MS`), and a high-water mark: at most `queue_max_messages`
/// whole messages queued per connection in each direction (0 would mean unbounded; Zask never
/// uses it). Each component's config documents its value and what happens when a queue is
/// full.
pub fn configure_bounded(
    socket: &zmq::Socket,
    max_message_bytes: i64,
    queue_max_messages: i32,
) -> zmq::Result<()> {
    socket.set_linger(0)?;
    socket.set_maxmsgsize(max_message_bytes)?;
    socket.set_handshake_ivl(DEFAULT_HANDSHAKE_MS)?;
    let hwm = queue_max_messages.max(1);
    socket.set_rcvhwm(hwm)?;
    socket.set_sndhwm(hwm)?;
    Ok(())
}

/// Sends `[identity?, header, frames...]` as one multipart message.
pub fn send(
    socket: &zmq::Socket,
    identity: Option<&[u8]>,
    header: Frame,
    frames: Vec<Frame>,
) -> zmq::Result<()> {
    send_multipart(socket, identity, header, frames, |f, flags| {
        socket.send(zmq::Message::from(f), flags)
    })
}

/// `[identity?, header, frames...]` as one multipart message, never blocking; each of
/// `frames` goes through `send_frame` with its flags.
fn send_multipart<F>(
    socket: &zmq::Socket,
    identity: Option<&[u8]>,
    header: Frame,
    frames: Vec<F>,
    mut send_frame: impl FnMut(F, i32) -> zmq::Result<()>,
) -> zmq::Result<()> {
    if let Some(id) = identity {
        socket.send(id, zmq::SNDMORE | zmq::DONTWAIT)?;
    }
    let more = if frames.is_empty() { 0 } else { zmq::SNDMORE };
    socket.send(header, more | zmq::DONTWAIT)?;
    let n = frames.len();
    for (i, f) in frames.into_iter().enumerate() {
        let flag = if i + 1 == n { 0 } else { zmq::SNDMORE };
        send_frame(f, flag | zmq::DONTWAIT)?;
    }
    Ok(())
}

/// Sends `[identity?, header, values...]` as one multipart message, each value frame handed
/// to ZeroMQ without a copy: `Bytes` is reference-counted, so ZeroMQ holds a count of the
/// buffer (a stored value's, or a slice of it) until its IO thread has written the frame, then
/// drops it, on whatever thread that is (`Bytes` is `Send + Sync`). The zmq crate can only
/// take over a `Box<[u8]>` without copying (`zmq::Message: From<Box<[u8]>>`), which a value
/// that stays stored is not, hence `zmq_msg_init_data` with a drop function of our own.
pub fn send_shared(
    socket: &mut zmq::Socket,
    identity: Option<&[u8]>,
    header: Frame,
    frames: Vec<zask_storage::Bytes>,
) -> zmq::Result<()> {
    let raw = socket.as_mut_ptr();
    send_multipart(socket, identity, header, frames, |f, flags| {
        send_bytes(raw, f, flags)
    })
}

/// Drops the `Box<Bytes>` whose pointer `hint` is: ZeroMQ calls it once it no longer needs a
/// frame made by `send_bytes`.
unsafe extern "C" fn drop_bytes(_data: *mut std::ffi::c_void, hint: *mut std::ffi::c_void) {
    // SAFETY: `hint` is the `Box::into_raw` of `send_bytes`, and ZeroMQ calls this once.
    drop(unsafe { Box::from_raw(hint as *mut zask_storage::Bytes) });
}

/// One frame of `data` on the socket `raw`, without copying it (see `send_shared`).
fn send_bytes(
    raw: *mut std::ffi::c_void,
    data: zask_storage::Bytes,
    flags: i32,
) -> zmq::Result<()> {
    let len = data.len();
    let owner = Box::into_raw(Box::new(data));
    let mut msg = std::mem::MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
    // SAFETY: `owner` stays alive until ZeroMQ calls `drop_bytes` (on success of the init,
    // exactly once: after the send, or at the close below when the send fails); the buffer
    // it points to is never written (ZeroMQ does not modify a message it sends) and does not
    // move (a `Bytes`' data is on the heap or static). On an init failure ZeroMQ took nothing
    // and the box is dropped here.
    unsafe {
        let ptr = (*owner).as_ptr() as *mut std::ffi::c_void;
        let rc = zmq_sys::zmq_msg_init_data(
            msg.as_mut_ptr(),
            ptr,
            len,
            Some(drop_bytes),
            owner as *mut std::ffi::c_void,
        );
        if rc == -1 {
            let e = zmq::Error::from_raw(zmq_sys::zmq_errno());
            drop(Box::from_raw(owner));
            return Err(e);
        }
        if zmq_sys::zmq_msg_send(msg.as_mut_ptr(), raw, flags) == -1 {
            let e = zmq::Error::from_raw(zmq_sys::zmq_errno());
            zmq_sys::zmq_msg_close(msg.as_mut_ptr());
            return Err(e);
        }
    }
    Ok(())
}

/// Receives one multipart message if one is waiting, as ZeroMQ's own buffers (nothing
/// copied: for a decoder that copies each byte once into where it belongs).
pub fn try_recv_parts(socket: &zmq::Socket) -> Option<Vec<zmq::Message>> {
    let mut parts = Vec::new();
    loop {
        let mut part = zmq::Message::new();
        match socket.recv(&mut part, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) if parts.is_empty() => return None,
            Err(e) => {
                log::warn!("receive failed: {e}");
                return None;
            }
        }
        let more = part.get_more();
        parts.push(part);
        if !more {
            return Some(parts);
        }
    }
}

/// Like [`try_recv`], with the user id the socket's ZAP handler gave the sender's connection
/// (`crate::security`: its role), None on a socket without authentication.
pub fn try_recv_with_user(socket: &zmq::Socket) -> Option<(Vec<Frame>, Option<String>)> {
    let mut parts = try_recv_parts(socket)?;
    // Every part of a message comes from the same connection: one lookup, on the last.
    let user = parts.last_mut()?.gets("User-Id").map(str::to_owned);
    Some((parts.iter().map(|p| p.to_vec()).collect(), user))
}

/// Receives one multipart message if one is waiting.
pub fn try_recv(socket: &zmq::Socket) -> Option<Vec<Frame>> {
    match socket.recv_multipart(zmq::DONTWAIT) {
        Ok(frames) => Some(frames),
        Err(zmq::Error::EAGAIN) => None,
        Err(e) => {
            log::warn!("receive failed: {e}");
            None
        }
    }
}

/// A `tcp://host:port` endpoint, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `tcp://HOST:PORT` (PORT from 0 to 65535, HOST not empty).
    pub fn parse(s: &str) -> Result<Endpoint, AddressError> {
        let invalid = |problem| AddressError {
            address: s.to_owned(),
            problem,
        };
        let rest = s
            .strip_prefix("tcp://")
            .ok_or_else(|| invalid(AddressProblem::NotTcp))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(AddressProblem::NoPort))?;
        if host.is_empty() {
            return Err(invalid(AddressProblem::EmptyHost));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(AddressProblem::BadPort(port.to_owned())))?;
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.starts_with("127.") || self.host == "[::1]"
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tcp://{}:{}", self.host, self.port)
    }
}

/// A `tcp://HOST:PORT` address that does not parse. Retrying with the same text never helps
/// (`retry_may_help` is false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError {
    /// The address exactly as given.
    pub address: String,
    pub problem: AddressProblem,
}

/// What is wrong with an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressProblem {
    /// It does not start with `tcp://`.
    NotTcp,
    /// No `:PORT` after the host.
    NoPort,
    /// Nothing between `tcp://` and `:PORT`.
    EmptyHost,
    /// The port (as written) is not a number from 0 to 65535.
    BadPort(String),
}

impl AddressError {
    /// Whether the same address can parse later: never.
    pub fn retry_may_help(&self) -> bool {
        false
    }
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = &self.address;
        match &self.problem {
            AddressProblem::NotTcp | AddressProblem::NoPort => {
                write!(f, "invalid address {address:?}: expected tcp://HOST:PORT")
            }
            AddressProblem::EmptyHost => {
                write!(f, "invalid address {address:?}: the host is empty")
            }
            AddressProblem::BadPort(port) => write!(
                f,
                "invalid address {address:?}: port {port:?} is not a number from 0 to 65535"
            ),
        }
    }
}

impl std::error::Error for AddressError {}

/// Why a service (`Worker::start`, and `Scheduler::start` apart from its journal) could not
/// start. Each variant says
/// whether starting again unchanged can help (`retry_may_help`), as `StoreError` does.
#[derive(Debug)]
pub enum StartError {
    /// An address in the configuration does not parse: fix it, retrying will not help.
    Address(AddressError),
    /// Listening on `endpoint` failed. `EADDRINUSE` (another process holds the port) may pass
    /// once that process exits; anything else (no such interface, permission) will not.
    Bind { endpoint: String, error: zmq::Error },
    /// Connecting to `address` was refused by ZeroMQ (a malformed or unsupported endpoint):
    /// retrying will not help. (An unreachable peer is not an error here: ZeroMQ connects in
    /// the background.)
    Connect { address: String, error: zmq::Error },
    /// A socket, a waker or another OS resource could not be made or set up (`what` says
    /// which step), usually for lack of file descriptors or memory: may pass.
    Resource {
        what: &'static str,
        error: std::io::Error,
    },
    /// The worker's result store could not be opened: its own `retry_may_help` decides.
    Store(zask_storage::StoreError),
    /// The sockets could not be secured (an access file of the wrong role, no CURVE): its own
    /// `retry_may_help` decides.
    Security(crate::security::SecurityError),
}

impl StartError {
    /// A failed step making or setting up a socket (or another OS resource).
    pub fn socket(what: &'static str, error: zmq::Error) -> StartError {
        StartError::Resource {
            what,
            error: error.into(),
        }
    }

    /// A failed step making a waker (or another OS resource).
    pub fn resource(what: &'static str, error: std::io::Error) -> StartError {
        StartError::Resource { what, error }
    }

    /// Whether starting again, unchanged, can succeed later.
    pub fn retry_may_help(&self) -> bool {
        match self {
            StartError::Address(_) | StartError::Connect { .. } => false,
            StartError::Bind { error, .. } => *error == zmq::Error::EADDRINUSE,
            StartError::Resource { .. } => true,
            StartError::Store(e) => e.retry_may_help(),
            StartError::Security(e) => e.retry_may_help(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Address(e) => write!(f, "{e}"),
            StartError::Bind { endpoint, error } => {
                write!(f, "cannot listen on {endpoint}: {error}")
            }
            StartError::Connect { address, error } => {
                write!(f, "cannot connect to {address}: {error}")
            }
            StartError::Resource { what, error } => write!(f, "{what}: {error}"),
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Security(e) => write!(f, "security: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Address(e) => Some(e),
            StartError::Bind { error, .. } | StartError::Connect { error, .. } => Some(error),
            StartError::Resource { error, .. } => Some(error),
            StartError::Store(e) => Some(e),
            StartError::Security(e) => Some(e),
        }
    }
}

impl From<AddressError> for StartError {
    fn from(e: AddressError) -> Self {
        StartError::Address(e)
    }
}

impl From<zask_storage::StoreError> for StartError {
    fn from(e: zask_storage::StoreError) -> Self {
        StartError::Store(e)
    }
}

/// Binds `socket` on `host` and `port` (0: any free port) and returns the address others reach
/// it at. A wildcard host is advertised as this machine's hostname.
pub fn bind(socket: &zmq::Socket, host: &str, port: u16) -> Result<String, StartError> {
    let port_part = if port == 0 {
        "*".to_owned()
    } else {
        port.to_string()
    };
    let bind_host = if host == "0.0.0.0" { "*" } else { host };
    let endpoint = format!("tcp://{bind_host}:{port_part}");
    socket.bind(&endpoint).map_err(|error| StartError::Bind {
        endpoint: endpoint.clone(),
        error,
    })?;
    let last = socket
        .get_last_endpoint()
        .map_err(|e| StartError::socket("reading the bound endpoint", e))?
        .map_err(|_| {
            StartError::socket("reading the bound endpoint (not UTF-8)", zmq::Error::EINVAL)
        })?;
    let bound = Endpoint::parse(&last)?;
    let advertised = if bind_host == "*" {
        hostname()
    } else {
        host.to_owned()
    };
    Ok(format!("tcp://{advertised}:{}", bound.port))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A fresh unpredictable 64-bit token: std's per-process random hash keys, mixed with the clock
/// and the pid. Used where a value must not be guessed from outside or repeat across processes
/// (a nanny's token for its worker, a scheduler process's instance token).
pub fn unpredictable_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A routing identity unlikely to collide with any other process's.
pub fn unique_identity(prefix: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id()).into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn spinning_gives_what_is_ready_and_gives_up_on_what_is_not() {
        if super::spin_us() == 0 {
            return; // ZASK_SPIN_US=0 in this environment: nothing spins
        }
        // The first look is made before any clock is read: what is ready is always seen.
        assert_eq!(super::spin_until(|| Some("ready")), Some("ready"));
        assert_eq!(super::spin_until(|| None::<()>), None);
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(7).unwrap();
        let wait = std::time::Duration::from_secs(5);
        assert_eq!(super::recv_spinning(&rx, wait), Ok(7));
        drop(tx);
        assert_eq!(
            super::recv_spinning(&rx, wait),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
    }

    use super::*;

    #[test]
    fn endpoints_parse_with_clear_errors() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:4444"),
            Ok(Endpoint {
                host: "127.0.0.1".into(),
                port: 4444
            })
        );
        let err = Endpoint::parse("127.0.0.1:4444").unwrap_err();
        assert_eq!(err.problem, AddressProblem::NotTcp);
        assert!(err.to_string().contains("tcp://"), "{err}");
        assert!(!err.retry_may_help());
        let err = Endpoint::parse("tcp://h:99999").unwrap_err();
        assert_eq!(err.problem, AddressProblem::BadPort("99999".into()));
        assert!(err.to_string().contains("99999"), "{err}");
        assert_eq!(
            Endpoint::parse("tcp://:1").unwrap_err().problem,
            AddressProblem::EmptyHost
        );
        assert_eq!(
            Endpoint::parse("tcp://h").unwrap_err().problem,
            AddressProblem::NoPort
        );
    }

    #[test]
    fn a_port_in_use_is_a_bind_error_worth_retrying_a_bad_address_is_not() {
        let ctx = zmq::Context::new();
        let first = ctx.socket(zmq::ROUTER).unwrap();
        let address = bind(&first, "127.0.0.1", 0).unwrap();
        let port = Endpoint::parse(&address).unwrap().port;
        let second = ctx.socket(zmq::ROUTER).unwrap();
        let err = bind(&second, "127.0.0.1", port).unwrap_err();
        assert!(
            matches!(&err, StartError::Bind { error, .. } if *error == zmq::Error::EADDRINUSE),
            "{err:?}"
        );
        assert!(err.retry_may_help(), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
        let err = StartError::from(Endpoint::parse("udp://x:1").unwrap_err());
        assert!(!err.retry_may_help(), "{err}");
    }

    #[test]
    fn no_wake_is_lost_under_concurrent_producers() {
        let (w, r) = waker().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let (w, tx) = (w.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        tx.send(p * 100_000 + i).unwrap();
                        w.wake();
                    }
                })
            })
            .collect();
        let mut received = 0;
        while received < 80_000 {
            let mut items = [zmq::PollItem::from_fd(r.fd(), zmq::POLLIN)];
            // A lost wake leaves items in the channel with nothing readable: fail, don't hang.
            let ready = zmq::poll(&mut items, 5_000).unwrap();
            assert!(
                ready == 1 || !rx.is_empty(),
                "wake lost with {received} received"
            );
            r.reset();
            received += rx.try_iter().count();
        }
        for p in producers {
            p.join().unwrap();
        }
    }

    #[test]
    fn waker_wakes_and_resets() {
        let (w, r) = waker().unwrap();
        w.wake();
        w.wake();
        let mut items = [zmq::PollItem::from_fd(r.fd(), zmq::POLLIN)];
        assert_eq!(zmq::poll(&mut items, 1000).unwrap(), 1);
        r.reset();
        let mut items = [zmq::PollItem::from_fd(r.fd(), zmq::POLLIN)];
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0);
    }
}
