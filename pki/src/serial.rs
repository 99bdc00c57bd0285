//! Certificate serial numbers: random (leaves: the second of issue, then random bits),
//! and written the way `openssl x509 -serial` does.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};

/// Bytes in a fresh serial. The top bit is cleared (DER integers are signed) and the next
/// one set, so every serial has the same length and 126 random bits: replicas never
/// coordinate on serials.
const SERIAL_BYTES: usize = 16;

/// A positive certificate serial number, minimal big-endian bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A new random serial.
    ///
    /// # Errors
    /// [`SerialError::Random`] when the system's random source fails.
    pub fn random(rng: &SystemRandom) -> Result<Self, SerialError> {
        let mut bytes = vec![0u8; SERIAL_BYTES];
        rng.fill(&mut bytes).map_err(|_| SerialError::Random)?;
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Ok(Serial(bytes))
    }

    /// A new serial for a certificate issued at `now`: the 16 bytes of [`Serial::random`]
    /// with bits 125..94 holding the Unix second of `now`, so 94 bits stay random (the
    /// CA/Browser Forum asks for 64) and serials issued later sort after earlier ones.
    ///
    /// A store indexes certificates by serial: with wholly random serials every new
    /// certificate lands on a random page of that index, a page written to disk for
    /// each certificate; in issue order they land on the same few pages at its end.
    ///
    /// # Errors
    /// [`SerialError::Random`] when the system's random source fails.
    pub fn in_issue_order(
        rng: &SystemRandom,
        now: time::OffsetDateTime,
    ) -> Result<Self, SerialError> {
        let mut serial = Self::random(rng)?;
        let second = u32::try_from(now.unix_timestamp().max(0)).unwrap_or(u32::MAX);
        // The top two bits stay 0 (positive) and 1 (always 16 bytes); the next 32 are
        // the second, the remaining 94 random.
        let mut top =
            u128::from_be_bytes(serial.0[..16].try_into().map_err(|_| SerialError::Random)?);
        top &= !(u128::from(u32::MAX) << 94);
        top |= u128::from(second) << 94;
        serial.0 = top.to_be_bytes().to_vec();
        Ok(serial)
    }

    /// From the big-endian magnitude (leading zero bytes are dropped).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Serial(bytes[start..].to_vec())
    }

    /// Big-endian magnitude bytes, as rcgen's `SerialNumber` takes them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    /// Upper-case hex, two digits per byte, as `openssl x509 -noout -serial` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        f.write_str(&data_encoding::HEXUPPER.encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = SerialError;

    /// Reads hex in any case, with or without leading zeros, an optional `serial=` (as
    /// openssl prints it) or `0x` prefix, and optional `:` separators.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // What `Display` writes, and so what every store column holds: read without the
        // copies below (a fleet view reads ten thousand).
        if !s.is_empty()
            && s.len() <= 80
            && let Ok(bytes) = data_encoding::HEXUPPER.decode(s.as_bytes())
        {
            return Ok(Serial::from_be_bytes(&bytes));
        }
        let trimmed = s.trim();
        let body = trimmed
            .strip_prefix("serial=")
            .or_else(|| trimmed.strip_prefix("0x"))
            .unwrap_or(trimmed);
        let digits: String = body.chars().filter(|&c| c != ':').collect();
        if digits.is_empty() || digits.len() > 80 || !digits.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(SerialError::Malformed(s.to_string()));
        }
        let digits = digits.trim_start_matches('0').to_ascii_uppercase();
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = data_encoding::HEXUPPER
            .decode(padded.as_bytes())
            .map_err(|_| SerialError::Malformed(s.to_string()))?;
        Ok(Serial(bytes))
    }
}

/// A serial that could not be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("invalid serial {0:?}: give it in hex as `openssl x509 -noout -serial` prints it")]
    Malformed(String),
    #[error("the system random number generator failed")]
    Random,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displayed_serials_read_back_as_any_spelling_of_them_does() {
        for text in [
            "00",
            "01",
            "0A",
            "00AB",
            "7F12",
            "4A3B2C1D00FF",
            &"AB".repeat(40),
        ] {
            let spellings = [
                text.to_string(),
                text.to_lowercase(),
                format!("0x{text}"),
                format!(" {text} "),
            ];
            let read: Vec<Serial> = spellings.iter().map(|s| s.parse().unwrap()).collect();
            assert!(read.iter().all(|r| *r == read[0]), "{text}: {read:?}");
        }
        assert_eq!("00AB".parse::<Serial>().unwrap().to_string(), "AB");
        assert!("".parse::<Serial>().is_err());
        assert!("AB".repeat(41).parse::<Serial>().is_err());
    }

    #[test]
    fn random_serials_are_positive_sixteen_bytes_and_differ() {
        let rng = SystemRandom::new();
        let a = Serial::random(&rng).unwrap();
        let b = Serial::random(&rng).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 16);
        assert_eq!(a.as_bytes()[0] & 0x80, 0);
        assert_ne!(a.as_bytes()[0], 0);
    }

    #[test]
    fn serials_in_issue_order_sort_by_their_second_and_keep_94_random_bits() {
        let rng = SystemRandom::new();
        let t = time::macros::datetime!(2026-11-27 10:00:00 UTC);
        let a = Serial::in_issue_order(&rng, t).unwrap();
        let b = Serial::in_issue_order(&rng, t).unwrap();
        let later = Serial::in_issue_order(&rng, t + time::Duration::seconds(1)).unwrap();
        assert_ne!(a, b, "the random part differs within a second");
        for s in [&a, &b, &later] {
            assert_eq!(s.as_bytes().len(), 16);
            assert_eq!(s.as_bytes()[0] & 0xc0, 0x40, "positive, always 16 bytes");
            let bits = u128::from_be_bytes(s.as_bytes().try_into().unwrap());
            let second = u64::try_from((bits >> 94) & u128::from(u32::MAX)).unwrap();
            assert!(second == 1_795_773_600 || second == 1_795_773_601, "{s}");
        }
        assert!(a.to_string() < later.to_string() && b.to_string() < later.to_string());
        // Far in the future the second still fits (until 2106) and the serial stays valid.
        let far = Serial::in_issue_order(&rng, time::macros::datetime!(2100-01-01 0:00 UTC));
        assert_eq!(far.unwrap().as_bytes()[0] & 0xc0, 0x40);
    }

    #[test]
    fn accepts_openssl_form_any_case_and_leading_zeros() {
        let canonical: Serial = "0A1B2C".parse().unwrap();
        for form in [
            "serial=0A1B2C",
            "a1b2c",
            "000a1b2c",
            "0x0A:1B:2C",
            " 0a1b2c\n",
        ] {
            assert_eq!(form.parse::<Serial>().unwrap(), canonical, "{form}");
        }
        assert_eq!(canonical.to_string(), "0A1B2C");
    }

    #[test]
    fn rejects_non_hex_serials() {
        for bad in ["", "xyz", "12-34", "serial=", &"f".repeat(81)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn from_be_bytes_drops_sign_padding() {
        assert_eq!(Serial::from_be_bytes(&[0, 0x80, 1]).to_string(), "8001");
    }
}
