//! What went wrong on the client, typed so that callers (and tests) tell the cases apart,
//! each with the [`Reason`] that decides the exit code.
//!
//! This module imports nothing else of the crate: every other module may use it.

use std::fmt;
use std::path::PathBuf;

use dtca_common::Reason;
use dtca_common::bundle::BundleError;
use dtca_common::config::ConfigError;
use dtca_common::endpoint::{EngineAddr, EngineAddrError};
use dtca_common::fs::FileError;
use dtca_common::reason;
use dtca_common::tls::ConnectError;
use dtca_pki::Serial;
use dtca_pki::chain::ChainError;
use dtca_pki::csr::CsrError;
use dtca_pki::duration::{self, DurationError};
use dtca_pki::inspect::InspectError;
use dtca_pki::key::KeyError;
use dtca_pki::token::TokenError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A client failure: one line for the user and a reason.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the CA refused: {message}")]
    Refused { reason: Reason, message: String },
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    NotEnrolled(#[from] NotEnrolled),
    #[error("the CA's answer is not acceptable: {0}")]
    BadAnswer(#[from] BadAnswer),
    #[error(transparent)]
    Config(#[from] ConfigProblem),
    #[error(transparent)]
    Engine(#[from] EngineFailure),
    #[error(transparent)]
    Switch(#[from] SwitchFailure),
    #[error(transparent)]
    Clock(#[from] ClockSkew),
    #[error(transparent)]
    Launch(#[from] LaunchProblem),
    #[error(transparent)]
    Guard(#[from] GuardFailure),
    #[error(
        "no audit log in {}: the guard writes one when this node's engine is in guard mode (enroll --docker --docker-mode guard)",
        dir.display()
    )]
    NoAudit { dir: PathBuf },
}

impl ClientError {
    /// The reason, and so the exit code.
    pub fn reason(&self) -> Reason {
        match self {
            ClientError::Connect(e) => e.reason(),
            ClientError::Refused { reason, .. } => *reason,
            ClientError::Token(_) => Reason::TokenMalformed,
            ClientError::Bundle(BundleError::Missing(_)) => Reason::NotInitialized,
            ClientError::Bundle(BundleError::Io(_) | BundleError::Invalid(_))
            | ClientError::File(_) => Reason::LocalIo,
            ClientError::Invalid(
                Invalid::SanOutsideToken { .. } | Invalid::NoNameInsideToken { .. },
            ) => Reason::NameNotAllowed,
            ClientError::Invalid(_) => Reason::InvalidArgument,
            ClientError::NotEnrolled(_) => Reason::NotInitialized,
            ClientError::BadAnswer(_) => Reason::ServerUntrusted,
            ClientError::Config(_) => Reason::Config,
            ClientError::Engine(_) => Reason::DockerUnavailable,
            ClientError::Switch(SwitchFailure::RolledBack {
                step: Step::StopGuard | Step::StartAgent | Step::VerifyGuard,
                ..
            }) => Reason::GuardSwitch,
            ClientError::Switch(_) => Reason::DockerSwitch,
            ClientError::Clock(_) => Reason::ClockSkew,
            ClientError::Launch(_) => Reason::DockerLauncher,
            ClientError::Guard(GuardFailure::NoAgentStart) => Reason::AgentStart,
            ClientError::Guard(_) => Reason::GuardListen,
            ClientError::NoAudit { .. } => Reason::NoAudit,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let reason = reason::of_status_or_code(&status);
        let message = match status.code() {
            tonic::Code::Unavailable if reason == Reason::Unreachable => {
                format!("the CA is unreachable: {}", status.message())
            }
            _ => status.message().to_string(),
        };
        ClientError::Refused { reason, message }
    }
}

/// An argument, or something derived from one, that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("--san {entry:?} is neither an IP address nor a DNS name")]
    San { entry: String },
    #[error(
        "--san {entry:?} names no host (localhost, or an address written as a name): give the address itself, or a name of this host"
    )]
    SanNotAHost { entry: String },
    #[error(
        "--san {entry} is outside what the token allows ({allowed}): leave it out, or ask for a token that allows it (ca-server token create --allow-dns PATTERN --allow-ip CIDR)"
    )]
    SanOutsideToken { entry: String, allowed: String },
    #[error(
        "no name of this host is inside what the token allows ({allowed}){}: give one with --san, or ask for a token that allows this host's names",
        if left_out.is_empty() { String::new() } else { format!("; left out: {}", left_out.join(" ")) }
    )]
    NoNameInsideToken {
        allowed: String,
        left_out: Vec<String>,
    },
    #[error("--docker-listen {0}")]
    Listen(EngineAddrError),
    #[error("--docker-advertise {0}")]
    Advertise(EngineAddrError),
    #[error(
        "--docker-listen {listen}: cannot listen there ({source}); free the port or choose another"
    )]
    ListenTaken {
        listen: EngineAddr,
        source: std::io::Error,
    },
    #[error("--host {arg:?} must be tcp://HOST:PORT or NAME=tcp://HOST:PORT")]
    Host { arg: String },
    #[error(
        "--host {arg:?}: {name:?} is not a docker context name (letters, digits, _ . + -, starting with a letter or digit)"
    )]
    ContextName { arg: String, name: String },
    #[error(
        "--host {first} and --host {second} would share the context name {name:?}: name them, as --host NAME=tcp://HOST:PORT"
    )]
    SharedContextName {
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "this is a node token: use `ca-client enroll` on the node; `login` is for operator and admin tokens"
    )]
    NodeTokenForLogin,
    #[error("the current certificate carries no dtca identity")]
    NoIdentity,
    #[error("pair {serial} is not installed in {}", dir.display())]
    PairNotInstalled { serial: Serial, dir: PathBuf },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Csr(#[from] CsrError),
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
}

/// Nothing to work with where the command looked.
#[derive(Debug, thiserror::Error)]
pub enum NotEnrolled {
    #[error("{} holds no enrollment ({} is missing): run `ca-client enroll` first", dir.display(), file.display())]
    Enrollment { dir: PathBuf, file: PathBuf },
    #[error("{} holds {what}: enroll afresh with a join token (--token, --token-file or DTCA_TOKEN)", dir.display())]
    Stale { dir: PathBuf, what: String },
    #[error("no login in {}: run `ca-client login --server ... --token ...` first", dir.display())]
    Login { dir: PathBuf },
    #[error("no dtca context named {name:?} in {}: run `ca-client login` (or `login --renew`) first", docker_config.display())]
    Context {
        name: String,
        docker_config: PathBuf,
    },
}

/// A certificate or trust bundle from the CA that is not what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum BadAnswer {
    #[error("trust bundle: {0}")]
    TrustBundle(InspectError),
    #[error("the CA's time is not a time: {0}")]
    Clock(String),
    #[error("{0}")]
    Certificate(InspectError),
    #[error("the certificate does not verify against the pinned root: {0}")]
    Chain(ChainError),
    #[error("the certificate is not for the key generated here")]
    NotOurKey,
    #[error("no identity in the certificate")]
    NoIdentity,
    #[error("unexpected identity {uri}")]
    UnexpectedIdentity { uri: String },
    #[error("what the token allows: {0}")]
    Allowance(String),
}

/// This machine's clock would refuse what the CA issues now: found before anything is
/// spent (from the CA's clock, sent with its trust bundle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockSkew {
    #[error(
        "this machine's clock is {} behind the CA's (here {}, at the CA {}): a certificate issued now would only be valid here from {} on (the CA starts a certificate's validity {} before it issues it). Set this machine's clock right (NTP) and try again; nothing was spent",
        duration::human(*behind_secs), duration::timestamp(*local), duration::timestamp(*ca),
        duration::timestamp(*valid_from), duration::human(*backdate_secs)
    )]
    Behind {
        behind_secs: i64,
        local: OffsetDateTime,
        ca: OffsetDateTime,
        valid_from: OffsetDateTime,
        backdate_secs: i64,
    },
    #[error(
        "by this machine's clock ({}; the CA's says {}) the CA's {what} certificate is not valid: it is valid from {} to {}. Set this machine's clock right (NTP) and try again; nothing was spent",
        duration::timestamp(*local), duration::timestamp(*ca), duration::timestamp(*not_before),
        duration::timestamp(*not_after)
    )]
    CaCertificate {
        what: &'static str,
        local: OffsetDateTime,
        ca: OffsetDateTime,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
}

/// Settings or local files that do not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// The config file, or every problem of the flags at once.
    #[error("{0}")]
    Settings(#[from] ConfigError),
    #[error("{setting}: {source}")]
    Duration {
        setting: &'static str,
        source: DurationError,
    },
    #[error("{}: {message}", path.display())]
    StateFile { path: PathBuf, message: String },
    #[error("cannot encode the client state: {0}")]
    StateEncode(String),
    #[error("{}: {detail}", path.display())]
    DaemonJson { path: PathBuf, detail: String },
    #[error(
        "{} sets dockerd's ExecStart and sorts after dtca's drop-in {dropin}, so systemd would ignore ours: move its settings into an earlier drop-in (or docker.service) first",
        path.display()
    )]
    LateDropin { path: PathBuf, dropin: &'static str },
    #[error("logged in to several clusters ({}): say which with --cluster", clusters.join(", "))]
    SeveralClusters { clusters: Vec<String> },
}

/// The Docker engine is not answering as it must, and dtca could not make it.
#[derive(Debug, thiserror::Error)]
pub enum EngineFailure {
    #[error(
        "the Docker engine does not answer on unix://{} ({detail}); start it before switching it to TLS",
        socket.display()
    )]
    Unreachable { socket: PathBuf, detail: String },
    #[error("step `{step}` failed: {detail}; ROLLBACK INCOMPLETE: {rollback}")]
    RollbackIncomplete {
        step: Step,
        detail: String,
        rollback: String,
    },
    #[error("{0}")]
    InterruptedSwitch(String),
    #[error("rotation failed ({detail}) and there is no previous pair to go back to")]
    NoPreviousPair { detail: String },
    #[error(
        "rotation to {serial} failed ({detail}) and going back to {previous} failed too ({fallback})"
    )]
    FallbackFailed {
        serial: Serial,
        previous: Serial,
        detail: String,
        fallback: String,
    },
    #[error("the engine does not come up with certificate {serial}: {detail}")]
    NotServing { serial: Serial, detail: String },
    #[error("the engine's certificate names no host to check it by")]
    Unnamed,
    #[error("{0}")]
    Address(String),
}

/// How the engine is started, found before anything is spent, does not allow the switch
/// as asked.
#[derive(Debug, thiserror::Error)]
pub enum LaunchProblem {
    #[error(
        "cannot tell how dockerd is started ({evidence}), so not how to restart it; nothing was spent: add --docker-restart 'COMMAND' with a command that restarts this dockerd{}",
        if cmdline.is_empty() { String::new() } else { format!(" (it runs as `{cmdline}`)") }
    )]
    Unknown { evidence: String, cmdline: String },
    #[error(
        "the restart command `{command}` cannot run here: {detail}; nothing was spent: give one that can with --docker-restart 'COMMAND'"
    )]
    RestartCannotRun { command: String, detail: String },
    #[error(
        "dockerd runs with -H {} on its command line ({evidence}), and dtca cannot tell where that flag is set; nothing was spent: move those hosts into its daemon.json, or pass --systemd-dir when systemd runs it",
        hosts.join(" -H ")
    )]
    FlagHosts {
        hosts: Vec<String>,
        evidence: String,
    },
    #[error(
        "--docker-config {} is not the file the running dockerd reads ({}); nothing was spent: leave --docker-config out, or point it at that file",
        given.display(), reads.display()
    )]
    OtherConfig { given: PathBuf, reads: PathBuf },
}

/// Guard mode cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum GuardFailure {
    #[error(
        "the guard cannot listen on {listen}: {detail}; free the address (is dockerd still on it?) or choose another with --docker-listen"
    )]
    Listen { listen: EngineAddr, detail: String },
    #[error("the guard cannot serve the node's certificate: {0}")]
    Pair(String),
    #[error(
        "guard mode needs `ca-client agent` running (it serves the engine's address), and systemd does not run this machine; nothing was spent: say how to start the agent with --agent-start 'COMMAND' (it must return once the agent runs)"
    )]
    NoAgentStart,
}

/// A switch or rotation that failed and was undone: the engine answers as before.
#[derive(Debug, thiserror::Error)]
pub enum SwitchFailure {
    #[error("step `{step}` failed: {detail}; {restored}")]
    RolledBack {
        step: Step,
        detail: String,
        /// What the rollback did, for the user.
        restored: String,
    },
    #[error("rotation to {serial} failed ({detail}); the engine is back on certificate {previous}")]
    RotationUndone {
        serial: Serial,
        previous: Serial,
        detail: String,
    },
}

/// The steps of the docker switch, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    WriteTls,
    EditDaemonJson,
    Validate,
    WriteDropin,
    WriteEnvFile,
    Restart,
    Verify,
    /// Guard mode: the agent releases the engine's address (moving to native).
    StopGuard,
    /// Guard mode: the agent is started (or, running, takes the new mode up).
    StartAgent,
    /// Guard mode: a mutually-authenticated `/_ping` through the guard.
    VerifyGuard,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::WriteTls => "write TLS files",
            Step::EditDaemonJson => "edit daemon.json",
            Step::Validate => "validate",
            Step::WriteDropin => "write systemd drop-in",
            Step::WriteEnvFile => "edit the launcher's environment file",
            Step::Restart => "restart",
            Step::Verify => "verify",
            Step::StopGuard => "stop the guard",
            Step::StartAgent => "start the agent",
            Step::VerifyGuard => "verify through the guard",
        })
    }
}

impl ClientError {
    /// The step of the docker switch this failure stopped at, and whether the previous
    /// configuration was restored; `None` when it is not a failure of the switch itself.
    pub fn switch_step(&self) -> Option<(Step, bool)> {
        match self {
            ClientError::Switch(SwitchFailure::RolledBack { step, .. }) => Some((*step, true)),
            ClientError::Engine(EngineFailure::RollbackIncomplete { step, .. }) => {
                Some((*step, false))
            }
            _ => None,
        }
    }
}
