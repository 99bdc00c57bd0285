//! What a client remembers about its enrollment, in `<out>/client.toml` beside the
//! credentials: the server (so `--server` is optional afterwards), its identity, and the
//! history the agent and `status` report.

use std::path::{Path, PathBuf};

use dtca_common::fs::{self as files, PUBLIC};
use dtca_pki::key::KeyType;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// File name of the state file inside the credential directory.
pub const FILE: &str = "client.toml";

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

/// How the Docker engine was switched (used by the agent to rotate and by `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// daemon.json edited.
    pub config: PathBuf,
    /// Where dockerd's TLS files live.
    pub tls_dir: PathBuf,
    /// The mutual-TLS address, e.g. tcp://0.0.0.0:2376.
    pub listen: String,
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
    #[serde(default)]
    pub advertise: String,
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
                return Err(ClientError::NotEnrolled(format!(
                    "{} holds no enrollment ({} is missing): run `ca-client enroll` first",
                    dir.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(files::FileError::new(&path, "read", e).into()),
        };
        toml::from_str(&text)
            .map_err(|e| ClientError::Config(format!("{}: {}", path.display(), e.message())))
    }

    /// Writes it atomically.
    ///
    /// # Errors
    /// [`ClientError::File`] when it cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        let text = toml::to_string(self).map_err(|e| ClientError::Config(e.to_string()))?;
        files::write_atomic(&dir.join(FILE), text.as_bytes(), PUBLIC)?;
        Ok(())
    }

    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }
}
