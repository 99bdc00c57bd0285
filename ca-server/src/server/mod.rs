//! Running the gRPC server: `run(listener, registrar, options, shutdown)`.
//!
//! Tests bind port 0 and pass a shutdown future; the binary passes SIGTERM/SIGINT.
//! The server's own TLS certificate is issued by its CA at start and renewed in the
//! background at 50-70 % of its life; handshakes pick the new one up at once.
//!
//! - [`accept`]: the accept loop: connection limits, rate-limited accept errors, drain.
//! - [`budget`]: connections not yet authenticated, counted per source address.
//! - [`conn`]: one connection: handshake and first-request deadlines, idle timeout.
//! - [`activity`]: a connection's open streams, for the idle timeout and the budget.
//! - [`request`]: a connection's requests: caller info, deadline, stream tracking.
//! - [`fd_limit`]: the open-file limit, raised at start and never planned past.
//! - [`health`]: what the gRPC Health service answers, and the loop that keeps it current.

mod accept;
mod activity;
mod budget;
mod conn;
pub mod fd_limit;
mod health;
pub mod lifecycle;
mod request;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dtca_pki::identity::{Identity, Role, check_name};
use dtca_pki::profile::Profile;
use dtca_pki::renewal;
use dtca_proto::v1::admin_server::AdminServer;
use dtca_proto::v1::ca_server::CaServer;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;

use crate::registrar::{Refusal, Registrar};
use crate::service::admin::AdminService;
use crate::service::ca::CaService;
use crate::service::{Context, MAX_MESSAGE_BYTES};
use crate::tls::{CertSlot, server_config};
use accept::Admission;
use conn::{Limits, Shared};
use health::health_loop;

/// How the server listens and presents itself.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// DNS names in the server certificate (clients check the one they dial).
    pub dns_names: Vec<String>,
    /// IP addresses in the server certificate.
    pub ip_addresses: Vec<IpAddr>,
    /// Name in the server's identity URI.
    pub name: String,
    /// Open connections at most; more wait in the kernel's backlog. Lowered at start to
    /// what the open-file limit leaves room for.
    pub max_connections: usize,
    /// Connections from one source address (an IPv6 /64) that have not authenticated
    /// yet: still in the handshake, with no verified client certificate, or with no
    /// request yet. More are closed at once. Agents with their certificate leave this
    /// count at their first request, so any number of them may share a NAT address.
    pub max_unauthenticated_per_address: usize,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take from the handshake to its first request (the HTTP/2
    /// preface and the request's headers); also how long a connection that has not
    /// authenticated may stay with nothing in flight.
    pub first_request_timeout: Duration,
    /// How long an authenticated connection may stay with no open stream before it is
    /// closed (with a GOAWAY). A running call, however long, keeps it open.
    pub idle_timeout: Duration,
    /// How often the health status is re-checked (a test signature and a store round trip).
    pub health_interval: Duration,
}

impl Default for ServerOptions {
    /// Production limits; no names (see [`ServerOptions::for_this_host`]).
    fn default() -> Self {
        ServerOptions {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            name: "ca-server".into(),
            max_connections: 20_000,
            max_unauthenticated_per_address: 256,
            handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            health_interval: Duration::from_secs(10),
        }
    }
}

impl ServerOptions {
    /// Names of this host: `localhost`, its host name and FQDN, loopback and every local
    /// address, plus `extra` (load balancer names and addresses).
    pub fn for_this_host(extra: &[String]) -> Self {
        let host = dtca_common::net::hostname();
        let mut dns_names = vec!["localhost".to_string()];
        let mut ip_addresses: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        for name in std::iter::once(host.clone()).chain(dtca_common::net::fqdn()) {
            if dtca_pki::policy::check_dns_name(&name).is_ok() && !dns_names.contains(&name) {
                dns_names.push(name);
            }
        }
        ip_addresses.extend(dtca_common::net::addresses());
        for e in extra {
            match e.parse::<IpAddr>() {
                Ok(ip) if !ip_addresses.contains(&ip) => ip_addresses.push(ip),
                Ok(_) => {}
                Err(_) if !dns_names.contains(e) => dns_names.push(e.to_ascii_lowercase()),
                Err(_) => {}
            }
        }
        let defaults = ServerOptions::default();
        ServerOptions {
            dns_names,
            ip_addresses,
            name: if check_name(&host).is_ok() {
                host
            } else {
                defaults.name.clone()
            },
            ..defaults
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot issue the server's own certificate: {0}")]
    Certificate(Refusal),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Serves the CA on `listener` until `shutdown` completes, then drains open calls.
///
/// # Errors
/// [`ServeError`] when the server cannot start.
pub async fn run(
    listener: TcpListener,
    registrar: Arc<Registrar>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (chain, key, not_before, not_after) = server_certificate(&registrar, &options).await?;
    let slot = CertSlot::new(&chain, &key)?;
    let tls = server_config(slot.clone(), &registrar.ca().roots())?;

    let health_reporter = tonic_health::server::HealthReporter::new();
    let why = health::Why::default();
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        health::ReasonedHealth::new(&health_reporter, why.clone()),
    );
    // Both reflection versions: older grpcurl and evans only speak v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(dtca_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| {
        ServeError::Certificate(Refusal::Internal(e.to_string()))
    };
    let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(reflection_error)?;

    let tasks: Vec<JoinHandle<()>> = vec![
        tokio::spawn(health_loop(
            registrar.clone(),
            health_reporter,
            why,
            options.health_interval,
        )),
        tokio::spawn(rotate_server_certificate(
            registrar.clone(),
            options.clone(),
            slot,
            not_before,
            not_after,
        )),
        tokio::spawn(lifecycle::run(registrar.clone())),
        tokio::spawn(crate::channel::revocation_feed(
            registrar.store().clone(),
            registrar.hub().clone(),
            std::future::pending(),
        )),
    ];
    let routes = Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            CaServer::new(CaService::new(Context::new(registrar.clone())))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServer::new(AdminService::new(Context::new(registrar.clone())))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .prepare();
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(tls),
        routes,
        registrar,
        limits: Limits {
            handshake: options.handshake_timeout,
            first_request: options.first_request_timeout,
            idle: options.idle_timeout,
        },
        h2,
    });
    accept::run(listener, shared, admission(&options), shutdown).await;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// The connection limits in force: `max_connections` lowered to what the open-file limit
/// leaves room for (running out of descriptors would turn every accept into an error).
fn admission(options: &ServerOptions) -> Admission {
    let room = fd_limit::connection_room().unwrap_or(usize::MAX);
    let max_connections = options.max_connections.min(room).max(1);
    if max_connections < options.max_connections {
        tracing::warn!(
            max_connections,
            asked = options.max_connections,
            "the open-file limit leaves room for fewer connections than asked: raise LimitNOFILE"
        );
    }
    let per_address = options.max_unauthenticated_per_address.max(1);
    if per_address >= max_connections {
        tracing::warn!(
            per_address,
            max_connections,
            "one address may take every connection: lower --max-unauthenticated-per-address"
        );
    }
    Admission {
        max_connections,
        per_address,
    }
}

async fn server_certificate(
    registrar: &Registrar,
    options: &ServerOptions,
) -> Result<
    (
        Vec<Vec<u8>>,
        dtca_pki::PrivateKey,
        OffsetDateTime,
        OffsetDateTime,
    ),
    ServeError,
> {
    let identity = Identity::new(&registrar.cluster(), Role::Ca, &options.name)
        .map_err(|e| ServeError::Certificate(Refusal::Internal(e.to_string())))?;
    let (issued, key) = registrar
        .issue_local(
            identity,
            options.dns_names.clone(),
            options.ip_addresses.clone(),
            Profile::of(Role::Ca).default_lifetime,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(ServeError::Certificate)?;
    // The roots go in the chain too: first-contact clients pin one by digest (during a
    // root rotation, tokens made before it pin the old root, later ones the new).
    let mut chain = vec![issued.leaf_der];
    chain.extend(issued.chain);
    chain.extend(registrar.ca().roots());
    Ok((chain, key, issued.info.not_before, issued.info.not_after))
}

async fn rotate_server_certificate(
    registrar: Arc<Registrar>,
    options: ServerOptions,
    slot: Arc<CertSlot>,
    mut not_before: OffsetDateTime,
    mut not_after: OffsetDateTime,
) {
    let mut failures = 0u32;
    // A change of the trust state (a root rotation, a new intermediate) renews it at
    // once, so the chain it serves holds the roots that join tokens pin.
    let mut trust = registrar.hub().trust_watch();
    // The trust state the certificate was issued under: the lifecycle driver announces the
    // state it finds at start, which is no change for this certificate.
    let mut issued_under = registrar.ca().trust_generation(OffsetDateTime::now_utc());
    loop {
        let at = renewal::renew_at_issued(not_before, not_after, renewal::jitter());
        let wait = (at - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        let wait = if failures > 0 {
            renewal::backoff(
                failures,
                Duration::from_secs(5),
                Duration::from_secs(600),
                renewal::jitter(),
            )
        } else {
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = trust.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(wait).await;
                } else if *trust.borrow_and_update() == issued_under {
                    continue;
                }
            }
        }
        match server_certificate(&registrar, &options).await {
            Ok((chain, key, nb, na)) => match slot.replace(&chain, &key) {
                Ok(()) => {
                    tracing::info!(not_after = %dtca_pki::duration::timestamp(na), "server certificate renewed");
                    (not_before, not_after, failures) = (nb, na, 0);
                    issued_under = *trust.borrow();
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, "cannot use the renewed server certificate");
                }
            },
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "cannot renew the server certificate; retrying");
            }
        }
    }
}
