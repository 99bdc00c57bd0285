//! Where every node and operator stands during a root rotation: which root its current
//! certificate chains to, whether it already trusts the new root, when it was last heard
//! from. `ca status` shows it; `rotate-root --finish` waits for it.

use std::collections::HashMap;

use dtca_pki::identity::Role;
use dtca_pki::inspect::CertInfo;
use dtca_pki::token::RootDigest;
use time::OffsetDateTime;

use super::{CaState, LifecycleError};
use crate::store::Store;

/// One identity's current certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its role.
    pub role: Role,
    /// Its name.
    pub name: String,
    /// The serial of its newest current certificate.
    pub serial: String,
    /// The root that certificate chains to through its own intermediate.
    pub root: Option<RootDigest>,
    /// It holds the bundle with the new root: its certificate chains to the new root (it
    /// came with the two-root bundle), or its agent reports trusting the new root.
    pub trusts_new_root: bool,
    /// When the certificate was issued.
    pub issued_at: OffsetDateTime,
    /// When it was last heard from: its issuance, its first authenticated call, or its
    /// agent's last report, whichever is newest.
    pub last_seen: OffsetDateTime,
    /// When the certificate ends.
    pub not_after: OffsetDateTime,
    /// Its certificate chains only to a root other than the active one.
    pub lagging: bool,
}

/// Every identity's newest current certificate, judged against `state`.
///
/// # Errors
/// [`LifecycleError::Store`].
pub async fn members(
    store: &dyn Store,
    state: &CaState,
    now: OffsetDateTime,
) -> Result<Vec<Member>, LifecycleError> {
    let reports: HashMap<String, _> = store
        .reports(OffsetDateTime::UNIX_EPOCH)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let lineage = state.lineage();
    let active = lineage.active_root();
    let new_digest = active.digest().to_string();
    let mut newest: HashMap<(Role, String), Member> = HashMap::new();
    for cert in store.current_certificates(now).await? {
        let id = &cert.summary.identity;
        if id.role == Role::Ca {
            continue;
        }
        let Ok(info) = CertInfo::from_der(&cert.der) else {
            continue;
        };
        let root = lineage.root_of_leaf(&info);
        let lagging = root.is_none_or(|r| r.der != active.der);
        let report = (id.role == Role::Node)
            .then(|| reports.get(&id.name))
            .flatten()
            .filter(|r| r.serial == info.serial);
        let reported_trust = report.is_some_and(|r| r.state.trusted_roots.contains(&new_digest));
        let last_seen = [
            Some(cert.issued_at),
            cert.first_used_at,
            report.map(|r| r.received_at),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(cert.issued_at);
        let member = Member {
            role: id.role,
            name: id.name.clone(),
            serial: info.serial.to_string(),
            root: root.map(|r| r.digest()),
            // A certificate of the new root came with the two-root bundle.
            trusts_new_root: !lagging || reported_trust,
            issued_at: cert.issued_at,
            last_seen,
            not_after: info.not_after,
            lagging,
        };
        let key = (id.role, id.name.clone());
        match newest.get(&key) {
            Some(m) if m.issued_at > member.issued_at => {}
            _ => {
                newest.insert(key, member);
            }
        }
    }
    let mut out: Vec<Member> = newest.into_values().collect();
    out.sort_by(|a, b| (a.role.as_str(), &a.name).cmp(&(b.role.as_str(), &b.name)));
    Ok(out)
}
