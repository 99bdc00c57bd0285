//! A renewed pair into service (install, swap, restart, verify, fall back), and, after a
//! crash between the swap and the restart, the engine brought back onto the pair on disk.

use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_pki::Serial;

use super::alive::watch_switched;
use super::pairs::TlsDir;
use super::restart::{restart, verify};
use super::{engine, tls_name};
use crate::error::{ClientError, EngineFailure, SwitchFailure};
use crate::state::DockerState;

/// Puts a renewed pair into service: install, swap, restart, verify that the engine
/// serves it; on failure, swap back, restart and verify the previous pair again.
///
/// # Errors
/// [`SwitchFailure::RotationUndone`] after a successful fallback, [`EngineFailure`]
/// when even the previous pair could not be brought back.
pub async fn rotate(
    docker: &DockerState,
    new: &Bundle,
    timeout: Duration,
) -> Result<(), ClientError> {
    let tls = TlsDir::new(&docker.tls_dir);
    let previous = tls.current();
    let previous_bundle = tls.load_current().ok();
    let serial = tls.install(new)?;
    tls.activate(&serial)?;
    let attempt = async {
        let watch = watch_switched(&docker.config, &docker.socket).await;
        restart(&docker.restart).await?;
        verify(
            &docker.listen,
            &[],
            &docker.socket,
            new,
            timeout,
            Some(&watch),
            false,
        )
        .await
    };
    let detail = match attempt.await {
        Ok(()) => {
            let keep: Vec<&Serial> = std::iter::once(&serial).chain(previous.as_ref()).collect();
            tls.prune(&keep);
            return Ok(());
        }
        Err(detail) => detail,
    };
    let (Some(previous), Some(previous_bundle)) = (previous, previous_bundle) else {
        return Err(EngineFailure::NoPreviousPair { detail }.into());
    };
    tracing::error!(error = %detail, "rotation failed; going back to the previous certificate");
    tls.activate(&previous)?;
    let back = async {
        let watch = watch_switched(&docker.config, &docker.socket).await;
        restart(&docker.restart).await?;
        verify(
            &docker.listen,
            &[],
            &docker.socket,
            &previous_bundle,
            timeout,
            Some(&watch),
            false,
        )
        .await
    };
    match back.await {
        Ok(()) => Err(SwitchFailure::RotationUndone {
            serial,
            previous,
            detail,
        }
        .into()),
        Err(fallback) => Err(EngineFailure::FallbackFailed {
            serial,
            previous,
            detail,
            fallback,
        }
        .into()),
    }
}

/// Makes sure the engine serves the pair that is current on disk (after a crash between
/// the swap and the restart): restarts and verifies if not.
///
/// # Errors
/// [`EngineFailure`] when the current pair cannot be brought into service.
pub async fn reconcile(docker: &DockerState, timeout: Duration) -> Result<(), ClientError> {
    let tls = TlsDir::new(&docker.tls_dir);
    let current = tls.load_current()?;
    let serial = current.leaf()?.serial;
    let name = tls_name(&current).ok_or(EngineFailure::Unnamed)?;
    let addr = engine::dial_addr(&docker.listen)
        .await
        .map_err(|e| EngineFailure::Address(e.to_string()))?;
    if engine::probe_tls(addr, &name, &current.roots, None)
        .await
        .is_ok_and(|probe| probe.served.as_ref() == Some(&serial))
    {
        return Ok(());
    }
    tracing::warn!(%serial, "the engine does not serve the current certificate; restarting it");
    let back = async {
        let watch = watch_switched(&docker.config, &docker.socket).await;
        restart(&docker.restart).await?;
        verify(
            &docker.listen,
            &[],
            &docker.socket,
            &current,
            timeout,
            Some(&watch),
            false,
        )
        .await
    };
    back.await
        .map_err(|detail| EngineFailure::NotServing { serial, detail }.into())
}
