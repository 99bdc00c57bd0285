//! Talking to the Docker engine's API: over its unix socket (is it up, is it in swarm
//! mode), over plain TCP (does the old address still answer), and over mutual TLS (does
//! the new address work, with which certificate).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dtca_common::endpoint::EngineAddr;
use dtca_common::tls::{ClientIdentity, provider};
use dtca_pki::Serial;
use dtca_pki::inspect::CertInfo;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version.
    pub version: String,
    /// Swarm mode (`Swarm.LocalNodeState` active, pending or locked).
    pub swarm: bool,
    /// Whether live-restore is on.
    pub live_restore: bool,
}

/// `GET /_ping` over the unix socket.
///
/// # Errors
/// [`EngineError`] when the engine does not answer `OK`.
pub async fn ping_unix(socket: &Path) -> Result<(), EngineError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| EngineError(format!("cannot connect to {}: {e}", socket.display())))?;
    expect_ok(get(stream, "/_ping").await?)
}

/// `GET /info` over the unix socket.
///
/// # Errors
/// [`EngineError`] when the engine does not answer or the answer is not the expected JSON.
pub async fn info_unix(socket: &Path) -> Result<EngineInfo, EngineError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| EngineError(format!("cannot connect to {}: {e}", socket.display())))?;
    let (status, body) = get(stream, "/info").await?;
    if status != 200 {
        return Err(EngineError(format!("/info answered {status}")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| EngineError(format!("/info: {e}")))?;
    let state = v["Swarm"]["LocalNodeState"].as_str().unwrap_or("inactive");
    Ok(EngineInfo {
        version: v["ServerVersion"].as_str().unwrap_or_default().to_string(),
        swarm: matches!(state, "active" | "pending" | "locked"),
        live_restore: v["LiveRestoreEnabled"].as_bool().unwrap_or(false),
    })
}

/// `GET /_ping` over plain TCP.
///
/// # Errors
/// [`EngineError`] when it does not answer `OK`.
pub async fn ping_plain(addr: SocketAddr) -> Result<(), EngineError> {
    let stream = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| EngineError(format!("{addr}: connect timed out")))?
        .map_err(|e| EngineError(format!("{addr}: {e}")))?;
    expect_ok(get(stream, "/_ping").await?)
}

/// Whether nothing accepts TCP connections at `addr` any more.
pub async fn refuses(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await,
        Ok(Err(_))
    )
}

/// `GET /_ping` over TLS to `addr`, checking the server certificate against `root_der`
/// for `name`, optionally presenting a client certificate. Returns the serial of the
/// certificate the engine served.
///
/// # Errors
/// [`EngineError`] when the handshake or the call fails or the answer is not `OK`.
pub async fn ping_tls(
    addr: SocketAddr,
    name: &str,
    root_der: &[u8],
    client: Option<&ClientIdentity>,
) -> Result<Serial, EngineError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root_der.to_vec()))
        .map_err(|e| EngineError(format!("root certificate: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| EngineError(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain
                    .iter()
                    .map(|c| CertificateDer::from(c.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone())),
            )
            .map_err(|e| EngineError(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| EngineError(format!("bad server name {name:?}")))?;
    let tcp = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| EngineError(format!("{addr}: connect timed out")))?
        .map_err(|e| EngineError(format!("{addr}: {e}")))?;
    let tls = tokio::time::timeout(
        CALL_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
    )
    .await
    .map_err(|_| EngineError(format!("{addr}: TLS handshake timed out")))?
    .map_err(|e| EngineError(format!("{addr}: TLS handshake failed: {e}")))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| CertInfo::from_der(c).ok())
        .map(|i| i.serial)
        .ok_or_else(|| EngineError(format!("{addr}: no server certificate")))?;
    expect_ok(get(tls, "/_ping").await?)?;
    Ok(served)
}

async fn get<S>(io: S, path: &str) -> Result<(u16, Vec<u8>), EngineError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let call = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| EngineError(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| EngineError(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| EngineError(format!("{path}: {e}")))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| EngineError(format!("{path}: {e}")))?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok((status, body))
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| {
            EngineError(format!(
                "{path}: no answer within {}s",
                CALL_TIMEOUT.as_secs()
            ))
        })?
}

fn expect_ok((status, body): (u16, Vec<u8>)) -> Result<(), EngineError> {
    if status == 200 && body.starts_with(b"OK") {
        Ok(())
    } else {
        Err(EngineError(format!(
            "/_ping answered {status} {}",
            String::from_utf8_lossy(&body)
        )))
    }
}

/// Where to dial for an engine address: wildcards become loopback.
///
/// # Errors
/// [`EngineError`] when the host does not resolve.
pub async fn dial_addr(addr: &EngineAddr) -> Result<SocketAddr, EngineError> {
    let found = match addr.socket_addr() {
        Some(ip) => ip,
        None => tokio::net::lookup_host((addr.host(), addr.port()))
            .await
            .map_err(|e| EngineError(format!("{addr}: {e}")))?
            .next()
            .ok_or_else(|| EngineError(format!("{addr}: no address")))?,
    };
    Ok(match found.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], found.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, found.port()))
        }
        _ => found,
    })
}

/// A Docker engine that did not answer as expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);
