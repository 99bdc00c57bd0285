//! What a client remembers about its enrollment, in `<out>/client.toml` beside the
//! credentials: the server (so `--server` is optional afterwards), its identity, and the
//! history the agent and `status` report.

use std::path::{Path, PathBuf};

use dtca_common::fs::{self as files, PUBLIC};
use dtca_pki::access::Access;
use dtca_pki::inspect::CertInfo;
use dtca_pki::key::KeyType;
use dtca_pki::policy::SanPolicy;
use dtca_pki::{duration, renewal};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use dtca_common::endpoint::EngineAddr;

use crate::error::{ClientError, ConfigProblem, NotEnrolled, Step};

/// File name of the state file inside the credential directory.
pub const FILE: &str = "client.toml";
/// Default credential directory.
pub const DEFAULT_OUT: &str = "/var/lib/dtca-client";

/// The enrollment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    /// CA address used for enrollment and renewals.
    pub server: String,
    /// Cluster name.
    pub cluster: String,
    /// Identity URI of the certificate.
    pub identity: String,
    /// Key algorithm for new keys.
    pub key_type: KeyType,
    /// When it enrolled (RFC 3339).
    pub enrolled_at: String,
    /// Host names asked for besides the detected ones (`--san`), kept for re-issues.
    #[serde(default)]
    pub extra_sans: Vec<String>,
    /// Whether the detected host names and addresses are included.
    #[serde(default = "yes")]
    pub default_sans: bool,
    /// Last successful renewal (RFC 3339).
    #[serde(default)]
    pub last_renewal: Option<String>,
    /// Last failed renewal attempt and why.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Planned next renewal, as the agent decided it.
    #[serde(default)]
    pub next_renewal: Option<PlannedRenewal>,
    /// The Docker engine this node switched, when it did.
    #[serde(default)]
    pub docker: Option<DockerState>,
    /// The last `enroll --docker` that failed, until one succeeds: `status` says the
    /// engine was left as it was (or that its rollback did not complete).
    #[serde(default)]
    pub failed_switch: Option<FailedSwitch>,
    /// The names the enrolling token allowed (a node's), so that a host name or address
    /// outside them is not taken for a change of names the certificate should follow.
    #[serde(default)]
    pub token_policy: Option<SanPolicy>,
    /// When the last engine restart went ahead without a restart slot from the CA, and
    /// why (reported to the CA); cleared by the next restart that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_without_slot: Option<String>,
    /// An operator's access level, as its current certificate carries it (`login` and
    /// `login --renew` record it; `status` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

fn yes() -> bool {
    true
}

/// When the agent will renew which certificate (drawn once per certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRenewal {
    /// The certificate it is for.
    pub serial: String,
    /// When, for people.
    pub at: String,
    /// When, in Unix seconds.
    pub at_unix: i64,
}

/// A docker switch that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedSwitch {
    /// When (RFC 3339).
    pub at: String,
    /// The step it stopped at; `None` when it failed around the steps (its backup, say).
    #[serde(default)]
    pub step: Option<Step>,
    /// Whether the previous configuration was restored and the engine answers as before.
    pub rolled_back: bool,
    /// What went wrong, for people.
    pub error: String,
    /// The `--docker-*` settings it was given, so that a retry needs none.
    #[serde(default)]
    pub flags: Option<SwitchFlags>,
}

/// The docker switch settings given explicitly (flag, environment or config file); a
/// failed switch keeps them so that the token-less retry can be run bare.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchFlags {
    /// `--daemon-json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// `--docker-tls-dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
    /// `--docker-listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--docker-restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// `--docker-advertise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// `--docker-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `--systemd-dir`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systemd_dirs: Vec<PathBuf>,
    /// `--docker-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EngineMode>,
    /// `--agent-start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_start: Option<String>,
}

impl SwitchFlags {
    /// Each setting of `self`, else of `earlier`.
    pub fn or(self, earlier: Option<&SwitchFlags>) -> SwitchFlags {
        let Some(e) = earlier else { return self };
        SwitchFlags {
            config: self.config.or_else(|| e.config.clone()),
            tls_dir: self.tls_dir.or_else(|| e.tls_dir.clone()),
            listen: self.listen.or_else(|| e.listen.clone()),
            restart: self.restart.or_else(|| e.restart.clone()),
            advertise: self.advertise.or_else(|| e.advertise.clone()),
            timeout: self.timeout.or_else(|| e.timeout.clone()),
            systemd_dirs: if self.systemd_dirs.is_empty() {
                e.systemd_dirs.clone()
            } else {
                self.systemd_dirs
            },
            mode: self.mode.or(e.mode),
            agent_start: self.agent_start.or_else(|| e.agent_start.clone()),
        }
    }
}

/// How the Docker engine was switched (used by the agent to rotate and by `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// daemon.json edited.
    pub config: PathBuf,
    /// Where dockerd's TLS files live.
    pub tls_dir: PathBuf,
    /// The mutual-TLS address, e.g. tcp://0.0.0.0:2376.
    pub listen: EngineAddr,
    /// Command that restarts the engine.
    pub restart: String,
    /// The engine's unix socket, for local checks.
    pub socket: PathBuf,
    /// Systemd directory where a drop-in was written, if one was.
    #[serde(default)]
    pub dropin: Option<PathBuf>,
    /// Whether the engine was in swarm mode (then live-restore stays off).
    #[serde(default)]
    pub swarm: bool,
    /// The address published for operators, e.g. tcp://node-1.example.com:2376.
    pub advertise: EngineAddr,
    /// Who serves mutual TLS on `listen`: dockerd itself, or the agent's guard.
    #[serde(default)]
    pub mode: EngineMode,
    /// How the agent is started where systemd does not run it (`--agent-start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_start: Option<String>,
}

/// Who serves the engine's mutual-TLS address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineMode {
    /// dockerd serves TLS itself; a new certificate restarts it.
    #[default]
    Native,
    /// The agent serves TLS in front of dockerd's unix socket: rotation never restarts
    /// dockerd, revocations apply in seconds, access levels are enforced.
    Guard,
}

impl EngineMode {
    /// The name on the command line, in `status` and in the agent's report.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineMode::Native => "native",
            EngineMode::Guard => "guard",
        }
    }
}

impl std::fmt::Display for EngineMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientState {
    /// Reads the state of the enrollment in `dir`.
    ///
    /// # Errors
    /// [`ClientError::NotEnrolled`] when there is none.
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NotEnrolled::Enrollment {
                    dir: dir.to_path_buf(),
                    file: path,
                }
                .into());
            }
            Err(e) => return Err(files::FileError::new(&path, "read", e).into()),
        };
        toml::from_str(&text).map_err(|e| {
            ConfigProblem::StateFile {
                message: e.message().to_string(),
                path,
            }
            .into()
        })
    }

    /// Writes it atomically.
    ///
    /// # Errors
    /// [`ClientError::File`] when it cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        let text = toml::to_string(self).map_err(|e| ConfigProblem::StateEncode(e.to_string()))?;
        files::write_atomic(&dir.join(FILE), text.as_bytes(), PUBLIC)?;
        Ok(())
    }

    /// The planned renewal of `leaf`: the recorded one when it is for this certificate,
    /// else drawn now (at a random point of 50-70 % of its life) and recorded in `dir`.
    pub fn planned_renewal(&mut self, leaf: &CertInfo, dir: &Path) -> OffsetDateTime {
        let serial = leaf.serial.to_string();
        if let Some(plan) = &self.next_renewal
            && plan.serial == serial
            && let Ok(at) = OffsetDateTime::from_unix_timestamp(plan.at_unix)
        {
            return at;
        }
        let drawn = renewal::renew_at_issued(leaf.not_before, leaf.not_after, renewal::jitter());
        // Whole seconds, as recorded, so the plan reads back the same.
        let at = OffsetDateTime::from_unix_timestamp(drawn.unix_timestamp()).unwrap_or(drawn);
        self.next_renewal = Some(PlannedRenewal {
            serial,
            at: duration::timestamp(at),
            at_unix: at.unix_timestamp(),
        });
        if let Err(e) = self.save(dir) {
            tracing::warn!(error = %e, "cannot record the planned renewal");
        }
        at
    }

    /// The planned renewal when it is for `leaf` (a plan for an earlier certificate is
    /// no plan for this one).
    pub fn next_renewal_of(&self, leaf: &CertInfo) -> Option<&PlannedRenewal> {
        self.next_renewal
            .as_ref()
            .filter(|p| p.serial == leaf.serial.to_string())
    }

    /// The last failure as recorded (`TIME: what`): when, and what.
    pub fn last_failure(&self) -> Option<(Option<OffsetDateTime>, &str)> {
        let text = self.last_error.as_deref()?;
        Some(match text.split_once("Z: ") {
            Some((at, what)) => match duration::parse_timestamp(&format!("{at}Z")) {
                Some(at) => (Some(at), what),
                None => (None, text),
            },
            None => (None, text),
        })
    }

    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last_error: Option<&str>) -> ClientState {
        ClientState {
            server: "x:1".into(),
            cluster: "c".into(),
            identity: "dtca://c/node/n".into(),
            key_type: KeyType::default(),
            enrolled_at: String::new(),
            extra_sans: vec![],
            default_sans: false,
            last_renewal: None,
            last_error: last_error.map(str::to_string),
            next_renewal: None,
            docker: None,
            failed_switch: None,
            token_policy: None,
            restart_without_slot: None,
            access: None,
        }
    }

    #[test]
    fn a_recorded_failure_reads_back_as_its_time_and_its_words() {
        assert_eq!(state(None).last_failure(), None);
        let s = state(Some("2026-12-03 01:11:36Z: the CA refused: no: really"));
        let (at, what) = s.last_failure().unwrap();
        assert_eq!(at, Some(time::macros::datetime!(2026-12-03 01:11:36 UTC)));
        assert_eq!(what, "the CA refused: no: really");
        assert_eq!(
            state(Some("written by hand")).last_failure(),
            Some((None, "written by hand"))
        );
    }
}
