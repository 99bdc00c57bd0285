//! Operator access levels, and how a certificate carries them.
//!
//! A full-access operator certificate is an ordinary client certificate (EKU clientAuth):
//! native engines (dockerd) and guard engines both accept it. A restricted certificate
//! carries, instead of clientAuth, one dtca EKU naming its level. dockerd (Go's TLS server)
//! requires clientAuth in a client certificate's EKU, so a native engine, which cannot
//! enforce levels, refuses a restricted certificate at the handshake: it fails closed. The
//! guard verifies such a certificate's chain for the level's EKU and enforces the level.
//!
//! The OIDs live under dtca's arc, made from dtca's UUID (61bed762-39a8-46e3-8b38-
//! 4952697eb0db) in Microsoft's arc for GUID-derived OIDs (1.2.840.113556.1.8000.2554,
//! which anyone may use without registration): `<arc>.1` is dtca's EKU arc, `<arc>.1.1`
//! read-only. Not `2.25.<UUID>` (ITU-T X.667), whose 128-bit arc Go cannot parse: the
//! docker CLI refuses to load such a certificate at all ("x509: invalid extended key
//! usages"), so a read-only operator could not reach even a guard engine. Every arc here
//! fits in 31 bits, as Go's parser requires.

use std::fmt;
use std::str::FromStr;

/// dtca's private OID arc (dotted form).
pub const ARC: &str = "1.2.840.113556.1.8000.2554.25022.55138.14760.18147.35640.4805225.8302811";

/// The EKU of a read-only operator certificate (dotted form).
pub const READ_ONLY_EKU: &str =
    "1.2.840.113556.1.8000.2554.25022.55138.14760.18147.35640.4805225.8302811.1.1";

/// [`READ_ONLY_EKU`] as DER content octets (the OID without tag and length): what webpki
/// and x509-parser compare.
pub const READ_ONLY_EKU_DER: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x14, 0x01, 0xbe, 0x40, 0x93, 0x7a, 0x81, 0xc3, 0x3e, 0x83, 0xae,
    0x62, 0xf3, 0x28, 0x81, 0x8d, 0x63, 0x82, 0x96, 0x38, 0x82, 0xa5, 0xa4, 0x69, 0x83, 0xfa, 0xe1,
    0x5b, 0x01, 0x01,
];

/// What an operator's certificate lets it do on a guard engine.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Everything the Docker API offers.
    #[default]
    Full,
    /// Reading state only: lists, inspect, logs, events, version, info. Nothing that
    /// changes state, runs code or reads file contents.
    ReadOnly,
}

impl Access {
    /// The name used on the command line, in tokens and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::ReadOnly => "read-only",
        }
    }

    /// The EKU a certificate of this level carries instead of clientAuth (`None` for
    /// full access, which carries clientAuth).
    pub const fn eku(self) -> Option<&'static str> {
        match self {
            Access::Full => None,
            Access::ReadOnly => Some(READ_ONLY_EKU),
        }
    }

    /// The level a restricted EKU names.
    pub fn from_eku(dotted: &str) -> Option<Access> {
        (dotted == READ_ONLY_EKU).then_some(Access::ReadOnly)
    }

    /// [`Access::eku`] as DER content octets.
    pub const fn eku_der(self) -> Option<&'static [u8]> {
        match self {
            Access::Full => None,
            Access::ReadOnly => Some(READ_ONLY_EKU_DER),
        }
    }

    /// The level of a certificate whose EKU extension lists `others` (the OIDs besides the
    /// well-known ones, as DER content octets): the level a dtca EKU names; an unknown OID
    /// under dtca's EKU arc reads as read-only, so a level this build does not know fails
    /// closed; none is full access.
    pub fn of_ekus<'a>(others: impl IntoIterator<Item = &'a [u8]>) -> Access {
        // `<arc>.1`, dtca's EKU arc (its last byte ends a component).
        let arc = &READ_ONLY_EKU_DER[..READ_ONLY_EKU_DER.len() - 1];
        let mut access = Access::Full;
        for oid in others {
            if oid.starts_with(arc) {
                access = Access::ReadOnly;
            }
        }
        access
    }
}

/// The arcs of a dotted OID (for rcgen's `Other` EKU); `None` when one is not a number.
pub fn oid_components(dotted: &str) -> Option<Vec<u64>> {
    dotted.split('.').map(|c| c.parse().ok()).collect()
}

/// The DER contents (no tag, no length) of a dotted OID: the first two arcs in one
/// number, every arc in base 128; `None` when it has fewer than two numeric arcs.
pub fn oid_der(dotted: &str) -> Option<Vec<u8>> {
    let arcs = oid_components(dotted)?;
    let (first, rest) = match arcs.as_slice() {
        [a, b, rest @ ..] => (a.checked_mul(40)?.checked_add(*b)?, rest),
        _ => return None,
    };
    let mut out = Vec::new();
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut more = arc >> 7;
        while more > 0 {
            groups.push((more & 0x7f) as u8 | 0x80);
            more >>= 7;
        }
        out.extend(groups.into_iter().rev());
    }
    Some(out)
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An access level name that is neither `full` nor `read-only`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAccess(pub String);

impl fmt::Display for UnknownAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown access level {:?} (use full or read-only)",
            self.0
        )
    }
}

impl std::error::Error for UnknownAccess {}

impl FromStr for Access {
    type Err = UnknownAccess;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Access::Full),
            "read-only" | "readonly" => Ok(Access::ReadOnly),
            other => Err(UnknownAccess(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for a in [Access::Full, Access::ReadOnly] {
            assert_eq!(a.as_str().parse::<Access>(), Ok(a));
        }
        assert!("admin".parse::<Access>().is_err());
        assert_eq!(Access::default(), Access::Full);
    }

    #[test]
    fn only_restricted_levels_have_an_eku() {
        assert_eq!(Access::Full.eku(), None);
        let eku = Access::ReadOnly.eku().unwrap();
        assert!(eku.starts_with(ARC));
        assert_eq!(Access::from_eku(eku), Some(Access::ReadOnly));
        assert_eq!(Access::from_eku("1.3.6.1.5.5.7.3.2"), None);
        assert_eq!(Access::Full.eku_der(), None);
        assert_eq!(Access::ReadOnly.eku_der(), Some(READ_ONLY_EKU_DER));
    }

    #[test]
    fn the_der_form_is_the_dotted_oid() {
        assert_eq!(oid_der(READ_ONLY_EKU).unwrap(), READ_ONLY_EKU_DER);
        let eku_arc = &READ_ONLY_EKU_DER[..READ_ONLY_EKU_DER.len() - 1];
        assert_eq!(oid_der(&format!("{ARC}.1")).unwrap(), eku_arc);
    }

    /// Regression: under 2.25.<UUID> the docker CLI (Go) could not parse a read-only
    /// certificate at all: Go's OID parser takes arcs of at most 31 bits.
    #[test]
    fn every_arc_fits_go_s_oid_parser() {
        let arcs = oid_components(READ_ONLY_EKU).unwrap();
        assert!(arcs.iter().all(|a| *a < 1 << 31), "{arcs:?}");
        assert!(READ_ONLY_EKU.starts_with("1.2.840.113556.1.8000.2554."));
    }

    #[test]
    fn a_dtca_eku_restricts_and_an_unknown_one_under_the_arc_fails_closed() {
        let client_auth: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
        assert_eq!(Access::of_ekus([client_auth]), Access::Full);
        assert_eq!(Access::of_ekus([]), Access::Full);
        assert_eq!(Access::of_ekus([READ_ONLY_EKU_DER]), Access::ReadOnly);
        let future = oid_der(&format!("{ARC}.1.9")).unwrap();
        assert_eq!(Access::of_ekus([future.as_slice()]), Access::ReadOnly);
    }
}
