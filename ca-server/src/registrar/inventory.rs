//! What the CA knows: certificates, enrolled nodes and the engine addresses they report,
//! and the audit log.

use dtca_common::endpoint::EngineAddr;
use dtca_pki::Serial;
use dtca_pki::identity::Role;
use time::OffsetDateTime;

use super::{Caller, Refusal, Registrar};
use crate::store::{
    AgentRecord, AgentState, AuditEntry, AuditKind, CertQuery, CertRecord, CertSummary, NodeRecord,
};

impl Registrar {
    /// Certificates matching a query.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, Refusal> {
        Ok(self.store.certificates(query).await?)
    }

    /// The certificates among `certs` that are valid and current (not renewed) at `now`
    /// but not the one their identity's name belongs to: their identity has more than one
    /// valid certificate (left from before names had one holder, or a fork to look into).
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn forks(
        &self,
        certs: &[CertSummary],
        now: OffsetDateTime,
    ) -> Result<Vec<Serial>, Refusal> {
        let identities = current_identities(certs, now);
        if identities.is_empty() {
            return Ok(Vec::new());
        }
        let holders = self.store.holders(&identities).await?;
        Ok(forked(certs, &holders, now))
    }

    /// One certificate.
    ///
    /// # Errors
    /// [`Refusal::NotFound`] when unknown.
    pub async fn certificate(&self, serial: &Serial) -> Result<CertRecord, Refusal> {
        self.store
            .certificate(serial)
            .await?
            .ok_or_else(|| Refusal::NotFound(format!("certificate {serial}")))
    }

    /// Records where the calling node's engine listens.
    ///
    /// # Errors
    /// [`Refusal::RoleNotAllowed`] for non-nodes, [`Refusal::InvalidArgument`] for a bad URL.
    pub async fn report_engine(
        &self,
        caller: &Caller,
        endpoint: &str,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        if caller.identity.role != Role::Node {
            return Err(Refusal::RoleNotAllowed {
                role: caller.identity.role,
                action: "report an engine address",
            });
        }
        let endpoint = check_endpoint(endpoint, &caller.record.summary)?.to_string();
        self.store
            .set_engine(
                &caller.identity.name,
                &endpoint,
                &caller.serial,
                AuditEntry::new(
                    now,
                    AuditKind::EngineReport,
                    caller.identity.uri(),
                    &caller.identity.name,
                    format!("{endpoint} reported by {}", caller.serial),
                ),
            )
            .await
            .map_err(Refusal::from)
    }

    /// Keeps what the calling node's agent reports about itself.
    ///
    /// # Errors
    /// [`Refusal::RoleNotAllowed`] for non-nodes, [`Refusal::InvalidArgument`] for a report
    /// too large to be one, [`Refusal::Store`] when the store fails.
    pub async fn record_report(
        &self,
        caller: &Caller,
        state: AgentState,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        if caller.identity.role != Role::Node {
            return Err(Refusal::RoleNotAllowed {
                role: caller.identity.role,
                action: "report an agent's state",
            });
        }
        check_report(&state)?;
        let report = AgentRecord {
            name: caller.identity.name.clone(),
            serial: caller.serial.clone(),
            received_at: now,
            state,
        };
        self.store.record_report(report.clone()).await?;
        self.fleet.reports.keep(report);
        Ok(())
    }

    /// Brings the fleet's kept reports (`fleet().reports`) up to date with the store.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn refresh_reports(&self, now: OffsetDateTime) -> Result<(), Refusal> {
        Ok(self.fleet.reports.refresh(self.store.as_ref(), now).await?)
    }

    /// Certificates revoked at or after `since` (the agent channel's catch-up).
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, Refusal> {
        Ok(self.store.revocations_since(since).await?)
    }

    /// Enrolled nodes and their engines, expired ones included (see [`crate::store::Store::nodes`]).
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn nodes(&self, now: OffsetDateTime) -> Result<Vec<NodeRecord>, Refusal> {
        Ok(self.store.nodes(now).await?)
    }

    /// The newest audit entries.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, Refusal> {
        Ok(self.store.audit(limit).await?)
    }
}

/// The identities of the valid, current certificates among `certs` (not the CA's own),
/// once each: whose name holders [`forked`] needs.
pub fn current_identities(certs: &[CertSummary], now: OffsetDateTime) -> Vec<(Role, String)> {
    let mut identities: Vec<(Role, String)> = certs
        .iter()
        .filter(|c| c.status(now) == "valid" && c.identity.role != Role::Ca)
        .map(|c| (c.identity.role, c.identity.name.clone()))
        .collect();
    identities.sort();
    identities.dedup();
    identities
}

/// The valid, current certificates among `certs` whose identity's name `holders` (role,
/// name, holder serial) gives to another certificate.
pub fn forked(
    certs: &[CertSummary],
    holders: &[(Role, String, Serial)],
    now: OffsetDateTime,
) -> Vec<Serial> {
    certs
        .iter()
        .filter(|c| c.status(now) == "valid" && c.identity.role != Role::Ca)
        .filter(|c| {
            holders.iter().any(|(role, name, holder)| {
                *role == c.identity.role && *name == c.identity.name && *holder != c.serial
            })
        })
        .map(|c| c.serial.clone())
        .collect()
}

/// Most entries of a list in a report, and longest text: a node has a handful of addresses
/// and listeners; anything far past that is not a report.
const MAX_REPORT_ITEMS: usize = 256;
const MAX_REPORT_TEXT: usize = 1024;

fn check_report(state: &AgentState) -> Result<(), Refusal> {
    let lists = [
        &state.plain_listeners,
        &state.addresses,
        &state.trusted_roots,
    ];
    let texts = [
        &state.mode,
        &state.engine_error,
        &state.swarm_role,
        &state.engine_version,
        &state.agent_version,
        &state.last_error,
        &state.restart_without_slot,
        &state.failed_switch,
    ];
    let too_long = |t: &String| t.len() > MAX_REPORT_TEXT;
    if lists
        .iter()
        .any(|l| l.len() > MAX_REPORT_ITEMS || l.iter().any(too_long))
        || texts.iter().any(|t| too_long(t))
    {
        return Err(Refusal::InvalidArgument(format!(
            "an agent report holds at most {MAX_REPORT_ITEMS} entries a list and {MAX_REPORT_TEXT} characters a text"
        )));
    }
    Ok(())
}

/// A well-formed `tcp://HOST:PORT` whose host is one of the node certificate's names: the
/// docker CLI of an operator checks the engine's certificate against that host, and a node
/// must not point operators at someone else's engine. Returns it written canonically.
fn check_endpoint(endpoint: &str, cert: &CertSummary) -> Result<EngineAddr, Refusal> {
    let addr = EngineAddr::parse(endpoint)
        .map_err(|e| Refusal::InvalidArgument(format!("engine address {e}")))?;
    let named = match addr.ip() {
        Some(ip) => cert.ip_addresses.contains(&ip),
        None => cert
            .dns_names
            .iter()
            .any(|d| d.eq_ignore_ascii_case(addr.host())),
    };
    if named {
        Ok(addr)
    } else {
        Err(Refusal::InvalidArgument(format!(
            "engine address {endpoint:?}: {} is not among this node's certificate names, so clients could not verify the engine",
            addr.host()
        )))
    }
}
