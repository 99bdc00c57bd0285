//! Why a request was refused, as one stable word: the server sends it with the gRPC status
//! (metadata `dtca-reason`), and the CLIs turn it into a distinct exit code.
//!
//! One table says everything about a reason: its exit code, its word, the gRPC code the
//! server answers it with, and the line `--help` prints. The server goes refusal ->
//! reason (one exhaustive match, in `ca-server`) -> code (this table), nothing else.

use std::fmt;
use std::str::FromStr;

/// gRPC metadata key carrying the [`Reason`] of an error status.
pub const METADATA_KEY: &str = "dtca-reason";

macro_rules! reasons {
    ($($variant:ident = $exit:literal, $name:literal, $grpc:ident, $doc:literal;)*) => {
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
                match self { $(Reason::$variant => $exit,)* }
            }

            /// The gRPC status code the server answers a refusal of this reason with.
            /// Reasons only the tools report (the server unreachable, a local file, Docker)
            /// have the code nearest in meaning; no server sends them.
            pub fn grpc_code(self) -> tonic::Code {
                match self { $(Reason::$variant => tonic::Code::$grpc,)* }
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
    Internal = 1, "internal", Internal, "unexpected failure (see the log)";
    TokenUnknown = 10, "token-unknown", Unauthenticated, "the join token is not known to this CA";
    TokenExpired = 11, "token-expired", Unauthenticated, "the join token has expired";
    TokenRevoked = 12, "token-revoked", Unauthenticated, "the join token was revoked";
    TokenUsedUp = 13, "token-used-up", ResourceExhausted, "the join token has no uses left";
    TokenMalformed = 14, "token-malformed", InvalidArgument, "the join token is not of the form DTCA-1-<digest>-<secret>";
    CsrInvalid = 15, "csr-invalid", InvalidArgument, "the certificate request is malformed, mis-signed or of an unsupported key type";
    NameNotAllowed = 16, "name-not-allowed", PermissionDenied, "a requested name or address is outside what the token or certificate allows";
    CertExpired = 17, "cert-expired", Unauthenticated, "the client certificate has expired (re-enroll with a token)";
    CertRevoked = 18, "cert-revoked", PermissionDenied, "the client certificate was revoked";
    CertForeign = 19, "cert-foreign", Unauthenticated, "the client certificate was not issued by this CA";
    CertMissing = 20, "cert-missing", Unauthenticated, "the call needs a client certificate (mutual TLS)";
    CertUnknown = 21, "cert-unknown", Unauthenticated, "the client certificate is not in the CA's inventory";
    PermissionDenied = 22, "permission-denied", PermissionDenied, "the caller's role may not make this call";
    NotFound = 23, "not-found", NotFound, "no such token or certificate";
    InvalidArgument = 24, "invalid-argument", InvalidArgument, "an argument was malformed";
    RootMismatch = 25, "root-mismatch", Unauthenticated, "the server's root CA does not match the digest in the token";
    Unreachable = 26, "unreachable", Unavailable, "the server could not be reached";
    ServerUntrusted = 27, "server-untrusted", Unauthenticated, "the server's TLS certificate was not accepted";
    StoreUnavailable = 28, "store-unavailable", Unavailable, "the CA's database is unavailable; nothing was issued";
    WrongPassphrase = 29, "wrong-passphrase", Unauthenticated, "the passphrase does not decrypt the CA keys";
    LocalIo = 30, "local-io", Internal, "a local file or directory could not be read or written";
    AlreadyInitialized = 31, "already-initialized", AlreadyExists, "the state directory already holds a CA";
    NotInitialized = 32, "not-initialized", FailedPrecondition, "the state or output directory holds no CA or enrollment";
    Config = 33, "config", InvalidArgument, "the configuration is invalid";
    TooLarge = 34, "too-large", OutOfRange, "a message was larger than the server accepts";
    DockerSwitch = 35, "docker-switch", Aborted, "switching the Docker engine failed; the previous configuration was restored";
    DockerUnavailable = 36, "docker-unavailable", Unavailable, "the Docker engine did not answer";
    NameTaken = 37, "name-taken", AlreadyExists, "the name, or a DNS name asked for, belongs to another enrolled identity";
    CertSuperseded = 38, "cert-superseded", PermissionDenied, "the client certificate was renewed, and its successor is in use";
    StoreFull = 39, "store-full", Unavailable, "the disk holding the CA's database is full; nothing was issued (the CA's operator must free space)";
    StoreCorrupt = 40, "store-corrupt", DataLoss, "the CA's database is damaged; nothing was issued (the CA's operator must restore it from a backup)";
    ClockSkew = 41, "clock-skew", FailedPrecondition, "this machine's clock and the CA's disagree too much for a certificate to be valid here; nothing was spent";
    RotationLagging = 42, "rotation-lagging", FailedPrecondition, "the root rotation cannot finish: nodes or operators still hold certificates of the old root only (--force leaves them behind)";
    RotationState = 43, "rotation-state", FailedPrecondition, "no root rotation is under way, or one already is";
    NoRootKey = 44, "no-root-key", FailedPrecondition, "this host does not hold the CA's root key: run the command on the root's host";
    NoIntermediate = 45, "no-intermediate", FailedPrecondition, "no intermediate of the CA can sign: run `ca-server ca rotate-intermediate` where the root key is";
    DockerLauncher = 46, "docker-launcher", FailedPrecondition, "how the Docker engine is started, or its restart command, cannot be told or cannot run here; nothing was spent (say it with --docker-restart)";
    AgentStart = 47, "agent-start", FailedPrecondition, "guard mode needs the agent running, and dtca cannot tell how to start it here; nothing was spent (say it with --agent-start)";
    GuardSwitch = 48, "guard-switch", Aborted, "the agent did not start, or the engine did not answer through the guard; the previous configuration was restored";
    GuardListen = 49, "guard-listen", Unavailable, "the agent cannot serve guard mode: the engine's address is taken or the node's pair cannot be served";
    AccessLevel = 50, "access-level", InvalidArgument, "an access level was given where none applies: only operator tokens take --access (read-only or full)";
    NoAudit = 51, "no-audit", FailedPrecondition, "this node keeps no audit log: the guard writes one when the engine is in guard mode";
    Usage = 64, "usage", InvalidArgument, "the command line was not understood";
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
        tonic::Code::DataLoss => Reason::StoreCorrupt,
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

    #[test]
    fn every_reason_comes_back_from_a_status_with_its_own_code() {
        for &r in Reason::ALL {
            let s = status(r.grpc_code(), r, "refused");
            assert_eq!(s.code(), r.grpc_code(), "{r}");
            assert_eq!(of_status(&s), Some(r), "{r}");
            assert_eq!(of_status_or_code(&s), r, "{r}");
        }
    }

    #[test]
    fn a_status_that_lost_its_reason_falls_back_to_one_of_the_same_code() {
        use tonic::Code;
        // A proxy in between may drop the metadata: the code alone must still say what
        // kind of refusal it was.
        for &r in Reason::ALL {
            let code = r.grpc_code();
            let fallback = of_status_or_code(&tonic::Status::new(code, "no reason attached"));
            if code == Code::ResourceExhausted {
                // Size limits (tonic's, a proxy's) say ResourceExhausted too; the server's
                // own (a used-up token) always carries its reason.
                assert_eq!(fallback, Reason::TooLarge, "{r}");
            } else if fallback == Reason::Internal {
                // Codes no server refusal is sent with read as internal.
                assert!(
                    matches!(
                        code,
                        Code::Internal
                            | Code::AlreadyExists
                            | Code::FailedPrecondition
                            | Code::Aborted
                    ),
                    "{r}: {code:?}"
                );
            } else {
                assert_eq!(fallback.grpc_code(), code, "{r} came back as {fallback}");
            }
        }
    }
}
