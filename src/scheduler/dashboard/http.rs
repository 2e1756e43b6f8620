//! The dashboard's HTTP/1.1 server: an accept loop and at most `connections_max` connection
//! threads, one request per connection (`Connection: close`). Requests are parsed with
//! `httparse`, bounded in size and time; anything malformed is answered 400 (or 404, 405, 431),
//! never a panic. `route` is pure: a request and the latest snapshot in, a response out.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};

use super::{DashboardConfig, Snapshot, SnapshotCell};

/// The most bytes of a request's head (request line and headers) read; more is answered 431.
pub(super) const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// The most headers a request may have.
const HEADERS_MAX: usize = 64;
/// The cookie that carries the token once a `?token=` URL was opened.
pub(super) const TOKEN_COOKIE: &str = "zask_dashboard_token";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
}

/// A request as the routes need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub method: Method,
    /// Without the query.
    pub path: String,
    /// `token=` from the query, if any.
    pub query_token: Option<String>,
    /// The token cookie, if any.
    pub cookie_token: Option<String>,
    /// The Host header, if any (and if UTF-8).
    pub host: Option<String>,
}

/// A response with its whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines (without CRLF).
    pub headers: Vec<String>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    /// The bytes to send (the head only, for HEAD).
    pub(super) fn encode(&self, method: Method) -> Vec<u8> {
        let mut out = head(self.status, self.content_type, &self.headers);
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        if method == Method::Get {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// What a route answers: a whole response, or the start of an event stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Full(Response),
    Events { headers: Vec<String> },
}

/// Why a request's head could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    /// Not HTTP/1.x as httparse reads it (400).
    Malformed,
    /// A method other than GET and HEAD (405).
    Method,
    /// The head is larger than `REQUEST_HEAD_BYTES_MAX` or has too many headers (431).
    TooLarge,
}

impl ParseError {
    fn response(&self) -> Response {
        match self {
            ParseError::Malformed => Response::text(400, "bad request"),
            ParseError::Method => {
                let mut r = Response::text(405, "only GET and HEAD");
                r.headers.push("Allow: GET, HEAD".into());
                r
            }
            ParseError::TooLarge => Response::text(431, "request head too large"),
        }
    }
}

/// Parses a request head from `buf`: `Ok(None)` when more bytes are needed.
pub(super) fn parse_request(buf: &[u8]) -> Result<Option<Request>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() >= REQUEST_HEAD_BYTES_MAX => {
            return Err(ParseError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooLarge),
        Err(_) => return Err(ParseError::Malformed),
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => return Err(ParseError::Method),
    };
    let target = req.path.ok_or(ParseError::Malformed)?;
    if !target.starts_with('/') {
        return Err(ParseError::Malformed);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query_token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned);
    let cookie_token = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then(|| value.to_owned())
        });
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(|h| h.trim().to_owned());
    Ok(Some(Request {
        method,
        path: path.to_owned(),
        query_token,
        cookie_token,
        host,
    }))
}

/// Compares in time independent of where the strings differ.
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a Host header may name a dashboard that needs no token: an address, or
/// `localhost`. A web page elsewhere can make a browser send requests to this machine under
/// the page's own domain name (DNS rebinding); such a request names that domain, and is
/// refused, so the open dashboard is readable only by whoever typed its address.
pub(super) fn host_allowed(host: Option<&str>) -> bool {
    let Some(host) = host else {
        // Browsers always send Host; a program that does not is no rebound page.
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
}

/// Who may read the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guard<'a> {
    /// On loopback without a token: requests must name it by address or as localhost
    /// (`host_allowed`).
    LocalNames,
    /// Requests must carry this token.
    Token(&'a str),
    /// Anyone who reaches it: an insecure cluster's dashboard on a reachable address.
    Open,
}

impl<'a> Guard<'a> {
    pub(super) fn of(config: &'a DashboardConfig) -> Guard<'a> {
        match &config.token {
            Some(t) => Guard::Token(t),
            None if super::is_loopback(&config.host) => Guard::LocalNames,
            None => Guard::Open,
        }
    }
}

/// Answers `req` from `snapshot`, after `guard`'s check.
pub(super) fn route(req: &Request, guard: Guard, snapshot: &Snapshot) -> Reply {
    if req.path == "/health" {
        return Reply::Full(Response::text(200, "ok"));
    }
    let token = match guard {
        Guard::Token(t) => Some(t),
        _ => None,
    };
    if guard == Guard::LocalNames && !host_allowed(req.host.as_deref()) {
        return Reply::Full(Response::text(
            403,
            "this dashboard answers only requests naming it by address or as localhost \
             (Host header); open it as http://127.0.0.1:PORT/ or http://localhost:PORT/",
        ));
    }
    let mut headers = Vec::new();
    if let Some(expected) = token {
        let by_query = req
            .query_token
            .as_deref()
            .is_some_and(|t| same_token(t, expected));
        let by_cookie = req
            .cookie_token
            .as_deref()
            .is_some_and(|t| same_token(t, expected));
        if !by_query && !by_cookie {
            return Reply::Full(Response::text(
                401,
                "this dashboard needs its token: open the URL the scheduler logged \
                 (http://HOST:PORT/?token=...), or read the token from dashboard.token \
                 beside the cluster's access files",
            ));
        }
        if by_query {
            headers.push(format!(
                "Set-Cookie: {TOKEN_COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict"
            ));
        }
    }
    let mut response = match req.path.as_str() {
        "/" | "/index.html" => Response::new(200, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => Response::new(200, "text/javascript; charset=utf-8", APP_JS),
        "/style.css" => Response::new(200, "text/css; charset=utf-8", STYLE_CSS),
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            super::prometheus::render(snapshot),
        ),
        "/api/status" => match serde_json::to_vec(snapshot) {
            Ok(body) => Response::new(200, "application/json", body),
            Err(e) => Response::text(500, &format!("encoding the status: {e}")),
        },
        "/events" => return Reply::Events { headers },
        _ => Response::text(404, "not found"),
    };
    response.headers.extend(headers);
    Reply::Full(response)
}

/// A response head up to (not including) its Content-Length and final blank line.
fn head(status: u16, content_type: &str, extra: &[String]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\n\
         Connection: close\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'self'\r\n"
    );
    for h in extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The accept loop and what its connection threads share.
pub(super) struct Server {
    config: DashboardConfig,
    cell: Arc<SnapshotCell>,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    subscribers: Arc<AtomicUsize>,
}

/// Gives back a counted slot when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a slot of `count` if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    pub(super) fn new(
        config: DashboardConfig,
        cell: Arc<SnapshotCell>,
        stop: Arc<AtomicBool>,
    ) -> Server {
        Server {
            config,
            cell,
            stop,
            connections: Arc::new(AtomicUsize::new(0)),
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn accept_loop(self, listener: TcpListener) {
        let this = Arc::new(self);
        for stream in listener.incoming() {
            if this.stop.load(Ordering::SeqCst) {
                return;
            }
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept: the next
                    // one may do better; a short pause keeps a persistent error from spinning.
                    debug!("dashboard: accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let timeout = Some(Duration::from_millis(this.config.io_timeout_ms.max(1)));
            let _ = stream.set_read_timeout(timeout);
            let _ = stream.set_write_timeout(timeout);
            let Some(slot) = Slot::take(&this.connections, this.config.connections_max) else {
                let busy = Response::text(503, "too many connections; try again");
                let _ = stream.write_all(&busy.encode(Method::Get));
                continue;
            };
            let server = this.clone();
            let spawned = crate::fatal::spawn_service("zask-sched-dashboard-conn", move || {
                server.serve(&mut stream);
                // The slot first: once the peer sees the connection close, it is free.
                drop(slot);
                drop(stream);
            });
            if let Err(e) = spawned {
                warn!("dashboard: cannot start a connection thread: {e}");
            }
        }
    }

    /// The latest snapshot, waiting (at most a second) for a new one when it is older than
    /// two publishing intervals (nobody watched: the core made none meanwhile).
    fn fresh(&self) -> Arc<Snapshot> {
        let interval = Duration::from_millis(self.config.publish_interval_ms.max(1));
        self.cell.fresh(interval * 2, Duration::from_secs(1))
    }

    /// Reads one request from `stream` and answers it.
    fn serve(&self, stream: &mut TcpStream) {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let req = loop {
            match parse_request(&buf) {
                Ok(Some(req)) => break req,
                Ok(None) => {}
                Err(e) => {
                    let _ = stream.write_all(&e.response().encode(Method::Get));
                    return;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    let room = REQUEST_HEAD_BYTES_MAX - buf.len().min(REQUEST_HEAD_BYTES_MAX);
                    buf.extend_from_slice(&chunk[..n.min(room.max(1))]);
                }
                // Timed out or reset: nobody to answer.
                Err(_) => return,
            }
        };
        // Only what shows the cluster asks for a new snapshot (and may wait for it).
        let snapshot = match req.path.as_str() {
            "/metrics" | "/api/status" | "/events" => self.fresh(),
            _ => self.cell.latest(),
        };
        match route(&req, Guard::of(&self.config), &snapshot) {
            Reply::Full(response) => {
                let _ = stream.write_all(&response.encode(req.method));
            }
            Reply::Events { headers } => self.events(stream, req.method, headers),
        }
    }

    /// Streams the latest snapshot every `events_interval_ms` until the peer goes away or
    /// the scheduler stops.
    fn events(&self, stream: &mut TcpStream, method: Method, headers: Vec<String>) {
        let Some(_slot) = Slot::take(&self.subscribers, self.config.subscribers_max) else {
            let busy = Response::text(503, "too many event subscribers; try again");
            let _ = stream.write_all(&busy.encode(method));
            return;
        };
        let mut out = head(200, "text/event-stream", &headers);
        out.extend_from_slice(b"\r\n");
        if stream.write_all(&out).is_err() || method == Method::Head {
            return;
        }
        // The body ends with the connection (Connection: close, no length).
        if stream.write_all(b"retry: 2000\n\n").is_err() {
            return;
        }
        let tick = Duration::from_millis(50);
        let interval = Duration::from_millis(self.config.events_interval_ms.max(1));
        loop {
            let json = match serde_json::to_string(&*self.fresh()) {
                Ok(j) => j,
                Err(e) => {
                    warn!("dashboard: encoding a snapshot: {e}");
                    return;
                }
            };
            let event = format!("data: {json}\n\n");
            if stream.write_all(event.as_bytes()).is_err() || stream.flush().is_err() {
                return;
            }
            let mut waited = Duration::ZERO;
            while waited < interval {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(tick.min(interval - waited));
                waited += tick;
            }
        }
    }
}
