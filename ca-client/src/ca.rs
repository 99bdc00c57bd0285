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
use dtca_pki::policy::SanPolicy;
use dtca_pki::token::{JoinToken, RootDigest};
use dtca_proto::v1::{self, ca_client::CaClient};
use time::OffsetDateTime;
use tonic::transport::Channel;

use crate::clock::{self, CaClock};
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
    let received = OffsetDateTime::now_utc();
    let mut roots = inspect::certs_from_pem(&bundle.root_pem).map_err(BadAnswer::TrustBundle)?;
    roots.extend(bundle.roots_der.iter().cloned());
    // The handshake already proved the server holds this root; the bundle must say the same
    // (during a root rotation it holds two, and the token pins one of them).
    let Some(root_der) = roots.into_iter().find(|r| pin.matches(r)) else {
        return Err(tls::ConnectError::RootMismatch.into());
    };
    // Before the token is spent: would this clock accept what the CA issues now?
    check_clock(&bundle, received)?;
    Ok((
        client,
        Trusted {
            cluster: bundle.cluster,
            root_der,
        },
    ))
}

/// What a join token allows, as the CA says over a first-contact connection (so pinned
/// by the token's root digest). Spends nothing. `None` from a CA too old to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// Role of the certificate the token enrolls.
    pub role: Role,
    /// The identity name the token fixes, if it does.
    pub name: Option<String>,
    /// The names a node certificate may carry.
    pub policy: SanPolicy,
    /// When the token stops being accepted.
    pub expires_at: OffsetDateTime,
    /// Enrolling takes the name from the identity holding it.
    pub replace: bool,
}

/// Asks the CA what `token` allows, before a use of it is spent.
///
/// # Errors
/// The CA's refusal of the token (unknown, expired, revoked, used up: as enrollment would
/// say), or [`ClientError::BadAnswer`] for an answer that does not parse.
pub async fn token_allowance(
    client: &mut CaClient<Channel>,
    token: &JoinToken,
) -> Result<Option<Allowance>, ClientError> {
    let answer = match client
        .token_allowance(v1::TokenAllowanceRequest {
            token: token.expose(),
        })
        .await
    {
        Ok(answer) => answer.into_inner(),
        // A CA from before the call existed: enrollment will say what it refuses.
        Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
        Err(status) => return Err(status.into()),
    };
    let role = match v1::Role::try_from(answer.role) {
        Ok(v1::Role::Node) => Role::Node,
        Ok(v1::Role::Operator) => Role::Operator,
        Ok(v1::Role::Admin) => Role::Admin,
        _ => return Err(BadAnswer::Allowance(format!("role {}", answer.role)).into()),
    };
    let policy = SanPolicy::parse(&answer.allow_dns, &answer.allow_ip)
        .map_err(|e| BadAnswer::Allowance(e.to_string()))?;
    let expires_at = OffsetDateTime::from_unix_timestamp(answer.expires_unix)
        .map_err(|e| BadAnswer::Allowance(e.to_string()))?;
    Ok(Some(Allowance {
        role,
        name: Some(answer.name).filter(|n| !n.is_empty()),
        policy,
        expires_at,
        replace: answer.replace,
    }))
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

/// What the CA says of a certificate, asked online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The certificate is on the CA's CRL.
    pub revoked: bool,
    /// The CA's clock, from the CRL it signed for this request (its thisUpdate is
    /// backdated by the leaves' backdate).
    pub ca_time: OffsetDateTime,
}

/// Whether the CA has revoked `bundle`'s certificate, asked online: its CRL, fetched over
/// a connection that trusts the bundle's root, checked against the intermediate the CA
/// serves now.
///
/// # Errors
/// [`ClientError::Connect`] when the CA cannot be reached; [`ClientError::BadAnswer`]
/// for a CRL that does not verify.
pub async fn revocation(addr: &ServerAddr, bundle: &Bundle) -> Result<Revocation, ClientError> {
    let serial = bundle.leaf()?.serial;
    let info = crl(addr, bundle).await?;
    Ok(Revocation {
        revoked: info.revoked.contains(&serial),
        ca_time: info.this_update + dtca_pki::profile::BACKDATE,
    })
}

/// Every serial on the CA's CRL (the guard refuses them), fetched as [`revocation`] does.
///
/// # Errors
/// As [`revocation`].
pub async fn revoked_serials(
    addr: &ServerAddr,
    bundle: &Bundle,
) -> Result<Vec<dtca_pki::Serial>, ClientError> {
    Ok(crl(addr, bundle).await?.revoked)
}

/// The CA's CRL, fetched over a connection that trusts `bundle`'s roots, checked against
/// the intermediate the CA serves now (or the one in `bundle`'s chain).
async fn crl(addr: &ServerAddr, bundle: &Bundle) -> Result<inspect::CrlInfo, ClientError> {
    let config = tls::client_config(Trust::Roots(bundle.roots.clone()), None)?;
    let mut client = CaClient::new(tls::connect(addr, config).await?);
    let trust = client
        .trust_bundle(v1::TrustBundleRequest {})
        .await?
        .into_inner();
    let crl = client.crl(v1::CrlRequest {}).await?.into_inner().crl_der;
    let mut issuers =
        inspect::certs_from_pem(&trust.intermediate_pem).map_err(BadAnswer::TrustBundle)?;
    issuers.extend(bundle.chain.iter().skip(1).cloned());
    let mut last = None;
    for issuer in &issuers {
        match inspect::read_crl(&crl, issuer) {
            Ok(info) => return Ok(info),
            Err(e) => last = Some(e),
        }
    }
    Err(BadAnswer::TrustBundle(
        last.unwrap_or_else(|| inspect::InspectError::Malformed("no intermediate".into())),
    )
    .into())
}

/// Whether the CA has revoked `bundle`'s certificate (see [`revocation`]).
///
/// # Errors
/// As [`revocation`].
pub async fn is_revoked(addr: &ServerAddr, bundle: &Bundle) -> Result<bool, ClientError> {
    Ok(revocation(addr, bundle).await?.revoked)
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

/// Asks for (or renews) this node's restart slot; `swarm_cluster` is the swarm the
/// engine manages, if it is a manager.
///
/// # Errors
/// [`ClientError`] when the CA cannot be reached or refuses. `None` from a CA that
/// predates restart slots (it does not know the call).
pub async fn request_restart(
    addr: &ServerAddr,
    bundle: &Bundle,
    swarm_cluster: Option<&str>,
) -> Result<Option<v1::RestartReply>, ClientError> {
    let answer = authenticated(addr, bundle)
        .await?
        .request_restart(v1::RestartRequest {
            swarm_cluster: swarm_cluster.unwrap_or_default().to_string(),
            reason: "rotation".into(),
        })
        .await;
    match answer {
        Ok(reply) => Ok(Some(reply.into_inner())),
        Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
        Err(status) => Err(status.into()),
    }
}

/// Gives this node's restart slot back; false when it held none any more.
///
/// # Errors
/// [`ClientError`] when the CA cannot be reached or refuses.
pub async fn release_restart(
    addr: &ServerAddr,
    bundle: &Bundle,
    outcome: &str,
) -> Result<bool, ClientError> {
    Ok(authenticated(addr, bundle)
        .await?
        .release_restart(v1::RestartRelease {
            outcome: outcome.to_string(),
        })
        .await?
        .into_inner()
        .released)
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
    // A renewal spends no token, but the CA would mark the current certificate renewed
    // for a new one this clock refuses: ask the CA's time first.
    let bundle = client
        .trust_bundle(v1::TrustBundleRequest {})
        .await?
        .into_inner();
    check_clock(&bundle, OffsetDateTime::now_utc())?;
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

/// Refuses, before anything is spent, when this machine's clock (at `received`, when the
/// trust bundle arrived) would not accept a certificate the CA issues now or its CA
/// certificates. A server too old to send its time is not judged.
///
/// # Errors
/// [`ClientError::Clock`], or [`BadAnswer::TrustBundle`] for a bundle that does not parse.
fn check_clock(
    bundle: &v1::TrustBundleResponse,
    received: OffsetDateTime,
) -> Result<(), ClientError> {
    if bundle.server_time_unix_ms == 0 {
        return Ok(());
    }
    let at = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(bundle.server_time_unix_ms) * 1_000_000,
    )
    .map_err(|e| BadAnswer::Clock(e.to_string()))?;
    let ca = CaClock {
        at,
        backdate: std::time::Duration::from_secs(
            u64::try_from(bundle.leaf_backdate_seconds).unwrap_or(0),
        ),
    };
    let first = |pem: &str| -> Result<CertInfo, ClientError> {
        let der = inspect::certs_from_pem(pem)
            .map_err(BadAnswer::TrustBundle)?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(CertInfo::from_der(&der).map_err(BadAnswer::TrustBundle)?)
    };
    let root = first(&bundle.root_pem)?;
    let intermediate = first(&bundle.intermediate_pem)?;
    clock::judge(
        ca,
        received,
        &[("root", &root), ("intermediate", &intermediate)],
    )?;
    Ok(())
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
    let usage = Usage::of(&info);
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
