//! Why a request was refused, as one stable word: the server sends it with the gRPC status
//! (metadata `dtca-reason`), and the CLIs turn it into a distinct exit code.

use std::fmt;
use std::str::FromStr;

/// gRPC metadata key carrying the [`Reason`] of an error status.
pub const METADATA_KEY: &str = "dtca-reason";

macro_rules! reasons {
    ($($variant:ident = $code:literal, $name:literal, $doc:literal;)*) => {
        /// Every refusal the tools can report. The exit code of each is distinct and stable.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(#[doc = $doc] $variant,)*
        }

        impl Reason {
            /// Every reason, in exit-code order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The word used on the wire and in logs.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// The process exit code for this refusal.
            pub fn exit_code(self) -> u8 {
                match self { $(Reason::$variant => $code,)* }
            }

            /// One line for the exit-code table in `--help` and the README.
            pub fn describe(self) -> &'static str {
                match self { $(Reason::$variant => $doc,)* }
            }
        }

        impl FromStr for Reason {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($name => Ok(Reason::$variant),)* _ => Err(()) }
            }
        }
    };
}

reasons! {
    Internal = 1, "internal", "unexpected failure (see the log)";
    TokenUnknown = 10, "token-unknown", "the join token is not known to this CA";
    TokenExpired = 11, "token-expired", "the join token has expired";
    TokenRevoked = 12, "token-revoked", "the join token was revoked";
    TokenUsedUp = 13, "token-used-up", "the join token has no uses left";
    TokenMalformed = 14, "token-malformed", "the join token is not of the form DTCA-1-<digest>-<secret>";
    CsrInvalid = 15, "csr-invalid", "the certificate request is malformed, mis-signed or of an unsupported key type";
    NameNotAllowed = 16, "name-not-allowed", "a requested name or address is outside what the token or certificate allows";
    CertExpired = 17, "cert-expired", "the client certificate has expired (re-enroll with a token)";
    CertRevoked = 18, "cert-revoked", "the client certificate was revoked";
    CertForeign = 19, "cert-foreign", "the client certificate was not issued by this CA";
    CertMissing = 20, "cert-missing", "the call needs a client certificate (mutual TLS)";
    CertUnknown = 21, "cert-unknown", "the client certificate is not in the CA's inventory";
    PermissionDenied = 22, "permission-denied", "the caller's role may not make this call";
    NotFound = 23, "not-found", "no such token or certificate";
    InvalidArgument = 24, "invalid-argument", "an argument was malformed";
    RootMismatch = 25, "root-mismatch", "the server's root CA does not match the digest in the token";
    Unreachable = 26, "unreachable", "the server could not be reached";
    ServerUntrusted = 27, "server-untrusted", "the server's TLS certificate was not accepted";
    StoreUnavailable = 28, "store-unavailable", "the CA's database is unavailable; nothing was issued";
    WrongPassphrase = 29, "wrong-passphrase", "the passphrase does not decrypt the CA keys";
    LocalIo = 30, "local-io", "a local file or directory could not be read or written";
    AlreadyInitialized = 31, "already-initialized", "the state directory already holds a CA";
    NotInitialized = 32, "not-initialized", "the state or output directory holds no CA or enrollment";
    Config = 33, "config", "the configuration is invalid";
    TooLarge = 34, "too-large", "a message was larger than the server accepts";
    DockerSwitch = 35, "docker-switch", "switching the Docker engine failed; the previous configuration was restored";
    DockerUnavailable = 36, "docker-unavailable", "the Docker engine did not answer";
    Usage = 64, "usage", "the command line was not understood";
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason a gRPC status carries, when the server set one.
pub fn of_status(status: &tonic::Status) -> Option<Reason> {
    status
        .metadata()
        .get(METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// Builds an error status with a reason attached.
pub fn status(code: tonic::Code, reason: Reason, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    if let Ok(value) = reason.as_str().parse() {
        status.metadata_mut().insert(METADATA_KEY, value);
    }
    status
}

/// The reason for a status, falling back on the gRPC code when the server set none
/// (for instance tonic's own size limit, or a proxy in between).
pub fn of_status_or_code(status: &tonic::Status) -> Reason {
    of_status(status).unwrap_or(match status.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => Reason::TooLarge,
        tonic::Code::Unavailable => Reason::Unreachable,
        tonic::Code::Unauthenticated => Reason::CertMissing,
        tonic::Code::PermissionDenied => Reason::PermissionDenied,
        tonic::Code::NotFound => Reason::NotFound,
        tonic::Code::InvalidArgument => Reason::InvalidArgument,
        _ => Reason::Internal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn exit_codes_and_names_are_distinct() {
        let codes: HashSet<u8> = Reason::ALL.iter().map(|r| r.exit_code()).collect();
        let names: HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert_eq!(names.len(), Reason::ALL.len());
        assert!(
            !codes.contains(&0) && !codes.contains(&2),
            "0 is success, 2 is clap's"
        );
    }

    #[test]
    fn reason_survives_the_trip_through_a_status() {
        let s = status(
            tonic::Code::PermissionDenied,
            Reason::TokenUsedUp,
            "no uses left",
        );
        assert_eq!(of_status(&s), Some(Reason::TokenUsedUp));
        assert_eq!(
            of_status_or_code(&tonic::Status::out_of_range("big")),
            Reason::TooLarge
        );
    }
}
