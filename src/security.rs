//! Who may talk to a Zask cluster: CurveZMQ on every socket (encryption, and authentication of
//! both ends) with keys the scheduler makes, and roles read from the key a peer presents.
//!
//! A cluster has five key pairs ([`ClusterKeys`]): the scheduler's (its two ports are CURVE
//! servers), the workers' peer ports' (one pair all workers share), and one pair per role a
//! connecting peer may have — worker, client, operator. A peer gets an [`Access`] (an access
//! file, mode 0600): the public keys of the servers it talks to and its own role's key pair.
//! The scheduler's ZAP handler ([`ZapHandler`]) accepts on its worker port only the worker key
//! and on its client port only the client and operator keys, and names the role as the
//! connection's ZeroMQ user id; a worker's ZAP handler accepts on its peer port only the
//! worker key. What each role may do beyond connecting is the scheduler core's business
//! (`ClientRole`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{debug, warn};
use serde::{Deserialize, Serialize};

/// What a key is for: which port accepts it, and what its holder may do there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Registers on the worker port, fetches from peers.
    Worker,
    /// Submits, gathers, scatters; releases and deletes only what it owns.
    Client,
    /// A client that may also restart the cluster and release or delete anything.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
            Role::Operator => "operator",
        }
    }

    /// The role a ZAP user id names (the handler's own reply), if any.
    pub fn from_user_id(user: &str) -> Option<Role> {
        [Role::Worker, Role::Client, Role::Operator]
            .into_iter()
            .find(|r| r.as_str() == user)
    }

    /// The file an access of this role is written to, beside the cluster's keys.
    pub fn access_file_name(self) -> String {
        format!("{}.access", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CURVE key pair, Z85-encoded (40 characters each).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    pub public: String,
    pub secret: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        write!(f, "KeyPair {{ public: {} }}", self.public)
    }
}

impl KeyPair {
    /// A fresh pair from libzmq (libsodium's random source).
    pub fn generate() -> Result<KeyPair, SecurityError> {
        let pair = zmq::CurveKeyPair::new().map_err(|_| SecurityError::CurveUnavailable)?;
        let encode = |k: &[u8; 32]| zmq::z85_encode(k).map_err(|_| SecurityError::CurveUnavailable);
        Ok(KeyPair {
            public: encode(&pair.public_key)?,
            secret: encode(&pair.secret_key)?,
        })
    }

    fn check(&self, what: &str) -> Result<(), String> {
        for (name, key) in [("public", &self.public), ("secret", &self.secret)] {
            decode_key(key).ok_or_else(|| format!("{what}.{name} is not a Z85 CURVE key"))?;
        }
        Ok(())
    }
}

/// The 32 bytes of a Z85-encoded key, if it is one.
fn decode_key(z85: &str) -> Option<[u8; 32]> {
    let bytes = zmq::z85_decode(z85).ok()?;
    bytes.try_into().ok()
}

/// Every key of a cluster; only the scheduler holds this (mode 0600).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterKeys {
    pub scheduler: KeyPair,
    pub peers: KeyPair,
    pub worker: KeyPair,
    pub client: KeyPair,
    pub operator: KeyPair,
}

impl ClusterKeys {
    /// Fresh keys for a new cluster.
    pub fn generate() -> Result<ClusterKeys, SecurityError> {
        Ok(ClusterKeys {
            scheduler: KeyPair::generate()?,
            peers: KeyPair::generate()?,
            worker: KeyPair::generate()?,
            client: KeyPair::generate()?,
            operator: KeyPair::generate()?,
        })
    }

    /// The keys at `path`, or new ones written there (mode 0600) if there is no file yet;
    /// either way the three access files are (re)written beside it. Returns the keys and
    /// whether they were made now.
    pub fn load_or_create(path: &Path) -> Result<(ClusterKeys, bool), SecurityError> {
        let (keys, created) = if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| SecurityError::io(path, e))?;
            let keys: ClusterKeys =
                serde_json::from_str(&text).map_err(|e| SecurityError::malformed(path, e))?;
            for (what, pair) in keys.pairs() {
                pair.check(what)
                    .map_err(|why| SecurityError::malformed(path, why))?;
            }
            (keys, false)
        } else {
            let keys = ClusterKeys::generate()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| SecurityError::io(dir, e))?;
            }
            write_private(
                path,
                &serde_json::to_string_pretty(&keys).expect("keys encode"),
            )?;
            (keys, true)
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        for role in [Role::Worker, Role::Client, Role::Operator] {
            keys.access(role)
                .write(&dir.join(role.access_file_name()))?;
        }
        Ok((keys, created))
    }

    fn pairs(&self) -> [(&'static str, &KeyPair); 5] {
        [
            ("scheduler", &self.scheduler),
            ("peers", &self.peers),
            ("worker", &self.worker),
            ("client", &self.client),
            ("operator", &self.operator),
        ]
    }

    /// What a peer of `role` needs to connect.
    pub fn access(&self, role: Role) -> Access {
        Access {
            role,
            scheduler_public: self.scheduler.public.clone(),
            key: match role {
                Role::Worker => self.worker.clone(),
                Role::Client => self.client.clone(),
                Role::Operator => self.operator.clone(),
            },
            // Only workers serve and fetch data on peer ports.
            peers: (role == Role::Worker).then(|| self.peers.clone()),
        }
    }

    /// Which public key has which role, as the scheduler's ZAP handler checks them.
    pub fn scheduler_zap(&self) -> ZapPolicy {
        let mut policy = ZapPolicy::default();
        policy.allow(WORKERS_DOMAIN, &self.worker.public, Role::Worker);
        policy.allow(CLIENTS_DOMAIN, &self.client.public, Role::Client);
        policy.allow(CLIENTS_DOMAIN, &self.operator.public, Role::Operator);
        policy
    }
}

/// Writes `text` to `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), SecurityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SecurityError::io(path, e))?;
    // An existing file keeps its mode on open: make sure it is private.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| SecurityError::io(path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| SecurityError::io(path, e))
}

/// What one peer needs to connect: the servers' public keys and its role's key pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Access {
    pub role: Role,
    /// The scheduler's public key (both its ports).
    pub scheduler_public: String,
    /// This role's key pair.
    pub key: KeyPair,
    /// Workers only: the peer ports' key pair (a worker serves with it and checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<KeyPair>,
}

/// The environment variable naming an access file, for workers, clients and `zask`.
pub const ACCESS_FILE_ENV: &str = "ZASK_ACCESS_FILE";

impl Access {
    /// Reads an access file.
    pub fn read(path: &Path) -> Result<Access, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecurityError::io(path, e))?;
        let access: Access =
            serde_json::from_str(&text).map_err(|e| SecurityError::malformed(path, e))?;
        access
            .key
            .check("key")
            .map_err(|why| SecurityError::malformed(path, why))?;
        decode_key(&access.scheduler_public).ok_or_else(|| {
            SecurityError::malformed(path, "scheduler_public is not a Z85 CURVE key")
        })?;
        if let Some(peers) = &access.peers {
            peers
                .check("peers")
                .map_err(|why| SecurityError::malformed(path, why))?;
        }
        Ok(access)
    }

    /// Reads an access file and checks it is for one of `roles`.
    pub fn read_for(path: &Path, roles: &[Role]) -> Result<Access, SecurityError> {
        let access = Access::read(path)?;
        if !roles.contains(&access.role) {
            return Err(SecurityError::WrongRole {
                path: path.to_owned(),
                got: access.role,
                expected: roles.to_vec(),
            });
        }
        if access.role == Role::Worker && access.peers.is_none() {
            return Err(SecurityError::malformed(
                path,
                "a worker's access has no peers key",
            ));
        }
        Ok(access)
    }

    /// Writes it (mode 0600).
    pub fn write(&self, path: &Path) -> Result<(), SecurityError> {
        write_private(
            path,
            &serde_json::to_string_pretty(self).expect("access encodes"),
        )
    }

    /// The access file to use when none is given: `$ZASK_ACCESS_FILE`, else
    /// `~/.zask/<role>.access` (where a `zask-scheduler` with the default `--security-file`
    /// writes them).
    pub fn default_path(role: Role) -> PathBuf {
        match std::env::var_os(ACCESS_FILE_ENV) {
            Some(p) => PathBuf::from(p),
            None => default_dir().join(role.access_file_name()),
        }
    }
}

/// `~/.zask`, where a scheduler keeps its keys by default.
pub fn default_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".zask")
}

/// The scheduler's keys file when `--security-file` is not given.
pub fn default_keys_path() -> PathBuf {
    default_dir().join("cluster.keys")
}

/// Why security could not be set up. `retry_may_help` says whether trying again unchanged
/// can succeed.
#[derive(Debug)]
pub enum SecurityError {
    /// A key or access file could not be read or written.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A key or access file is not one Zask wrote.
    Malformed { path: PathBuf, why: String },
    /// An access file of another role (a client's given to a worker...).
    WrongRole {
        path: PathBuf,
        got: Role,
        expected: Vec<Role>,
    },
    /// This libzmq has no CURVE (built without libsodium).
    CurveUnavailable,
    /// A socket refused a security option.
    Socket {
        what: &'static str,
        error: zmq::Error,
    },
}

impl SecurityError {
    fn io(path: &Path, error: std::io::Error) -> SecurityError {
        SecurityError::Io {
            path: path.to_owned(),
            error,
        }
    }

    fn malformed(path: &Path, why: impl fmt::Display) -> SecurityError {
        SecurityError::Malformed {
            path: path.to_owned(),
            why: why.to_string(),
        }
    }

    /// Only a file that could not be read (not there yet, a full disk) may work next time.
    pub fn retry_may_help(&self) -> bool {
        matches!(self, SecurityError::Io { .. })
    }
}

impl fmt::Display for SecurityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecurityError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            SecurityError::Malformed { path, why } => {
                write!(
                    f,
                    "{} is not a Zask key or access file: {why}",
                    path.display()
                )
            }
            SecurityError::WrongRole {
                path,
                got,
                expected,
            } => {
                let expected: Vec<&str> = expected.iter().map(|r| r.as_str()).collect();
                write!(
                    f,
                    "{} is a {got}'s access file; this needs a {}'s",
                    path.display(),
                    expected.join(" or ")
                )
            }
            SecurityError::CurveUnavailable => write!(
                f,
                "this libzmq has no CURVE (built without libsodium); install Debian's \
                 libzmq3-dev and build again, or run with --insecure"
            ),
            SecurityError::Socket { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for SecurityError {}

/// The ZAP domain of the scheduler's worker port.
pub const WORKERS_DOMAIN: &str = "zask-workers";
/// The ZAP domain of the scheduler's client port.
pub const CLIENTS_DOMAIN: &str = "zask-clients";
/// The ZAP domain of a worker's peer port.
pub const PEERS_DOMAIN: &str = "zask-peers";

/// Makes `socket` a CURVE server with `keys`, checked by the ZAP handler under `domain`.
pub fn serve(socket: &zmq::Socket, keys: &KeyPair, domain: &str) -> Result<(), SecurityError> {
    let err = |what| move |error| SecurityError::Socket { what, error };
    let secret = decode_key(&keys.secret).ok_or(SecurityError::CurveUnavailable)?;
    socket
        .set_zap_domain(domain)
        .map_err(err("setting the ZAP domain"))?;
    socket
        .set_curve_server(true)
        .map_err(err("making a CURVE server"))?;
    socket
        .set_curve_secretkey(&secret)
        .map_err(err("setting the CURVE secret key"))
}

/// Makes `socket` a CURVE client of the server whose public key is `server_public`,
/// presenting `keys`.
pub fn connect_as(
    socket: &zmq::Socket,
    server_public: &str,
    keys: &KeyPair,
) -> Result<(), SecurityError> {
    let err = |what| move |error| SecurityError::Socket { what, error };
    let server = decode_key(server_public).ok_or(SecurityError::CurveUnavailable)?;
    let public = decode_key(&keys.public).ok_or(SecurityError::CurveUnavailable)?;
    let secret = decode_key(&keys.secret).ok_or(SecurityError::CurveUnavailable)?;
    socket
        .set_curve_serverkey(&server)
        .map_err(err("setting the CURVE server key"))?;
    socket
        .set_curve_publickey(&public)
        .map_err(err("setting the CURVE public key"))?;
    socket
        .set_curve_secretkey(&secret)
        .map_err(err("setting the CURVE secret key"))
}

/// Which public keys each ZAP domain accepts, and the role each has there.
#[derive(Clone, Debug, Default)]
pub struct ZapPolicy {
    allowed: HashMap<(String, [u8; 32]), Role>,
}

impl ZapPolicy {
    pub fn allow(&mut self, domain: &str, public: &str, role: Role) {
        if let Some(key) = decode_key(public) {
            self.allowed.insert((domain.to_owned(), key), role);
        }
    }

    /// The role of a peer presenting `key` under `domain`, if it is let in.
    pub fn role(&self, domain: &str, mechanism: &str, key: &[u8]) -> Option<Role> {
        if mechanism != "CURVE" {
            return None;
        }
        let key: [u8; 32] = key.try_into().ok()?;
        self.allowed.get(&(domain.to_owned(), key)).copied()
    }
}

/// The endpoint libzmq asks for ZAP decisions (RFC 27), in the socket's own context.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A ZAP handler thread: libzmq asks it about every CURVE handshake on the context's sockets;
/// it lets in the keys its policy allows, with their role as the user id, and refuses the
/// rest (logged). Dropping it stops the thread.
pub struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandler {
    pub fn start(ctx: &zmq::Context, policy: ZapPolicy) -> Result<ZapHandler, SecurityError> {
        let err = |what| move |error| SecurityError::Socket { what, error };
        let socket = ctx.socket(zmq::REP).map_err(err("making the ZAP socket"))?;
        socket
            .set_linger(0)
            .map_err(err("setting the ZAP socket's linger"))?;
        socket
            .bind(ZAP_ENDPOINT)
            .map_err(err("binding the ZAP handler"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            crate::fatal::spawn_service("zask-zap", move || zap_loop(socket, policy, stop))
                .map_err(|_| SecurityError::Socket {
                    what: "starting the ZAP thread",
                    error: zmq::Error::EMFILE,
                })?
        };
        Ok(ZapHandler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn zap_loop(socket: zmq::Socket, policy: ZapPolicy, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match socket.poll(zmq::POLLIN, 200) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                warn!("the ZAP handler stops: {e}");
                return;
            }
        }
        let Ok(request) = socket.recv_multipart(0) else {
            continue;
        };
        // version, request id, domain, address, identity, mechanism, credentials...
        let field = |i: usize| request.get(i).map(|f| f.as_slice()).unwrap_or(&[]);
        let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
        let (domain, address, mechanism) = (text(2), text(3), text(5));
        let role = policy.role(&domain, &mechanism, field(6));
        let (status, status_text, user) = match role {
            Some(role) => {
                debug!("ZAP: {address} in {domain} as {role}");
                ("200", "OK", role.as_str())
            }
            None => {
                warn!(
                    "refused a connection from {address} on {}: its key is not one this port \
                     accepts (mechanism {mechanism})",
                    match domain.as_str() {
                        WORKERS_DOMAIN => "the worker port",
                        CLIENTS_DOMAIN => "the client port",
                        PEERS_DOMAIN => "the peer port",
                        _ => "an unknown port",
                    }
                );
                ("400", "key not allowed", "")
            }
        };
        let reply: Vec<&[u8]> = vec![
            b"1.0",
            field(1),
            status.as_bytes(),
            status_text.as_bytes(),
            user.as_bytes(),
            b"",
        ];
        if let Err(e) = socket.send_multipart(reply, 0) {
            warn!("the ZAP handler could not answer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_has_curve() {
        // Never skipped: without CURVE (a libzmq built without libsodium) Zask is insecure.
        assert_eq!(
            zmq::has("curve"),
            Some(true),
            "this libzmq has no CURVE: install Debian's libzmq3-dev (.cargo/config.toml links it)"
        );
    }

    #[test]
    fn keys_are_made_once_and_access_files_are_private_and_typed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.keys");
        let (keys, created) = ClusterKeys::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = ClusterKeys::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(keys, again);
        for name in [
            "cluster.keys",
            "worker.access",
            "client.access",
            "operator.access",
        ] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let worker = Access::read_for(&dir.path().join("worker.access"), &[Role::Worker]).unwrap();
        assert_eq!(worker.key, keys.worker);
        assert_eq!(worker.peers.as_ref(), Some(&keys.peers));
        let client = Access::read(&dir.path().join("client.access")).unwrap();
        assert_eq!(client.role, Role::Client);
        assert!(
            client.peers.is_none(),
            "a client never gets the peers' secret"
        );
        let wrong = Access::read_for(&dir.path().join("client.access"), &[Role::Worker]);
        assert!(matches!(
            wrong,
            Err(SecurityError::WrongRole {
                got: Role::Client,
                ..
            })
        ));
        // Secrets never print.
        assert!(!format!("{keys:?}").contains(&keys.scheduler.secret));
    }

    #[test]
    fn a_garbled_key_file_is_a_clear_error_that_retrying_cannot_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.keys");
        std::fs::write(&path, "{\"scheduler\": 1}").unwrap();
        let err = ClusterKeys::load_or_create(&path).unwrap_err();
        assert!(matches!(err, SecurityError::Malformed { .. }), "{err}");
        assert!(!err.retry_may_help());
        let missing = Access::read(&dir.path().join("nope.access")).unwrap_err();
        assert!(missing.retry_may_help(), "{missing}");
    }

    #[test]
    fn the_zap_policy_knows_each_key_on_its_own_port_only() {
        let keys = ClusterKeys::generate().unwrap();
        let policy = keys.scheduler_zap();
        let raw = |z: &str| decode_key(z).unwrap().to_vec();
        let worker = raw(&keys.worker.public);
        let client = raw(&keys.client.public);
        let operator = raw(&keys.operator.public);
        assert_eq!(
            policy.role(WORKERS_DOMAIN, "CURVE", &worker),
            Some(Role::Worker)
        );
        assert_eq!(policy.role(CLIENTS_DOMAIN, "CURVE", &worker), None);
        assert_eq!(policy.role(WORKERS_DOMAIN, "CURVE", &client), None);
        assert_eq!(
            policy.role(CLIENTS_DOMAIN, "CURVE", &client),
            Some(Role::Client)
        );
        assert_eq!(
            policy.role(CLIENTS_DOMAIN, "CURVE", &operator),
            Some(Role::Operator)
        );
        assert_eq!(policy.role(CLIENTS_DOMAIN, "NULL", &operator), None);
        let stranger = raw(&KeyPair::generate().unwrap().public);
        assert_eq!(policy.role(CLIENTS_DOMAIN, "CURVE", &stranger), None);
    }
}
