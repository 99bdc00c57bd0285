//! Guard mode: the agent serves mutual TLS on the engine's address in front of dockerd,
//! which keeps only its unix socket. Because the agent holds the TLS state, a renewed
//! pair or a new trust bundle is served to new connections at once (no dockerd restart,
//! ever), revocations close a certificate's connections within seconds, node
//! certificates are refused, and an operator's access level is enforced per request.
//!
//! - [`policy`]: what an operator's access level lets through, by method and path.
//! - [`audit`]: the per-request audit log on the node, and its reader (`ca-client audit`).
//! - [`verify`]: the handshake's client-certificate check (any root of the bundle, a
//!   client usage) and what a verified leaf is (operator and access level, or node).
//! - [`proxy`]: one client connection: checks, then dockerd's socket; bodies streamed,
//!   upgrades and half-closes passed through.
//! - [`http1`]: the request and response heads, and where a body ends, read strictly.
//! - [`pair`]: the pair and trust bundle on disk as a TLS server configuration.
//! - this file: the listener, the TLS state swapped on reload, the revoked serials and the
//!   open connections per serial, and the supervisor that follows the node's recorded
//!   engine mode and files (polled every half second).
//!
//! The guard serves the node's own pair from the credential directory (`cert.pem`,
//! `key.pem`, `ca.pem`): what `enroll`, `renew` and the agent write. It does not talk to
//! the CA itself; the agent feeds it revocations (the agent channel, the CRL).

pub(crate) mod audit;
pub(crate) mod http1;
mod pair;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod verify;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use dtca_common::endpoint::EngineAddr;
use dtca_pki::Serial;
use dtca_pki::access::Access;
use http::Method;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::audit::{AuditLog, AuditRecord};
use self::pair::{load, stamp};
use self::verify::Client;
use crate::error::GuardFailure;
use crate::state::{ClientState, EngineMode};

/// How often the supervisor looks at the state file and the pair.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The guard of one node: its state, shared by the listener, the connections, the
/// agent (renewals, revocations) and the supervisor.
#[derive(Debug, Clone)]
pub struct Guard {
    shared: Arc<Shared>,
}

/// What the guard's parts share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The credential directory whose pair is served.
    out: PathBuf,
    /// The TLS configuration new connections get: swapped whole on reload.
    tls: RwLock<Option<Loaded>>,
    /// Serials the CA revoked.
    revoked: RwLock<HashSet<Serial>>,
    /// The open connections per certificate, each with the switch that closes it.
    open: Mutex<HashMap<Serial, Vec<Closer>>>,
    /// The listener task and what it listens on, while the guard runs.
    running: Mutex<Option<Running>>,
    next_id: std::sync::atomic::AtomicU64,
    /// The per-request audit log (`<out>/audit.log`), opened when the guard first
    /// listens; `None` inside when it cannot be opened.
    audit: std::sync::OnceLock<Option<AuditLog>>,
}

/// The pair and trust bundle in service.
#[derive(Debug, Clone)]
struct Loaded {
    config: Arc<ServerConfig>,
    /// The serial served (a client presenting this very certificate is the node itself).
    serial: Serial,
    /// The files' modification times when loaded.
    stamp: Vec<Option<SystemTime>>,
}

/// An open connection, recorded until dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<Shared>,
    serial: Serial,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut open) = self.shared.open.lock()
            && let Some(list) = open.get_mut(&self.serial)
        {
            list.retain(|(i, _)| *i != self.id);
            if list.is_empty() {
                open.remove(&self.serial);
            }
        }
    }
}

/// One open connection: its number and the switch that closes it.
type Closer = (u64, watch::Sender<bool>);

#[derive(Debug)]
struct Running {
    listen: EngineAddr,
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Guard {
    /// A guard for the credentials in `out`, not listening yet.
    pub fn new(out: &Path) -> Guard {
        Guard {
            shared: Arc::new(Shared {
                out: out.to_path_buf(),
                tls: RwLock::new(None),
                revoked: RwLock::new(HashSet::new()),
                open: Mutex::new(HashMap::new()),
                running: Mutex::new(None),
                next_id: std::sync::atomic::AtomicU64::new(0),
                audit: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Brings the guard in line with the state recorded in `out`: listening on the
    /// engine's address in guard mode, stopped otherwise; and serving the pair on disk.
    ///
    /// # Errors
    /// [`GuardFailure`] when it should listen and cannot (the address is taken, the
    /// pair cannot be read); it is tried again at the next call.
    pub async fn follow(&self, state: &ClientState) -> Result<(), GuardFailure> {
        let wanted = state
            .docker
            .as_ref()
            .filter(|d| d.mode == EngineMode::Guard)
            .map(|d| (d.listen.clone(), d.socket.clone()));
        let Some((listen, socket)) = wanted else {
            if let Ok(mut running) = self.shared.running.lock()
                && let Some(r) = running.take()
            {
                tracing::info!(listen = %r.listen, "guard stopped (the engine is no longer in guard mode)");
            }
            return Ok(());
        };
        self.reload_if_changed()?;
        let same = self
            .shared
            .running
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.listen == listen && r.socket == socket))
            .unwrap_or(false);
        if same {
            return Ok(());
        }
        if let Ok(mut running) = self.shared.running.lock() {
            // Release the old address before binding again.
            running.take();
        }
        let listener = bind(&listen).await?;
        let out = &self.shared.out;
        self.shared.audit.get_or_init(|| {
            AuditLog::open(out)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, dir = %out.display(), "cannot open the audit log; requests are not audited");
                })
                .ok()
        });
        let task = tokio::spawn(accept_loop(listener, self.shared.clone(), socket.clone()));
        tracing::info!(%listen, socket = %socket.display(), "guard listening (mutual TLS in front of the engine's socket)");
        if let Ok(mut running) = self.shared.running.lock() {
            *running = Some(Running {
                listen,
                socket,
                task,
            });
        }
        Ok(())
    }

    /// Whether the guard listens now.
    pub fn is_running(&self) -> bool {
        self.shared.running.lock().is_ok_and(|r| r.is_some())
    }

    /// Serves the pair and trust bundle on disk to new connections from now on (open
    /// connections carry on with theirs).
    ///
    /// # Errors
    /// [`GuardFailure::Pair`] when they cannot be read or do not make a TLS server;
    /// the previous ones stay in service.
    pub fn reload(&self) -> Result<Serial, GuardFailure> {
        let loaded = load(&self.shared.out)?;
        let serial = loaded.serial.clone();
        if let Ok(mut tls) = self.shared.tls.write() {
            let before = tls.as_ref().map(|l| l.serial.clone());
            *tls = Some(loaded);
            if before.as_ref() != Some(&serial) {
                tracing::info!(%serial, "guard serves certificate");
            }
        }
        Ok(serial)
    }

    /// [`Guard::reload`] when a file changed since the last load.
    ///
    /// # Errors
    /// As [`Guard::reload`].
    pub fn reload_if_changed(&self) -> Result<(), GuardFailure> {
        let now = stamp(&self.shared.out);
        let unchanged = self
            .shared
            .tls
            .read()
            .ok()
            .and_then(|t| t.as_ref().map(|l| l.stamp == now))
            .unwrap_or(false);
        if !unchanged {
            self.reload()?;
        }
        Ok(())
    }

    /// Records revoked serials (openssl's notation) and closes their open connections,
    /// hijacked sessions included.
    pub fn revoke(&self, serials: &[String]) {
        let parsed: Vec<Serial> = serials.iter().filter_map(|s| s.parse().ok()).collect();
        self.revoke_serials(&parsed);
    }

    /// As [`Guard::revoke`], with parsed serials.
    pub fn revoke_serials(&self, serials: &[Serial]) {
        if let Ok(mut revoked) = self.shared.revoked.write() {
            revoked.extend(serials.iter().cloned());
        }
        let Ok(open) = self.shared.open.lock() else {
            return;
        };
        for serial in serials {
            for (_, close) in open.get(serial).into_iter().flatten() {
                let _ = close.send(true);
            }
            if let Some(n) = open.get(serial).map(Vec::len).filter(|n| *n > 0) {
                tracing::warn!(%serial, connections = n, "certificate revoked: closing its connections");
            }
        }
    }

    /// Writes out the audit records still queued (the agent is stopping).
    pub fn flush_audit(&self) {
        if let Some(Some(log)) = self.shared.audit.get() {
            log.flush();
            let dropped = log.dropped();
            if dropped > 0 {
                tracing::warn!(dropped, "audit records were dropped: the disk fell behind");
            }
        }
    }

    /// Watches the state file and the pair every [`POLL`], forever: follows the mode,
    /// reloads changed files.
    pub async fn supervise(self) {
        let out = self.shared.out.clone();
        let mut failing = false;
        loop {
            tokio::time::sleep(POLL).await;
            let Ok(state) = ClientState::load(&out) else {
                continue;
            };
            match self.follow(&state).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::error!(error = %e, "guard: cannot follow the node's state; trying again");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

impl Shared {
    /// Whether `client` may make this request (`path`: the target, query included);
    /// `Err` is the message of the refusal.
    pub(crate) fn allowed(
        &self,
        client: &Client,
        method: &Method,
        path: &str,
    ) -> Result<(), String> {
        if self
            .revoked
            .read()
            .is_ok_and(|r| r.contains(&client.serial))
        {
            return Err(format!(
                "dtca guard: certificate {} ({}) was revoked",
                client.serial, client.identity
            ));
        }
        match client.access {
            Some(Access::Full) => Ok(()),
            Some(Access::ReadOnly) => policy::check(Access::ReadOnly, method, path),
            None if self.is_own(&client.serial) && is_ping(method, path) => Ok(()),
            None => Err(format!(
                "dtca guard: {} is a node certificate, not a docker client: use an operator certificate (ca-client login)",
                client.identity
            )),
        }
    }

    /// Whether `serial` is the certificate the guard itself serves (the node checking
    /// its own guard with its own key).
    fn is_own(&self, serial: &Serial) -> bool {
        self.tls
            .read()
            .is_ok_and(|t| t.as_ref().is_some_and(|l| &l.serial == serial))
    }

    /// Writes the audit record of one request.
    pub(crate) fn audit(&self, record: AuditRecord) {
        if let Some(Some(log)) = self.audit.get() {
            log.record(record);
        }
    }

    /// Records an open connection of `serial`; it stays recorded (and closable by a
    /// revocation) while the returned registration lives, hijacked sessions included.
    fn register(self: &Arc<Self>, serial: &Serial) -> (Registration, watch::Receiver<bool>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Open even for a revoked serial: its requests are answered 403 (which the CLI
        // prints) rather than the connection dropped.
        let (tx, rx) = watch::channel(false);
        if let Ok(mut open) = self.open.lock() {
            open.entry(serial.clone()).or_default().push((id, tx));
        }
        let registration = Registration {
            shared: self.clone(),
            serial: serial.clone(),
            id,
        };
        (registration, rx)
    }

    fn config(&self) -> Option<Arc<ServerConfig>> {
        self.tls
            .read()
            .ok()
            .and_then(|t| t.as_ref().map(|l| l.config.clone()))
    }
}

/// `GET` or `HEAD` of `/_ping`, versioned or not.
fn is_ping(method: &Method, target: &str) -> bool {
    let path = target.split('?').next().unwrap_or(target);
    let bare = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .map_or(path.to_string(), |(_, tail)| format!("/{tail}"));
    (method == Method::GET || method == Method::HEAD) && bare == "/_ping"
}

async fn bind(listen: &EngineAddr) -> Result<TcpListener, GuardFailure> {
    let addr = match listen.socket_addr() {
        Some(a) => a,
        None => tokio::net::lookup_host((listen.host(), listen.port()))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| GuardFailure::Listen {
                listen: listen.clone(),
                detail: "the host does not resolve".into(),
            })?,
    };
    TcpListener::bind(addr)
        .await
        .map_err(|e| GuardFailure::Listen {
            listen: listen.clone(),
            detail: e.to_string(),
        })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, socket: PathBuf) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "guard: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(config) = shared.config() else {
            continue;
        };
        let shared = shared.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let accepted = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                tokio_rustls::TlsAcceptor::from(config).accept(http1::Inbound::new(tcp)),
            )
            .await;
            let tls = match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "guard: TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let Some(client) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| Client::from_leaf(leaf).ok())
            else {
                return;
            };
            let (registration, closed) = shared.register(&client.serial);
            let open = proxy::Open {
                client: Arc::new(client),
                shared: shared.clone(),
                socket,
                closed,
                _registration: registration,
            };
            proxy::serve(tls, open).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(access: Option<Access>) -> Client {
        Client {
            serial: "0A1B".parse().unwrap(),
            identity: "dtca://c/operator/ann".into(),
            access,
        }
    }

    #[test]
    fn full_access_passes_read_only_goes_through_the_policy_and_nodes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let guard = Guard::new(tmp.path());
        let shared = &guard.shared;
        let full = operator(Some(Access::Full));
        assert!(
            shared
                .allowed(&full, &Method::POST, "/v1.41/containers/create")
                .is_ok()
        );
        let read_only = operator(Some(Access::ReadOnly));
        assert!(
            shared
                .allowed(&read_only, &Method::GET, "/v1.41/containers/json")
                .is_ok()
        );
        assert!(
            shared
                .allowed(&read_only, &Method::POST, "/v1.41/containers/create")
                .is_err()
        );
        // A node certificate that is not the one this guard serves: not even a ping.
        let node = operator(None);
        let refused = shared.allowed(&node, &Method::GET, "/_ping").unwrap_err();
        assert!(refused.contains("node certificate"), "{refused}");
    }

    #[test]
    fn a_revocation_refuses_the_serial_and_closes_its_open_connections() {
        let tmp = tempfile::tempdir().unwrap();
        let guard = Guard::new(tmp.path());
        let client = operator(Some(Access::Full));
        let (registration, closed) = guard.shared.register(&client.serial);
        assert!(!*closed.borrow());
        guard.revoke(&["0a1b".into()]);
        assert!(
            *closed.borrow(),
            "the open connection was not told to close"
        );
        let refused = guard
            .shared
            .allowed(&client, &Method::GET, "/_ping")
            .unwrap_err();
        assert!(refused.contains("revoked"), "{refused}");
        // A connection opened after the revocation stays open to be answered 403.
        let (_late, late_closed) = guard.shared.register(&client.serial);
        assert!(!*late_closed.borrow());
        drop(registration);
        assert_eq!(guard.shared.open.lock().unwrap()[&client.serial].len(), 1);
    }

    #[test]
    fn pings_are_recognised_with_and_without_a_version() {
        assert!(is_ping(&Method::GET, "/_ping"));
        assert!(is_ping(&Method::HEAD, "/v1.41/_ping"));
        assert!(!is_ping(&Method::POST, "/_ping"));
        assert!(!is_ping(&Method::GET, "/v1.41/containers/json"));
        assert!(!is_ping(&Method::GET, "/_ping/x"));
    }
}
