//! `ca-client enroll --docker`: enroll, then switch the engine to mutual TLS.

use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_common::tls::ServerAddr;
use dtca_proto::v1;

use crate::agent::backup_dir;
use crate::ca;
use crate::docker::{self, DockerOptions};
use crate::enroll::{self, EnrollOptions, Obtained};
use crate::error::ClientError;

/// Enrolls and switches the engine. The engine and its files are checked before the CA
/// is contacted, so a node that cannot be switched does not spend a token.
///
/// # Errors
/// [`ClientError`]; when the switch fails after enrollment, the credentials are still
/// written to `--out` (the certificate was issued) and the engine is back as it was.
pub async fn enroll_docker(
    opts: &EnrollOptions,
    docker_opts: &DockerOptions,
) -> Result<Obtained, ClientError> {
    let backups = backup_dir(&opts.out);
    if let Some(how) = docker::recover_interrupted(&backups, docker_opts.timeout).await? {
        tracing::warn!(%how, "rolled back an interrupted docker switch first");
    }
    let pre = docker::preflight(docker_opts).await?;
    tracing::info!(
        engine = %pre.info.version,
        swarm = pre.info.swarm,
        config = %pre.config.display(),
        unit_hosts = ?pre.scan.hosts,
        "engine found"
    );
    let mut obtained = enroll::obtain(opts).await?;
    match docker::switch(docker_opts, &pre, &obtained.bundle, &backups).await {
        Ok(state) => {
            obtained.state.docker = Some(state.clone());
            enroll::write(&opts.out, &obtained.bundle, &obtained.state)?;
            let addr = ServerAddr::parse(&obtained.state.server)?;
            if let Err(e) = report_engine(&addr, &obtained.bundle, &state.advertise).await {
                tracing::warn!(error = %e, "could not report the engine address to the CA");
            }
            Ok(obtained)
        }
        Err(e) => {
            // The certificate exists; keep it so the node is at least enrolled.
            enroll::write(&opts.out, &obtained.bundle, &obtained.state)?;
            Err(e)
        }
    }
}

/// Tells the CA where this node's engine listens, so operators' `login` finds it.
///
/// # Errors
/// [`ClientError`] when the CA cannot be reached or refuses.
pub async fn report_engine(
    addr: &ServerAddr,
    bundle: &Bundle,
    endpoint: &str,
) -> Result<(), ClientError> {
    let mut client = ca::authenticated(addr, bundle).await?;
    client
        .report_engine(v1::ReportEngineRequest {
            endpoint: endpoint.to_string(),
        })
        .await?;
    Ok(())
}

/// The default wait for the engine.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
