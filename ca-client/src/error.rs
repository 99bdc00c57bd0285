//! What went wrong on the client, with the [`Reason`] that decides the exit code.

use dtca_common::Reason;
use dtca_common::bundle::BundleError;
use dtca_common::fs::FileError;
use dtca_common::reason;
use dtca_common::tls::ConnectError;
use dtca_pki::token::TokenError;

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
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotEnrolled(String),
    #[error("the CA's answer is not acceptable: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Docker(String),
    #[error("{0}")]
    DockerSwitch(String),
}

impl ClientError {
    /// The reason, and so the exit code.
    pub fn reason(&self) -> Reason {
        match self {
            ClientError::Connect(e) => e.reason(),
            ClientError::Refused { reason, .. } => *reason,
            ClientError::Token(_) => Reason::TokenMalformed,
            ClientError::Bundle(BundleError::Missing(_)) => Reason::NotInitialized,
            ClientError::Bundle(BundleError::Io(_)) | ClientError::File(_) => Reason::LocalIo,
            ClientError::Bundle(BundleError::Invalid(_)) => Reason::LocalIo,
            ClientError::Invalid(_) => Reason::InvalidArgument,
            ClientError::NotEnrolled(_) => Reason::NotInitialized,
            ClientError::BadAnswer(_) => Reason::ServerUntrusted,
            ClientError::Config(_) => Reason::Config,
            ClientError::Docker(_) => Reason::DockerUnavailable,
            ClientError::DockerSwitch(_) => Reason::DockerSwitch,
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
