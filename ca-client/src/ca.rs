//! Talking to the CA: first contact pinned by the token's root digest, later calls with
//! the current certificate; and checking every certificate the CA hands back before
//! anything is written.

use dtca_common::bundle::Bundle;
use dtca_common::endpoint::EngineAddr;
use dtca_common::tls::{self, ServerAddr, Trust};
use dtca_pki::chain::{self, Usage};
use dtca_pki::csr;
use dtca_pki::identity::{Identity, Role};
use dtca_pki::inspect::{self, CertInfo};
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::token::{JoinToken, RootDigest};
use dtca_proto::v1::{self, ca_client::CaClient};
use time::OffsetDateTime;
use tonic::transport::Channel;

use crate::error::{BadAnswer, ClientError, Invalid};
use crate::sans::Sans;

/// What the CA said about itself at first contact.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// Cluster name.
    pub cluster: String,
    /// Root certificate, DER, checked against the token's digest.
    pub root_der: Vec<u8>,
}

/// Connects before enrollment: the server must present a chain with the pinned root.
/// Nothing is sent before the handshake has proven that.
///
/// # Errors
/// [`ClientError::Connect`] (root mismatch, unreachable) or a refusal.
pub async fn first_contact(
    addr: &ServerAddr,
    pin: RootDigest,
) -> Result<(CaClient<Channel>, Trusted), ClientError> {
    let config = tls::client_config(Trust::Pinned(pin), None)?;
    let channel = tls::connect(addr, config).await?;
    let mut client = CaClient::new(channel);
    let bundle = client
        .trust_bundle(v1::TrustBundleRequest {})
        .await?
        .into_inner();
    let mut roots = inspect::certs_from_pem(&bundle.root_pem).map_err(BadAnswer::TrustBundle)?;
    roots.extend(bundle.roots_der);
    // The handshake already proved the server holds this root; the bundle must say the same
    // (during a root rotation it holds two, and the token pins one of them).
    let Some(root_der) = roots.into_iter().find(|r| pin.matches(r)) else {
        return Err(tls::ConnectError::RootMismatch.into());
    };
    Ok((
        client,
        Trusted {
            cluster: bundle.cluster,
            root_der,
        },
    ))
}

/// Connects with a certificate this CA issued.
///
/// # Errors
/// [`ClientError::Connect`].
pub async fn authenticated(
    addr: &ServerAddr,
    bundle: &Bundle,
) -> Result<CaClient<Channel>, ClientError> {
    let config = tls::client_config(
        Trust::Roots(bundle.roots.clone()),
        Some(bundle.client_identity()),
    )?;
    Ok(CaClient::new(tls::connect(addr, config).await?))
}

/// Tells the CA where this node's engine listens, so operators' `login` finds it.
///
/// # Errors
/// [`ClientError`] when the CA cannot be reached or refuses.
pub async fn report_engine(
    addr: &ServerAddr,
    bundle: &Bundle,
    endpoint: &EngineAddr,
) -> Result<(), ClientError> {
    let mut client = authenticated(addr, bundle).await?;
    client
        .report_engine(v1::ReportEngineRequest {
            endpoint: endpoint.to_string(),
        })
        .await?;
    Ok(())
}

/// Sends the agent's report.
///
/// # Errors
/// [`ClientError`] when the CA cannot be reached or refuses.
pub async fn report(
    addr: &ServerAddr,
    bundle: &Bundle,
    report: v1::AgentReport,
) -> Result<(), ClientError> {
    authenticated(addr, bundle).await?.report(report).await?;
    Ok(())
}

/// The trust bundle as the CA serves it now, checked against the roots `bundle` trusts:
/// every root it holds, DER, the first the cluster's current one.
///
/// # Errors
/// [`ClientError`] when the CA cannot be reached, or [`BadAnswer`] when the bundle does
/// not parse.
pub async fn trust_bundle(addr: &ServerAddr, bundle: &Bundle) -> Result<Vec<Vec<u8>>, ClientError> {
    let answer = authenticated(addr, bundle)
        .await?
        .trust_bundle(v1::TrustBundleRequest {})
        .await?
        .into_inner();
    if !answer.roots_der.is_empty() {
        return Ok(answer.roots_der);
    }
    Ok(inspect::certs_from_pem(&answer.root_pem).map_err(BadAnswer::TrustBundle)?)
}

/// Generates a key and enrolls with a token over an open first-contact connection.
///
/// # Errors
/// A refusal from the CA, or [`ClientError::BadAnswer`] when the certificate it returns is
/// not right.
pub async fn enroll(
    client: &mut CaClient<Channel>,
    trusted: &Trusted,
    token: &JoinToken,
    name: &str,
    sans: &Sans,
    key_type: KeyType,
) -> Result<Bundle, ClientError> {
    let key = PrivateKey::generate(key_type).map_err(Invalid::Key)?;
    let csr = csr::build(&key, name, &sans.dns, &sans.ips).map_err(Invalid::Csr)?;
    let issued = client
        .enroll(v1::EnrollRequest {
            token: token.expose(),
            csr_der: csr,
            name: name.to_string(),
        })
        .await?
        .into_inner();
    accept(
        issued,
        std::slice::from_ref(&trusted.root_der),
        key,
        &trusted.cluster,
        None,
    )
}

/// Renews over an authenticated connection: a new key, the given names, same identity.
///
/// # Errors
/// A refusal from the CA, or [`ClientError::BadAnswer`].
pub async fn renew(
    client: &mut CaClient<Channel>,
    current: &Bundle,
    sans: &Sans,
    key_type: KeyType,
) -> Result<Bundle, ClientError> {
    let leaf = current.leaf()?;
    let identity = leaf.identity.clone().ok_or(Invalid::NoIdentity)?;
    let key = PrivateKey::generate(key_type).map_err(Invalid::Key)?;
    let csr = csr::build(&key, &identity.name, &sans.dns, &sans.ips).map_err(Invalid::Csr)?;
    let issued = client
        .renew(v1::RenewRequest { csr_der: csr })
        .await?
        .into_inner();
    accept(
        issued,
        &current.roots,
        key,
        &identity.cluster,
        Some(&identity),
    )
}

/// Checks an issued certificate before it may be written: it chains to the trusted root,
/// certifies our key, is valid now, and carries the expected identity.
fn accept(
    issued: v1::IssuedCertificate,
    roots: &[Vec<u8>],
    key: PrivateKey,
    cluster: &str,
    identity: Option<&Identity>,
) -> Result<Bundle, ClientError> {
    let info = CertInfo::from_der(&issued.leaf_der).map_err(BadAnswer::Certificate)?;
    let mut intermediates = vec![issued.intermediate_der.clone()];
    // During a root rotation the new root cross-signed by the old one follows.
    intermediates.extend(issued.chain_der.iter().cloned());
    // A node's certificate is a server's (it is never a docker client); the others are
    // clients'.
    let usage = match info.identity.as_ref().map(|i| i.role) {
        Some(Role::Node) => Usage::Server,
        _ => Usage::Client,
    };
    let trusted: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    chain::verify_any(
        &issued.leaf_der,
        &intermediates,
        &trusted,
        OffsetDateTime::now_utc(),
        usage,
    )
    .map_err(BadAnswer::Chain)?;
    if info.public_key_der != key.public_key_der() {
        return Err(BadAnswer::NotOurKey.into());
    }
    let got = info.identity.as_ref().ok_or(BadAnswer::NoIdentity)?;
    if got.cluster != cluster || identity.is_some_and(|want| want != got) {
        return Err(BadAnswer::UnexpectedIdentity { uri: got.uri() }.into());
    }
    // The CA's bundle (two roots during a root rotation) arrived over a connection that
    // was checked against the roots trusted so far.
    let roots = if issued.roots_der.is_empty() {
        roots.to_vec()
    } else {
        issued.roots_der
    };
    let mut chain = vec![issued.leaf_der];
    chain.extend(intermediates);
    Ok(Bundle { roots, chain, key })
}
