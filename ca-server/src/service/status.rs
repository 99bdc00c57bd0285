//! Refusals to gRPC statuses, in one exhaustive match. The status carries the stable
//! reason word in metadata (`dtca-reason`); internal detail is logged, never sent.

use dtca_common::reason;
use tonic::{Code, Status};

use crate::registrar::Refusal;

/// The status a refusal is answered with.
pub fn of(refusal: &Refusal) -> Status {
    let code = match refusal {
        Refusal::TokenMalformed(_) | Refusal::Csr(_) | Refusal::InvalidArgument(_) => {
            Code::InvalidArgument
        }
        Refusal::TokenForeignCa
        | Refusal::TokenUnknown
        | Refusal::TokenExpired { .. }
        | Refusal::TokenRevoked
        | Refusal::CertMissing
        | Refusal::CertForeign
        | Refusal::CertExpired { .. }
        | Refusal::CertInvalid(_)
        | Refusal::CertUnknown(_) => Code::Unauthenticated,
        Refusal::TokenUsedUp => Code::ResourceExhausted,
        Refusal::NameNotAllowed(_) | Refusal::CertRevoked(_) | Refusal::RoleNotAllowed { .. } => {
            Code::PermissionDenied
        }
        Refusal::NotFound(_) => Code::NotFound,
        Refusal::Store(crate::store::StoreError::Unavailable(_)) => Code::Unavailable,
        Refusal::Store(_) | Refusal::Authority(_) | Refusal::Internal(_) => Code::Internal,
    };
    let message = match code {
        Code::Internal => "internal error; see the CA server's log".to_string(),
        Code::Unavailable => "the CA cannot record certificates right now (database unavailable); nothing was issued, retry later".to_string(),
        _ => refusal.to_string(),
    };
    reason::status(code, refusal.reason(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use dtca_common::Reason;

    #[test]
    fn internal_detail_is_not_sent() {
        let s = of(&Refusal::Internal("secret path /var/lib/x".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/var/lib/x"));
        let s = of(&Refusal::Store(StoreError::Unavailable(
            "connection refused to 10.0.0.1".into(),
        )));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!s.message().contains("10.0.0.1"));
        assert_eq!(reason::of_status(&s), Some(Reason::StoreUnavailable));
    }

    #[test]
    fn token_refusals_carry_their_reason() {
        let s = of(&Refusal::TokenUsedUp);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(reason::of_status(&s), Some(Reason::TokenUsedUp));
        assert_eq!(
            reason::of_status(&of(&Refusal::TokenExpired {
                at: time::OffsetDateTime::UNIX_EPOCH
            })),
            Some(Reason::TokenExpired)
        );
    }
}
