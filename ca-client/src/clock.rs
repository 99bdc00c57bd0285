//! Whether this machine's clock would accept what the CA issues now, decided before a
//! join token is spent: from the CA's clock, which comes with its trust bundle.
//!
//! A leaf is valid from `issue - backdate` (the CA's clock): a client whose clock is
//! further behind than the backdate refuses the certificate it paid a token use for.
//! The root and intermediate in the bundle must be valid here too. A clock that is ahead
//! is left alone: a certificate is valid there until its expiry comes early, and how
//! early depends on a lifetime the client does not know yet.

use std::time::Duration;

use dtca_pki::inspect::CertInfo;
use time::OffsetDateTime;

use crate::error::ClockSkew;

/// The CA's clock as a trust bundle reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaClock {
    /// The CA's time when it answered.
    pub at: OffsetDateTime,
    /// How far before issue the CA starts a leaf's validity.
    pub backdate: Duration,
}

/// What a skew is measured within: the time the answer took to arrive, and whole-second
/// certificate times.
const SLACK: time::Duration = time::Duration::seconds(5);

/// Refuses when, at `local` (this machine's clock when the CA's answer arrived), a leaf
/// the CA issues now, or one of its CA certificates, would not be valid.
///
/// # Errors
/// [`ClockSkew`] saying by how much and what to do.
pub fn judge(
    ca: CaClock,
    local: OffsetDateTime,
    chain: &[(&'static str, &CertInfo)],
) -> Result<(), ClockSkew> {
    for (what, cert) in chain {
        if local < cert.not_before || local > cert.not_after {
            return Err(ClockSkew::CaCertificate {
                what,
                local,
                ca: ca.at,
                not_before: cert.not_before,
                not_after: cert.not_after,
            });
        }
    }
    let backdate = time::Duration::try_from(ca.backdate).unwrap_or(time::Duration::ZERO);
    let behind = ca.at - local;
    if behind + SLACK > backdate {
        return Err(ClockSkew::Behind {
            behind_secs: behind.whole_seconds(),
            local,
            ca: ca.at,
            valid_from: ca.at - backdate,
            backdate_secs: backdate.whole_seconds(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn cert(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertInfo {
        CertInfo {
            serial: "01".parse().unwrap(),
            identity: None,
            dns_names: vec![],
            ip_addresses: vec![],
            not_before,
            not_after,
            is_ca: true,
            subject: String::new(),
            issuer: String::new(),
            public_key_der: vec![],
            server_auth: false,
            client_auth: false,
            access: dtca_pki::access::Access::Full,
            subject_key_id: None,
            authority_key_id: None,
        }
    }

    #[test]
    fn refuses_a_clock_further_behind_than_the_backdate_and_accepts_the_rest() {
        let ca = time::macros::datetime!(2026-11-27 12:00:00 UTC);
        let clock = CaClock {
            at: ca,
            backdate: FIVE_MINUTES,
        };
        let m = time::Duration::minutes;
        let s = time::Duration::seconds;
        // (how far this clock is behind the CA's, accepted)
        let table = [
            (m(-60), true), // ahead: the certificate is valid here
            (m(0), true),
            (m(4), true),
            (m(5) - s(6), true),
            (m(5) - s(4), false), // too close to the edge to be sure
            (m(10), false),       // faketime -10m
            (m(600), false),
        ];
        for (behind, accepted) in table {
            let result = judge(clock, ca - behind, &[]);
            assert_eq!(result.is_ok(), accepted, "{behind}: {result:?}");
        }
        let Err(e) = judge(clock, ca - m(10), &[]) else {
            unreachable!()
        };
        let text = e.to_string();
        assert!(text.contains("10m 00s behind"), "{text}");
        assert!(text.contains("nothing was spent"), "{text}");
    }

    #[test]
    fn refuses_a_ca_certificate_this_clock_does_not_accept() {
        let ca = time::macros::datetime!(2026-11-27 12:00:00 UTC);
        let clock = CaClock {
            at: ca,
            backdate: FIVE_MINUTES,
        };
        let year = time::Duration::days(365);
        let made_just_now = cert(ca - time::Duration::minutes(5), ca + year);
        // Four minutes behind: the leaf would do, the fresh intermediate would not.
        let local = ca - time::Duration::minutes(6);
        let result = judge(clock, local, &[("intermediate", &made_just_now)]);
        assert!(
            matches!(
                result,
                Err(ClockSkew::CaCertificate {
                    what: "intermediate",
                    ..
                })
            ),
            "{result:?}"
        );
        let expired = cert(ca - year - year, ca - year);
        assert!(judge(clock, ca, &[("root", &expired)]).is_err());
        assert!(judge(clock, ca, &[("root", &made_just_now)]).is_ok());
    }
}
