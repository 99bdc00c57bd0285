//! Running the gRPC server: `run(listener, registrar, options, shutdown)`.
//!
//! Tests bind port 0 and pass a shutdown future; the binary passes SIGTERM/SIGINT.
//! The server's own TLS certificate is issued by its CA at start and renewed in the
//! background at 50-70 % of its life; handshakes pick the new one up at once.
//!
//! - [`health`]: what the gRPC Health service answers, and the loop that keeps it current.

mod health;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dtca_common::reason::{self, Reason};
use dtca_pki::identity::{Identity, Role, check_name};
use dtca_pki::profile::Profile;
use dtca_pki::renewal;
use dtca_proto::v1::admin_server::AdminServer;
use dtca_proto::v1::ca_server::CaServer;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::metrics::Metrics;
use crate::registrar::{Refusal, Registrar};
use crate::service::admin::AdminService;
use crate::service::ca::CaService;
use crate::service::{Context, MAX_MESSAGE_BYTES};
use crate::tls::{CertSlot, TlsConn, server_config};
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
    /// Open connections at most; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How often the health status is re-checked (a test signature and a store round trip).
    pub health_interval: Duration,
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
        ServerOptions {
            dns_names,
            ip_addresses,
            name: if check_name(&host).is_ok() {
                host
            } else {
                "ca-server".into()
            },
            max_connections: 20_000,
            handshake_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(10),
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
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
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
    let tls = server_config(slot.clone(), registrar.authority().root_der())?;

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

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    tasks.push(tokio::spawn(health_loop(
        registrar.clone(),
        health_reporter,
        why,
        options.health_interval,
    )));
    tasks.push(tokio::spawn(rotate_server_certificate(
        registrar.clone(),
        options.clone(),
        slot,
        not_before,
        not_after,
    )));
    let (conns, incoming) = mpsc::channel::<Result<TlsConn, std::io::Error>>(256);
    tasks.push(tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        conns,
        options.clone(),
    )));

    let cx = Context::new(registrar.clone());
    let metrics = registrar.metrics().clone();
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .timeout(Duration::from_secs(30))
        .layer(tower::util::MapResponseLayer::new(move |response| {
            tag_too_large(&metrics, response)
        }))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            CaServer::new(CaService::new(cx.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServer::new(AdminService::new(cx)).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await;
    for task in tasks {
        task.abort();
    }
    result.map_err(ServeError::from)
}

/// Requests over the size limit are refused by tonic itself (`OUT_OF_RANGE`), before any
/// handler runs: give them the reason header and the metric every other refusal gets.
fn tag_too_large<B>(metrics: &Metrics, mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"11");
    if out_of_range && !headers.contains_key(reason::METADATA_KEY) {
        headers.insert(
            reason::METADATA_KEY,
            http::HeaderValue::from_static(Reason::TooLarge.as_str()),
        );
        metrics.refused(Reason::TooLarge);
    }
    response
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
    let authority = registrar.authority();
    let identity = Identity::new(authority.cluster(), Role::Ca, &options.name)
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
    // The root goes in the chain too: first-contact clients pin it by digest.
    let chain = vec![
        issued.leaf_der,
        authority.intermediate_der().to_vec(),
        authority.root_der().to_vec(),
    ];
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
        tokio::time::sleep(wait).await;
        match server_certificate(&registrar, &options).await {
            Ok((chain, key, nb, na)) => match slot.replace(&chain, &key) {
                Ok(()) => {
                    tracing::info!(not_after = %dtca_pki::duration::timestamp(na), "server certificate renewed");
                    (not_before, not_after, failures) = (nb, na, 0);
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

/// Connections the kernel may queue before `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Result<TlsConn, std::io::Error>>,
    options: ServerOptions,
) {
    // A fleet that boots together connects together. tokio's `bind` listens with a
    // backlog of 128; while both cores are busy with handshakes and issuances the accept
    // queue overflows, the kernel drops SYNs and those nodes retry a whole second later
    // (measured: ~1 % of a 10,000-node enrollment storm waited 1-1.3 s). Calling listen()
    // again on a listening socket only raises its queue.
    if let Err(e) = socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG) {
        tracing::warn!(error = %e, "cannot raise the listen backlog; keeping the default");
    }
    let limit = Arc::new(Semaphore::new(options.max_connections));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let timeout = options.handshake_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(TlsConn::new(tls, permit))).await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        });
    }
}
