//! Who may connect to the guard: a client certificate that chains to one of the cluster's
//! roots (two during a root rotation) and carries a client usage, and what that
//! certificate is once the handshake is done (an operator with an access level, or a
//! node, which is no docker client).
//!
//! The handshake refuses what cannot be answered in HTTP at all: no certificate, a foreign
//! or expired one. A node certificate and a revoked one are let through the handshake and
//! refused on every request with a Docker-style 403 (`{"message": ...}`), which the docker
//! CLI prints, instead of a bare `bad certificate`.

use std::sync::Arc;

use dtca_pki::Serial;
use dtca_pki::access::{Access, READ_ONLY_EKU_DER};
use dtca_pki::inspect::CertInfo;
use dtca_pki::{Identity, Role};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use webpki::{EndEntityCert, KeyUsage};

/// DER contents of the clientAuth EKU (1.3.6.1.5.5.7.3.2).
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// DER contents of the serverAuth EKU (1.3.6.1.5.5.7.3.1).
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// Verifies client certificates against the trust bundle the guard was built with.
#[derive(Debug)]
pub(crate) struct ClusterVerifier {
    roots: Vec<TrustAnchor<'static>>,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClusterVerifier {
    /// A verifier trusting `roots` (DER).
    ///
    /// # Errors
    /// A root that is not a usable trust anchor.
    pub(crate) fn new(roots: &[Vec<u8>], provider: &CryptoProvider) -> Result<Self, String> {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store
                .add(CertificateDer::from(root.clone()))
                .map_err(|e| format!("root certificate: {e}"))?;
        }
        if store.is_empty() {
            return Err("the trust bundle holds no root".into());
        }
        Ok(ClusterVerifier {
            hints: store.subjects(),
            roots: store.roots,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// Whether `leaf` chains to a root through `intermediates` for the EKU `usage`.
    /// webpki checks the EKU of every certificate of the path, and dtca's intermediates
    /// carry none, so the usage is "required if present"; what the leaf itself carries
    /// decides its access after the handshake ([`Client::from_leaf`]: no client usage,
    /// no access).
    fn chains_for(
        &self,
        leaf: &EndEntityCert<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: &'static [u8],
    ) -> Result<(), webpki::Error> {
        leaf.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            KeyUsage::required_if_present(usage),
            None,
            None,
        )
        .map(|_| ())
    }
}

impl ClientCertVerifier for ClusterVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let leaf = EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        // Full access, a restricted level, or a node certificate (chained, refused later
        // with a message): each must chain to the bundle for its own usage.
        let first = self.chains_for(&leaf, intermediates, now, CLIENT_AUTH);
        if first.is_ok()
            || self
                .chains_for(&leaf, intermediates, now, READ_ONLY_EKU_DER)
                .is_ok()
            || self
                .chains_for(&leaf, intermediates, now, SERVER_AUTH)
                .is_ok()
        {
            return Ok(ClientCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(match first {
            Err(webpki::Error::CertExpired { .. }) => CertificateError::Expired,
            Err(webpki::Error::CertNotValidYet { .. }) => CertificateError::NotValidYet,
            Err(webpki::Error::UnknownIssuer) => CertificateError::UnknownIssuer,
            _ => CertificateError::BadSignature,
        }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Who is on the other end of a guard connection, read from its verified leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    /// The certificate's serial (revocations name it).
    pub(crate) serial: Serial,
    /// `dtca://cluster/role/name`, or the subject when there is no dtca identity.
    pub(crate) identity: String,
    /// What it may do; `None`: nothing (a node certificate, or no client usage at all).
    pub(crate) access: Option<Access>,
}

impl Client {
    /// Reads the client from its leaf (already verified by [`ClusterVerifier`]).
    ///
    /// # Errors
    /// A leaf that does not parse (cannot happen after verification).
    pub(crate) fn from_leaf(der: &[u8]) -> Result<Client, String> {
        let info = CertInfo::from_der(der).map_err(|e| e.to_string())?;
        // Any dtca level (an unknown one too) restricts: see `Access::of_ekus`.
        let read_only = info.access != Access::Full;
        let identity = info
            .identity
            .as_ref()
            .map_or_else(|| info.subject.clone(), Identity::uri);
        let node = info.identity.as_ref().is_some_and(|i| i.role == Role::Node);
        // Fail closed: a restricted EKU wins over clientAuth, a node is never a client.
        let access = match (node, read_only, info.client_auth) {
            (true, _, _) => None,
            (false, true, _) => Some(Access::ReadOnly),
            (false, false, true) => Some(Access::Full),
            (false, false, false) => None,
        };
        Ok(Client {
            serial: info.serial,
            identity,
            access,
        })
    }
}

/// The verifier as rustls wants it.
pub(crate) fn verifier(
    roots: &[Vec<u8>],
    provider: &CryptoProvider,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    Ok(Arc::new(ClusterVerifier::new(roots, provider)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtca_common::bundle::{Bundle, sample};

    fn check(verifier: &ClusterVerifier, bundle: &Bundle) -> Result<(), rustls::Error> {
        let leaf = CertificateDer::from(bundle.chain[0].clone());
        let rest: Vec<CertificateDer<'_>> = bundle.chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        verifier
            .verify_client_cert(&leaf, &rest, UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn operators_and_nodes_of_the_cluster_pass_the_handshake_and_are_told_apart() {
        let provider = dtca_common::tls::provider();
        let operator = sample("c", Role::Operator, "ann", &[]);
        let verifier = ClusterVerifier::new(&operator.roots, &provider).unwrap();
        check(&verifier, &operator).unwrap();
        let client = Client::from_leaf(&operator.chain[0]).unwrap();
        assert_eq!(client.access, Some(Access::Full));
        assert_eq!(client.identity, "dtca://c/operator/ann");
    }

    #[test]
    fn a_node_certificate_passes_the_handshake_but_has_no_access() {
        let provider = dtca_common::tls::provider();
        let node = sample("c", Role::Node, "n1", &["n1.example"]);
        let verifier = ClusterVerifier::new(&node.roots, &provider).unwrap();
        check(&verifier, &node).unwrap();
        assert_eq!(Client::from_leaf(&node.chain[0]).unwrap().access, None);
    }

    #[test]
    fn refuses_an_expired_certificate() {
        let provider = dtca_common::tls::provider();
        let operator = sample("c", Role::Operator, "ann", &[]);
        let verifier = ClusterVerifier::new(&operator.roots, &provider).unwrap();
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            UnixTime::now().as_secs() + 2 * 3600,
        ));
        let leaf = CertificateDer::from(operator.chain[0].clone());
        let rest = [CertificateDer::from(operator.chain[1].clone())];
        assert_eq!(
            verifier
                .verify_client_cert(&leaf, &rest, later)
                .unwrap_err(),
            rustls::Error::InvalidCertificate(CertificateError::Expired)
        );
    }

    #[test]
    fn refuses_a_certificate_of_another_cluster() {
        let provider = dtca_common::tls::provider();
        let ours = sample("c", Role::Operator, "ann", &[]);
        let theirs = sample("c", Role::Operator, "ann", &[]);
        let verifier = ClusterVerifier::new(&ours.roots, &provider).unwrap();
        assert!(check(&verifier, &theirs).is_err());
    }

    #[test]
    fn oids_encode_as_der_contents() {
        use dtca_pki::access::{READ_ONLY_EKU, oid_der};
        assert_eq!(oid_der("1.3.6.1.5.5.7.3.2").unwrap(), CLIENT_AUTH);
        assert_eq!(oid_der("1.3.6.1.5.5.7.3.1").unwrap(), SERVER_AUTH);
        assert_eq!(oid_der(READ_ONLY_EKU).unwrap(), READ_ONLY_EKU_DER);
    }
}
