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

/// [`READ_ONLY_EKU`] as DER content octets (the OID without tag and length): what webpki
/// and x509-parser compare. Its UUID arc does not fit in 64 bits, so rcgen's EKU list
/// cannot carry it; the CA writes the EKU extension itself ([`eku_extension_der`]).
pub const READ_ONLY_EKU_DER: &[u8] = &[
    0x69, 0x81, 0xc3, 0xbe, 0xeb, 0xd8, 0xc7, 0x9a, 0xc2, 0x9b, 0xc7, 0x8b, 0x9c, 0x92, 0xaa, 0xa6,
    0xcb, 0xfa, 0xe1, 0x5b, 0x01, 0x01,
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

/// The DER value of an extendedKeyUsage extension that lists exactly `eku` (content
/// octets of one OID): `SEQUENCE { OBJECT IDENTIFIER }`.
pub fn eku_extension_der(eku: &[u8]) -> Vec<u8> {
    let mut oid = vec![0x06];
    push_len(&mut oid, eku.len());
    oid.extend_from_slice(eku);
    let mut seq = vec![0x30];
    push_len(&mut seq, oid.len());
    seq.extend_from_slice(&oid);
    seq
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
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

    /// Base-128 encoding of a dotted OID (the UUID arc fits in a u128).
    fn encode(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u128> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
        let mut out = vec![(40 * arcs[0] + arcs[1]) as u8];
        for &arc in &arcs[2..] {
            let mut groups = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                groups.push((rest & 0x7f) as u8 | 0x80);
                rest >>= 7;
            }
            out.extend(groups.into_iter().rev());
        }
        out
    }

    #[test]
    fn the_der_form_is_the_dotted_oid() {
        assert_eq!(encode(READ_ONLY_EKU), READ_ONLY_EKU_DER);
        assert_eq!(encode(&format!("{ARC}.1")), READ_ONLY_EKU_DER[..21]);
    }

    #[test]
    fn a_dtca_eku_restricts_and_an_unknown_one_under_the_arc_fails_closed() {
        let client_auth: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
        assert_eq!(Access::of_ekus([client_auth]), Access::Full);
        assert_eq!(Access::of_ekus([]), Access::Full);
        assert_eq!(Access::of_ekus([READ_ONLY_EKU_DER]), Access::ReadOnly);
        let future = encode(&format!("{ARC}.1.9"));
        assert_eq!(Access::of_ekus([future.as_slice()]), Access::ReadOnly);
    }

    #[test]
    fn the_extension_lists_exactly_the_one_eku() {
        let der = eku_extension_der(READ_ONLY_EKU_DER);
        assert_eq!(der[..4], [0x30, 24, 0x06, 22]);
        assert_eq!(&der[4..], READ_ONLY_EKU_DER);
    }
}
