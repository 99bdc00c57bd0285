//! Refusals to gRPC statuses, in one place: a refusal's [`Reason`] (one exhaustive match,
//! `Refusal::reason`) decides the code (the reason table in `dtca_common::reason`). The
//! status carries the stable reason word in metadata (`dtca-reason`); internal detail is
//! logged, never sent.

use dtca_common::{Reason, reason};
use tonic::{Code, Status};

use crate::registrar::Refusal;

/// The status a refusal is answered with.
pub fn of(refusal: &Refusal) -> Status {
    let reason = refusal.reason();
    let code = reason.grpc_code();
    // What the store said names files and hosts: it is logged, and the caller gets what
    // the reason means.
    let message = match reason {
        Reason::StoreUnavailable => "the CA cannot record certificates right now (database unavailable); nothing was issued, retry later".to_string(),
        Reason::StoreFull => "the CA's disk is full; nothing was issued: retry after the CA's operator has freed space".to_string(),
        Reason::StoreCorrupt => "the CA's database is damaged; nothing was issued: the CA's operator must restore it from a backup".to_string(),
        _ if code == Code::Internal => "internal error; see the CA server's log".to_string(),
        _ => refusal.to_string(),
    };
    reason::status(code, reason, message)
}

#[cfg(test)]
mod tests {
    use dtca_pki::Serial;
    use dtca_pki::authority::AuthorityError;
    use dtca_pki::csr::CsrError;
    use dtca_pki::identity::Role;
    use dtca_pki::policy::PolicyError;
    use dtca_pki::token::TokenError;

    use super::*;
    use crate::store::StoreError;

    /// Every refusal with the code it has always been answered with.
    #[test]
    fn each_refusal_keeps_its_status_code() {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let serial = Serial::from_be_bytes(&[1, 2, 3]);
        let table = [
            (
                Refusal::TokenMalformed(TokenError::Malformed("x")),
                Code::InvalidArgument,
            ),
            (Refusal::TokenForeignCa, Code::Unauthenticated),
            (Refusal::TokenUnknown, Code::Unauthenticated),
            (Refusal::TokenExpired { at }, Code::Unauthenticated),
            (Refusal::TokenRevoked, Code::Unauthenticated),
            (Refusal::TokenUsedUp, Code::ResourceExhausted),
            (Refusal::Csr(CsrError::BadSignature), Code::InvalidArgument),
            (
                Refusal::NameNotAllowed(PolicyError::BadDnsName("x".into())),
                Code::PermissionDenied,
            ),
            (Refusal::CertMissing, Code::Unauthenticated),
            (Refusal::CertForeign, Code::Unauthenticated),
            (
                Refusal::CertExpired { not_after: at },
                Code::Unauthenticated,
            ),
            (Refusal::CertInvalid("x".into()), Code::Unauthenticated),
            (Refusal::CertUnknown(serial.clone()), Code::Unauthenticated),
            (Refusal::CertRevoked(serial), Code::PermissionDenied),
            (
                Refusal::RoleNotAllowed {
                    role: Role::Node,
                    action: "x",
                },
                Code::PermissionDenied,
            ),
            (Refusal::NotFound("x".into()), Code::NotFound),
            (Refusal::InvalidArgument("x".into()), Code::InvalidArgument),
            (
                Refusal::Store(StoreError::Unavailable("x".into())),
                Code::Unavailable,
            ),
            (
                Refusal::Store(StoreError::Full("x".into())),
                Code::Unavailable,
            ),
            (
                Refusal::Store(StoreError::Corrupt("x".into())),
                Code::DataLoss,
            ),
            (
                Refusal::Authority(AuthorityError::Signing("x".into())),
                Code::Internal,
            ),
            (Refusal::Internal("x".into()), Code::Internal),
        ];
        for (refusal, code) in table {
            let s = of(&refusal);
            assert_eq!(s.code(), code, "{refusal:?}");
            assert_eq!(reason::of_status(&s), Some(refusal.reason()), "{refusal:?}");
        }
    }

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

    /// Regression: a full disk and a damaged file were both answered "database
    /// unavailable, retry later", and corruption even as an internal error.
    #[test]
    fn a_full_disk_and_a_damaged_store_are_told_apart_from_an_outage() {
        let full = of(&Refusal::Store(StoreError::Full(
            "/var/lib/dtca has 1 MiB free".into(),
        )));
        assert_eq!(reason::of_status(&full), Some(Reason::StoreFull));
        assert!(
            full.message().contains("disk is full"),
            "{}",
            full.message()
        );
        assert!(!full.message().contains("/var/lib/dtca"));
        let damaged = of(&Refusal::Store(StoreError::Corrupt(
            "page 7 of /var/lib/dtca/store.db".into(),
        )));
        assert_eq!(damaged.code(), Code::DataLoss);
        assert_eq!(reason::of_status(&damaged), Some(Reason::StoreCorrupt));
        assert!(damaged.message().contains("restore it from a backup"));
        assert!(
            !damaged.message().contains("retry"),
            "{}",
            damaged.message()
        );
        assert!(!damaged.message().contains("store.db"));
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
