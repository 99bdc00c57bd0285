//! Server-side TLS: rustls with a hot-swappable server certificate, and client
//! certificates requested but not required.
//!
//! The handshake proves that a client holds the key of the certificate it presents; the
//! chain itself is judged by `Registrar::authenticate` for each call that needs it, so that
//! an expired certificate gets a clear "expired, re-enroll" answer (and an optional renewal
//! grace) instead of a bare TLS alert, and a revocation is honoured at once by every
//! replica. Calls that need no certificate (trust bundle, enrollment) work without one.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use dtca_common::tls::provider;
use dtca_pki::key::PrivateKey;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;

/// The server certificate in use; replaced when the server's own certificate is renewed.
#[derive(Debug)]
pub struct CertSlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSlot {
    /// A slot holding `chain` (leaf first) and its key.
    ///
    /// # Errors
    /// [`rustls::Error`] when the key is unusable.
    pub fn new(chain: &[Vec<u8>], key: &PrivateKey) -> Result<Arc<Self>, rustls::Error> {
        Ok(Arc::new(CertSlot {
            current: RwLock::new(certified_key(chain, key)?),
        }))
    }

    /// Serves `chain` and `key` from the next handshake on.
    ///
    /// # Errors
    /// [`rustls::Error`] when the key is unusable; the old certificate stays in use.
    pub fn replace(&self, chain: &[Vec<u8>], key: &PrivateKey) -> Result<(), rustls::Error> {
        let new = certified_key(chain, key)?;
        if let Ok(mut current) = self.current.write() {
            *current = new;
        }
        Ok(())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn certified_key(chain: &[Vec<u8>], key: &PrivateKey) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
    let signing = provider().key_provider.load_private_key(der)?;
    let certs = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

/// Builds the server's rustls config: TLS 1.3 and 1.2, h2, client certificates optional.
///
/// # Errors
/// [`rustls::Error`] when the protocol versions are not supported by the provider.
pub fn server_config(
    slot: Arc<CertSlot>,
    roots: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert {
        // The roots trusted at start (a hint only: the registrar judges every chain).
        hints: roots
            .iter()
            .filter_map(|r| dtca_pki::inspect::subject_der(r))
            .map(DistinguishedName::from)
            .collect(),
        provider: provider.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Requests a client certificate, checks the handshake signature made with its key, and
/// leaves the judgement of the chain to the registrar (see the module docs).
#[derive(Debug)]
struct AnyClientCert {
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// What a gRPC handler knows about the connection it is called on.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The client certificate chain (leaf first, DER), when one was presented.
    pub chain: Option<Arc<Vec<Vec<u8>>>>,
}

impl PeerInfo {
    /// The caller of a connection whose handshake has finished.
    pub fn of(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        let (tcp, session) = tls.get_ref();
        PeerInfo {
            remote: tcp.peer_addr().ok(),
            chain: session
                .peer_certificates()
                .map(|certs| Arc::new(certs.iter().map(|c| c.to_vec()).collect())),
        }
    }
}
