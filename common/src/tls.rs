//! Client-side TLS to the CA, and the gRPC channel over it.
//!
//! Before enrollment a client knows only the root digest from its join token; it accepts
//! the server only if the chain the server presents contains a root with that digest and
//! the server certificate verifies up to it ([`Trust::Pinned`]). After enrollment it
//! trusts the roots it saved ([`Trust::Roots`]: during a root rotation the old and the new
//! one; the CA then presents the new root cross-signed by the old one, and both roots, so
//! a client pinned to or trusting either finds its root). In both cases the server certificate must
//! also carry the CA server's own identity (`dtca://<cluster>/ca/...`), so a node's
//! certificate (also serverAuth, same root) can never pose as the CA.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtca_pki::identity::Role;
use dtca_pki::inspect::CertInfo;
use dtca_pki::token::RootDigest;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::reason::Reason;

/// Port the CA listens on when an address gives none.
pub const DEFAULT_PORT: u16 = 8443;
/// How long dialling and the TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The crypto provider every TLS config here uses (ring only; see FACTS on providers).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the client trusts the server by.
#[derive(Debug, Clone)]
pub enum Trust {
    /// First contact: a root whose SHA-256 is this, presented by the server in its chain.
    Pinned(RootDigest),
    /// After enrollment: this root certificate (DER).
    Root(Vec<u8>),
    /// After enrollment: any of these roots (DER), as in a trust bundle.
    Roots(Vec<Vec<u8>>),
}

/// A client certificate chain (leaf first) and its key, for mutual TLS.
pub struct ClientIdentity {
    /// Leaf then intermediate, DER.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the leaf's key.
    pub key_pkcs8: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Builds the rustls client config for talking to the CA.
///
/// # Errors
/// [`ConnectError::Tls`] when the root or the client key is unusable.
pub fn client_config(
    trust: Trust,
    client: Option<ClientIdentity>,
) -> Result<Arc<ClientConfig>, ConnectError> {
    let provider = provider();
    let verifier = Arc::new(CaServerVerifier {
        trust,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(id) => {
            let chain = id.chain.into_iter().map(CertificateDer::from).collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8));
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConnectError::Tls(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Why the client would not trust the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("the server's root CA does not match the digest in the join token")]
    RootMismatch,
    #[error("the server's certificate is not a dtca CA server certificate")]
    NotCaServer,
}

/// Verifies the CA server's certificate by [`Trust`] plus the CA role.
#[derive(Debug)]
struct CaServerVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl CaServerVerifier {
    fn roots<'a>(
        &'a self,
        intermediates: &'a [CertificateDer<'a>],
    ) -> Result<Vec<CertificateDer<'a>>, rustls::Error> {
        match &self.trust {
            Trust::Root(der) => Ok(vec![CertificateDer::from(der.as_slice())]),
            Trust::Roots(ders) => Ok(ders
                .iter()
                .map(|d| CertificateDer::from(d.as_slice()))
                .collect()),
            Trust::Pinned(digest) => intermediates
                .iter()
                .find(|c| digest.matches(c))
                .cloned()
                .map(|c| vec![c])
                .ok_or_else(|| other(TrustError::RootMismatch)),
        }
    }
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut roots = RootCertStore::empty();
        for root in self.roots(intermediates)? {
            roots.add(root.into_owned())?;
        }
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let info = CertInfo::from_der(end_entity).map_err(|_| other(TrustError::NotCaServer))?;
        match info.identity {
            Some(id) if id.role == Role::Ca => Ok(ServerCertVerified::assertion()),
            _ => Err(other(TrustError::NotCaServer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn other(err: TrustError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

/// A `HOST:PORT` the CA listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address, as given.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddr {
    /// Parses `host`, `host:port`, `[v6]:port` or `v6`; the port defaults to 8443.
    ///
    /// # Errors
    /// [`ConnectError::BadAddress`] when the text is empty or the port is not a number.
    pub fn parse(text: &str) -> Result<Self, ConnectError> {
        let bad = || ConnectError::BadAddress(text.to_string());
        let text = text.trim();
        let text = text
            .strip_prefix("https://")
            .unwrap_or(text)
            .trim_end_matches('/');
        if text.is_empty() {
            return Err(bad());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(ServerAddr {
                host: ip.to_string(),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return Err(bad()),
            };
            (host.to_string(), port)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (text.to_string(), DEFAULT_PORT),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            return Err(bad());
        }
        Ok(ServerAddr { host, port })
    }

    fn server_name(&self) -> Result<ServerName<'static>, ConnectError> {
        ServerName::try_from(self.host.clone())
            .map_err(|_| ConnectError::BadAddress(self.to_string()))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Opens a gRPC channel to the CA over TLS with `config`.
///
/// The first connection is made here, so an unreachable server or an untrusted one is
/// reported now, precisely; later reconnects happen inside the channel.
///
/// # Errors
/// [`ConnectError`] classifying the failure.
pub async fn connect(
    addr: &ServerAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, ConnectError> {
    let connector = TlsConnector::from(config);
    let name = addr.server_name()?;
    let first = dial(addr, &connector, name.clone()).await?;
    let slot = Arc::new(Mutex::new(Some(first)));
    let addr_owned = addr.clone();
    let service = tower::service_fn(move |_: Uri| {
        let slot = slot.clone();
        let connector = connector.clone();
        let name = name.clone();
        let addr = addr_owned.clone();
        async move {
            let ready = slot.lock().map(|mut s| s.take()).unwrap_or(None);
            let stream = match ready {
                Some(stream) => stream,
                None => dial(&addr, &connector, name).await?,
            };
            Ok::<_, ConnectError>(TokioIo::new(stream))
        }
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| ConnectError::BadAddress(addr.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true);
    endpoint
        .connect_with_connector(service)
        .await
        .map_err(|e| ConnectError::Tls(e.to_string()))
}

async fn dial(
    addr: &ServerAddr,
    connector: &TlsConnector,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let target = (addr.host.as_str(), addr.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| ConnectError::Unreachable {
            addr: addr.to_string(),
            detail: "timed out".into(),
        })?
        .map_err(|e| ConnectError::Unreachable {
            addr: addr.to_string(),
            detail: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| ConnectError::Unreachable {
            addr: addr.to_string(),
            detail: "TLS handshake timed out".into(),
        })?
        .map_err(|e| classify_tls(addr, e))
}

fn classify_tls(addr: &ServerAddr, err: std::io::Error) -> ConnectError {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return ConnectError::Unreachable {
            addr: addr.to_string(),
            detail: err.to_string(),
        };
    };
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = tls
        && let Some(trust) = inner.downcast_ref::<TrustError>()
    {
        return match trust {
            TrustError::RootMismatch => ConnectError::RootMismatch,
            TrustError::NotCaServer => ConnectError::Untrusted(trust.to_string()),
        };
    }
    match tls {
        rustls::Error::InvalidCertificate(e) => certificate_refused(e),
        rustls::Error::AlertReceived(alert) => ConnectError::Tls(format!(
            "the CA ended the handshake: {}",
            alert_words(*alert)
        )),
        _ => ConnectError::Tls("the TLS handshake with the CA failed".into()),
    }
}

/// Why the CA's certificate was refused, in words (rustls says most of it only in its
/// debug text): a certificate not valid by this clock is a clock problem of its own.
fn certificate_refused(e: &CertificateError) -> ConnectError {
    let from_unix = |t: &UnixTime| {
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
            .map(dtca_pki::duration::timestamp)
            .unwrap_or_default()
    };
    let why = match e {
        CertificateError::NotValidYetContext { time, not_before } => {
            return ConnectError::ClockSkew(format!(
                "the CA's TLS certificate is valid from {}, but this machine's clock says {}: this clock is behind; set it right (NTP) and try again",
                from_unix(not_before),
                from_unix(time)
            ));
        }
        CertificateError::NotValidYet => {
            return ConnectError::ClockSkew(
                "the CA's TLS certificate is not valid yet by this machine's clock: this clock is behind; set it right (NTP) and try again".into(),
            );
        }
        CertificateError::ExpiredContext { time, not_after } => {
            return ConnectError::ClockSkew(format!(
                "the CA's TLS certificate expired at {}, and this machine's clock says {}: if this clock is ahead, set it right (NTP); otherwise the CA's certificate has not been renewed",
                from_unix(not_after),
                from_unix(time)
            ));
        }
        CertificateError::Expired => {
            return ConnectError::ClockSkew(
                "the CA's TLS certificate has expired by this machine's clock: if this clock is ahead, set it right (NTP)".into(),
            );
        }
        CertificateError::UnknownIssuer => "it is not issued by the trusted root",
        CertificateError::BadSignature => "a signature in its chain does not verify",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the name the CA was reached by (add that name with `ca-server serve --san`)"
        }
        CertificateError::Revoked => "it is revoked",
        CertificateError::BadEncoding => "it is not a well-formed certificate",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not a TLS server certificate"
        }
        _ => "it does not verify",
    };
    ConnectError::Untrusted(why.into())
}

/// A TLS alert from the CA in words.
fn alert_words(alert: rustls::AlertDescription) -> &'static str {
    use rustls::AlertDescription as A;
    match alert {
        A::BadCertificate | A::UnsupportedCertificate => {
            "it did not accept this client's certificate"
        }
        A::CertificateExpired => {
            "it says this client's certificate has expired (or a clock is wrong)"
        }
        A::CertificateRevoked => "it says this client's certificate is revoked",
        A::CertificateRequired => "it wants a client certificate",
        A::UnknownCA => "it does not know the issuer of this client's certificate",
        A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity => {
            "no TLS version or cipher suite in common"
        }
        _ => "a TLS alert",
    }
}

/// Why no channel to the CA could be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid server address {0:?}: use HOST:PORT")]
    BadAddress(String),
    #[error("cannot reach the CA at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error(
        "the server's root CA does not match the digest in the join token: refusing to send anything (wrong server, a token from another CA, or one made before a root rotation that has finished since: ask for a new token)"
    )]
    RootMismatch,
    #[error("the CA server's certificate was not accepted: {0}")]
    Untrusted(String),
    #[error("{0}")]
    ClockSkew(String),
    #[error("TLS failure talking to the CA: {0}")]
    Tls(String),
}

impl ConnectError {
    /// The refusal reason (and so the exit code) of this failure.
    pub fn reason(&self) -> Reason {
        match self {
            ConnectError::BadAddress(_) => Reason::InvalidArgument,
            ConnectError::Unreachable { .. } => Reason::Unreachable,
            ConnectError::RootMismatch => Reason::RootMismatch,
            ConnectError::Untrusted(_) | ConnectError::Tls(_) => Reason::ServerUntrusted,
            ConnectError::ClockSkew(_) => Reason::ClockSkew,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a client whose clock was behind the CA's saw rustls's debug text
    /// (`NotValidYetContext { time: UnixTime(..), .. }`).
    #[test]
    fn a_certificate_not_valid_by_this_clock_is_a_clock_problem_in_words() {
        let e = certificate_refused(&CertificateError::NotValidYetContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_795_773_000)),
            not_before: UnixTime::since_unix_epoch(Duration::from_secs(1_795_773_300)),
        });
        assert_eq!(e.reason(), Reason::ClockSkew);
        let text = e.to_string();
        assert!(text.contains("2026-11-27 09:55:00Z"), "{text}");
        assert!(text.contains("clock is behind"), "{text}");
        for e in [
            CertificateError::UnknownIssuer,
            CertificateError::NotValidForName,
            CertificateError::BadEncoding,
            CertificateError::Expired,
            CertificateError::ApplicationVerificationFailure,
        ] {
            let text = certificate_refused(&e).to_string();
            assert!(
                !text.contains("UnknownIssuer")
                    && !text.contains("NotValid")
                    && !text.contains("Application")
                    && !text.contains('{'),
                "{text}"
            );
        }
    }

    #[test]
    fn parses_server_addresses() {
        let a = ServerAddr::parse("ca.example:9443").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("ca.example", 9443));
        assert_eq!(ServerAddr::parse("ca.example").unwrap().port, DEFAULT_PORT);
        assert_eq!(ServerAddr::parse("[::1]:8443").unwrap().host, "::1");
        assert_eq!(ServerAddr::parse("::1").unwrap().to_string(), "[::1]:8443");
        assert_eq!(
            ServerAddr::parse("https://10.0.0.1:1234/")
                .unwrap()
                .to_string(),
            "10.0.0.1:1234"
        );
        for bad in ["", "host:port", "[::1", "a b:1", "h:99999"] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
