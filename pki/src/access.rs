//! Operator access levels, and how a certificate carries them.
//!
//! A full-access operator certificate is an ordinary client certificate (EKU clientAuth):
//! native engines (dockerd) and guard engines both accept it. A restricted certificate
//! carries, instead of clientAuth, one dtca EKU naming its level. dockerd (Go's TLS server)
//! requires clientAuth in a client certificate's EKU, so a native engine, which cannot
//! enforce levels, refuses a restricted certificate at the handshake: it fails closed. The
//! guard verifies such a certificate's chain for the level's EKU and enforces the level.
//!
//! The OIDs live under `2.25.<UUID>` (ITU-T X.667: an arc anyone may use without
//! registration): `<arc>.1` is dtca's EKU arc, `<arc>.1.1` read-only.

use std::fmt;
use std::str::FromStr;

/// dtca's private OID arc (dotted form).
pub const ARC: &str = "2.25.129926020494527248288744792990249038043";

/// The EKU of a read-only operator certificate (dotted form).
pub const READ_ONLY_EKU: &str = "2.25.129926020494527248288744792990249038043.1.1";

/// What an operator's certificate lets it do on a guard engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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

/// The OID components of a dotted OID string (for rcgen's `Other` EKU).
pub fn oid_components(dotted: &str) -> Vec<u64> {
    dotted.split('.').filter_map(|c| c.parse().ok()).collect()
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
    }
}
