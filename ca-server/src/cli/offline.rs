//! The read-only admin commands (`cert list`, `audit`, `token list`, `ca status`) while
//! `serve` is not running: the state dir's embedded store, read directly through a read-only
//! connection (safe even if a server does run on it).

use dtca_common::Reason;
use dtca_proto::v1;
use time::OffsetDateTime;

use super::settings::{self, FileConfig};
use super::target::Target;
use super::{AdminArgs, CliError};
use crate::lifecycle::CaState;
use crate::registrar::{CaReport, current_identities, forked};
use crate::service::admin::{audit_event, cert_query, summary, token_info};
use crate::state::StateDir;
use crate::store::sqlite::Snapshot;

/// The embedded store of a CA whose server is not running.
#[derive(Debug)]
pub(super) struct Offline {
    snapshot: Snapshot,
    dir: StateDir,
}

impl Offline {
    /// Opens the embedded store of `args`' state dir in place of the server that `why`
    /// says is not running, and says so on stderr. Any other failure, or a CA on
    /// PostgreSQL (its store is not local), gives `why` back.
    ///
    /// # Errors
    /// `why`, or why the store could not be read.
    pub(super) fn instead_of(
        args: &AdminArgs,
        file: &FileConfig,
        why: CliError,
    ) -> Result<Self, CliError> {
        let on_postgres = file.database.is_some() || std::env::var_os("DTCA_DATABASE").is_some();
        if why.reason != Reason::NotRunning || on_postgres {
            return Err(why);
        }
        let dir = StateDir::new(settings::state_dir(&args.state, file));
        let path = dir.store_path();
        let snapshot = Snapshot::open(&path)
            .map_err(|e| CliError::new(Reason::NotRunning, format!("{why}; {e}")))?;
        eprintln!(
            "note: {}; read {} directly",
            Target::of(args, file).not_running_why(),
            path.display()
        );
        Ok(Offline { snapshot, dir })
    }

    /// What `ListCertificates` would answer.
    ///
    /// # Errors
    /// [`CliError`] when the store cannot be read or the request is malformed.
    pub(super) fn certificates(
        &self,
        req: &v1::ListCertificatesRequest,
    ) -> Result<Vec<v1::CertificateSummary>, CliError> {
        let now = OffsetDateTime::now_utc();
        let query = cert_query(req, now).map_err(|e| CliError::new(e.reason(), e.to_string()))?;
        let certs = self.snapshot.certificates(&query).map_err(store)?;
        let identities = current_identities(&certs, now);
        let holders = if identities.is_empty() {
            Vec::new()
        } else {
            self.snapshot.holders(&identities).map_err(store)?
        };
        let forks = forked(&certs, &holders, now);
        Ok(certs
            .iter()
            .map(|c| v1::CertificateSummary {
                forked: forks.contains(&c.serial),
                ..summary(c, now)
            })
            .collect())
    }

    /// What `ListAudit` would answer.
    ///
    /// # Errors
    /// [`CliError`] when the store cannot be read.
    pub(super) fn audit(&self, limit: u32) -> Result<Vec<v1::AuditEvent>, CliError> {
        let events = self.snapshot.audit(limit).map_err(store)?;
        Ok(events.into_iter().map(audit_event).collect())
    }

    /// What `ListTokens` would answer.
    ///
    /// # Errors
    /// [`CliError`] when the store cannot be read.
    pub(super) fn tokens(&self) -> Result<Vec<v1::TokenInfo>, CliError> {
        let tokens = self.snapshot.tokens().map_err(store)?;
        Ok(tokens.iter().map(token_info).collect())
    }
}

impl Offline {
    /// What `CaStatus` would answer, from the certificates in the store (no key is
    /// opened). During a root rotation it cannot say who lags (the running server reads
    /// every current certificate and report for that): a warning says so.
    ///
    /// # Errors
    /// [`CliError`] when the state dir or the store cannot be read.
    pub(super) fn ca_status(&self) -> Result<v1::CaStatusResponse, CliError> {
        let now = OffsetDateTime::now_utc();
        let cluster = self.dir.cluster().map_err(super::serve::state_error)?;
        let material = self.snapshot.ca_material().map_err(store)?;
        let state =
            CaState::public(&cluster.cluster, &material).map_err(super::serve::lifecycle_error)?;
        let rotating = state.lineage().rotation_started().is_some();
        let lifetime = cluster.lifetimes().intermediate;
        let mut report = CaReport::of(std::sync::Arc::new(state), Vec::new(), lifetime, now);
        if rotating {
            report.warnings.push(
                "read from the store while serve is not running: which nodes and operators lag in the root rotation only the running server shows".into(),
            );
        }
        Ok(crate::service::lifecycle::status(&report, now))
    }
}

fn store(e: crate::store::StoreError) -> CliError {
    super::serve::store_error(e)
}
