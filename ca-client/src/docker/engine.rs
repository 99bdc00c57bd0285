//! Talking to the Docker engine's API: over its unix socket (is it up, is it in swarm
//! mode), over plain TCP (does the old address still answer), and over mutual TLS (does
//! the new address work, with which certificate).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtca_common::endpoint::EngineAddr;
use dtca_common::tls::{ClientIdentity, provider};
use dtca_pki::Serial;
use dtca_pki::inspect::CertInfo;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
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
    /// A manager of its swarm (`Swarm.ControlAvailable`).
    pub manager: bool,
    /// The swarm's cluster ID (`Swarm.Cluster.ID`; only managers see it): which swarm's
    /// managers must not restart together.
    pub cluster_id: String,
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
        manager: v["Swarm"]["ControlAvailable"].as_bool().unwrap_or(false),
        cluster_id: v["Swarm"]["Cluster"]["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
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

/// What an engine's TLS endpoint did with one `GET /_ping`.
#[derive(Debug)]
pub struct TlsProbe {
    /// The serial of the certificate it served, when that certificate verified against
    /// the root for the name (also when the engine then refused the client).
    pub served: Option<Serial>,
    /// Whether the call was answered `OK`, or why not.
    pub answered: Result<(), EngineError>,
    /// The issuers (subject DER) whose client certificates the engine asked for: the CA
    /// file it verifies clients with. Only recorded when the probe has no certificate.
    pub asked_for: Vec<Vec<u8>>,
}

/// `GET /_ping` over TLS to `addr`, checking the server certificate against `roots`
/// for `name`, optionally presenting a client certificate. The certificate served is
/// recorded as it is verified, so a probe without a client certificate (which dockerd
/// with `--tlsverify` refuses) still learns which certificate the engine serves: a node
/// has no certificate a docker engine accepts as a client.
///
/// # Errors
/// [`EngineError`] when the root or the client certificate cannot be used.
pub async fn probe_tls(
    addr: SocketAddr,
    name: &str,
    roots: &[Vec<u8>],
    client: Option<&ClientIdentity>,
) -> Result<TlsProbe, EngineError> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from(root.clone()))
            .map_err(|e| EngineError(format!("root certificate: {e}")))?;
    }
    let verifier = Arc::new(Recording {
        inner: WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| EngineError(format!("root certificate: {e}")))?,
        served: Mutex::new(None),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| EngineError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let hints = Arc::new(Hints::default());
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
        None => builder.with_client_cert_resolver(hints.clone()),
    };
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| EngineError(format!("bad server name {name:?}")))?;
    let answered = async {
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
        expect_ok(get(tls, "/_ping").await?)
    }
    .await;
    let served = verifier
        .served
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .and_then(|der| CertInfo::from_der(&der).ok())
        .map(|i| i.serial);
    let asked_for = hints.asked.lock().map(|a| a.clone()).unwrap_or_default();
    Ok(TlsProbe {
        served,
        answered,
        asked_for,
    })
}

/// Sends no client certificate, and remembers which issuers the server asked for.
#[derive(Debug, Default)]
struct Hints {
    asked: Mutex<Vec<Vec<u8>>>,
}

impl ResolvesClientCert for Hints {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if let Ok(mut asked) = self.asked.lock() {
            *asked = root_hint_subjects.iter().map(|s| s.to_vec()).collect();
        }
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The usual verification of the engine's certificate, remembering the certificate it
/// accepted.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    served: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Ok(mut served) = self.served.lock() {
            *served = Some(end_entity.to_vec());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
