//! The node enrolled in `--state-dir`, as the agent's loop keeps it fresh: its files, the
//! CA it enrolled with, its engine (rotated natively in turn, or served by the guard).

use dtca_common::Reason;
use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::inspect::CertInfo;
use time::OffsetDateTime;

use super::channel::{Channel, Signal};
use super::rotation;
use super::{AgentOptions, Look, Renewable, report, rolling, watch};
use crate::error::ClientError;
use crate::sans::Sans;
use crate::state::{ClientState, EngineMode};
use crate::{docker, enroll};

/// The node enrolled in `--out`: its files, the CA it enrolled with, its engine.
pub(super) struct Enrolled<'a> {
    pub(super) opts: &'a AgentOptions,
    pub(super) state: ClientState,
    /// The credentials as last read by `look`.
    pub(super) current: Option<Bundle>,
    /// The agent channel; `None` when the CA's address does not parse.
    pub(super) channel: Option<Channel>,
    /// SIGUSR1: `ca-client renew` asks for a renewal now.
    pub(super) asked: Option<tokio::signal::unix::Signal>,
    /// True once a stop is requested: ends a wait for a restart slot.
    pub(super) stopping: tokio::sync::watch::Receiver<bool>,
    /// The guard, serving the engine's address in guard mode.
    pub(super) guard: crate::guard::Guard,
}

impl Enrolled<'_> {
    fn addr(&self) -> Result<ServerAddr, ClientError> {
        Ok(ServerAddr::parse(
            self.opts.server.as_deref().unwrap_or(&self.state.server),
        )?)
    }
}

impl Renewable for Enrolled<'_> {
    fn look(&mut self, refused: Option<&Sans>) -> Result<Look, ClientError> {
        // The files are the truth: `enroll --docker` (a mode move) and `renew` write them
        // while the agent runs.
        if let Ok(state) = ClientState::load(&self.opts.out) {
            self.state = state;
        }
        let bundle = Bundle::load(&self.opts.out, Layout::CLIENT)?;
        let leaf = bundle.leaf()?;
        let before = self
            .current
            .as_ref()
            .and_then(|b| b.leaf().ok())
            .map(|l| l.serial);
        if before.is_some_and(|s| s != leaf.serial)
            && let Some(channel) = &mut self.channel
        {
            // Renewed behind the agent's back: the stream speaks for the new certificate.
            channel.reopen(Bundle::load(&self.opts.out, Layout::CLIENT)?);
        }
        let due = self.state.planned_renewal(&leaf, &self.opts.out);
        let wanted = watch::wanted_names(&self.state, &leaf, refused);
        self.current = Some(bundle);
        Ok(Look { due, wanted })
    }

    async fn renew(&mut self, names: Option<Sans>) -> Result<CertInfo, ClientError> {
        let current = match self.current.take() {
            Some(b) => b,
            None => Bundle::load(&self.opts.out, Layout::CLIENT)?,
        };
        let addr = self.addr()?;
        let turn = rolling::Turn::new(self.opts, current.leaf()?.not_after);
        let new = rotation::put_in_service(
            &self.opts.out,
            &mut self.state,
            &addr,
            &current,
            names,
            rotation::InTurn {
                turn: &turn,
                stopping: &mut self.stopping,
            },
        )
        .await?;
        let info = new.leaf()?;
        if self.guard.is_running() {
            // Guard mode: new connections get the new pair now; dockerd is not touched.
            self.guard.reload()?;
        }
        // The stream speaks for the new certificate from now on.
        if let Some(channel) = &mut self.channel {
            channel.reopen(new);
        }
        Ok(info)
    }

    fn failed(&mut self, error: &ClientError, now: OffsetDateTime) {
        self.state.last_error = Some(format!("{}: {error}", duration::timestamp(now)));
        if let Err(e) = self.state.save(&self.opts.out) {
            tracing::warn!(error = %e, "cannot record the failure");
        }
    }

    async fn signal(&mut self) -> Signal {
        let from_ca = async {
            match &mut self.channel {
                Some(channel) => channel.next().await,
                None => std::future::pending().await,
            }
        };
        let asked = async {
            match &mut self.asked {
                Some(usr1) => {
                    usr1.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = from_ca => signal,
            () = asked => Signal::Renew("`ca-client renew` asked for it".into()),
        }
    }

    async fn refresh_trust(&mut self) {
        let refreshed = async {
            let addr = self.addr()?;
            let mut bundle = Bundle::load(&self.opts.out, Layout::CLIENT)?;
            let roots = crate::ca::trust_bundle(&addr, &bundle).await?;
            if roots.is_empty() {
                return Ok(());
            }
            // Trust only widens before the certificate that needs it arrives (a rotation's
            // start rides on the renewal that follows), so the node's ca.pem and the
            // engine's CA file take the bundle as it is: after a rotation's end, without
            // the old root.
            if roots != bundle.roots {
                bundle.roots = roots.clone();
                enroll::write(&self.opts.out, &bundle, &self.state)?;
                tracing::info!(roots = roots.len(), "installed the CA's new trust bundle");
            }
            if self.guard.is_running() {
                self.guard.reload()?;
            }
            if let Some(d) = self
                .state
                .docker
                .as_ref()
                .filter(|d| d.mode == EngineMode::Native)
                && docker::pairs::TlsDir::new(&d.tls_dir).trust(&roots)?
            {
                tracing::info!(
                    roots = roots.len(),
                    "the engine's CA file holds the new trust bundle (read at its next start)"
                );
            }
            Ok::<(), ClientError>(())
        };
        if let Err(e) = refreshed.await {
            tracing::warn!(error = %e, "cannot refresh the trust bundle; the next renewal will");
        }
    }

    async fn report(&mut self) {
        let sent = async {
            let addr = self.addr()?;
            let bundle = Bundle::load(&self.opts.out, Layout::CLIENT)?;
            let report = report::gather(&self.state, &bundle, &self.opts.out).await;
            crate::ca::report(&addr, &bundle, report).await
        };
        if let Err(e) = sent.await {
            tracing::debug!(error = %e, "report not delivered; the next one will be");
        }
    }

    fn revoked(&mut self, serials: &[String], now: OffsetDateTime) {
        let Some(serial) = self
            .current
            .as_ref()
            .and_then(|b| b.leaf().ok())
            .map(|leaf| leaf.serial.to_string())
        else {
            return;
        };
        if serials.iter().any(|s| s.eq_ignore_ascii_case(&serial)) {
            tracing::error!(%serial, "the CA revoked this node's certificate; enroll again with a new token");
            let error = ClientError::Refused {
                reason: Reason::CertRevoked,
                message: format!("certificate {serial} was revoked; enroll again with a new token"),
            };
            self.failed(&error, now);
        }
    }
}
