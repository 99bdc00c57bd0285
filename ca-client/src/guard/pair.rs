//! The pair and trust bundle the guard serves, read from the credential directory into a
//! TLS server configuration, and the files' modification times that say when to read
//! them again.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::provider;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Loaded, verify};
use crate::error::GuardFailure;

/// The files the guard serves, as they are on disk: a TLS server configuration.
pub(super) fn load(out: &Path) -> Result<Loaded, GuardFailure> {
    let stamp = stamp(out);
    let bundle =
        Bundle::load(out, Layout::CLIENT).map_err(|e| GuardFailure::Pair(e.to_string()))?;
    let serial = bundle
        .leaf()
        .map_err(|e| GuardFailure::Pair(e.to_string()))?
        .serial;
    // AES-128-GCM first, whatever the client lists first, as dockerd (Go) chooses: the
    // cheaper cipher for bulk copies (OpenSSL clients such as curl list AES-256 first).
    let mut fast = (*provider()).clone();
    fast.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(fast);
    let verifier = verify::verifier(&bundle.roots, &provider).map_err(GuardFailure::Pair)?;
    let chain: Vec<CertificateDer<'static>> = bundle
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bundle.key.pkcs8_der().to_vec()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GuardFailure::Pair(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| GuardFailure::Pair(e.to_string()))?;
    config.ignore_client_order = true;
    Ok(Loaded {
        config: Arc::new(config),
        serial,
        stamp,
    })
}

/// The modification times of the files the guard serves.
pub(super) fn stamp(out: &Path) -> Vec<Option<SystemTime>> {
    let layout = Layout::CLIENT;
    [layout.ca, layout.cert, layout.key]
        .iter()
        .map(|name| {
            std::fs::metadata(out.join(name))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}
