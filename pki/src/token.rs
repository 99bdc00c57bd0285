//! Join tokens: `DTCA-1-<base32 sha256 of the root cert>-<secret>`.
//!
//! The digest lets a client pin the cluster's root before it trusts anything the server
//! says. The secret is what the server checks; it stores only its SHA-256, and finds the
//! record by a short id derived from that hash.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Prefix and format version of every token.
pub const PREFIX: &str = "DTCA-1-";

/// Bytes of randomness in a token secret (160 bits).
const SECRET_BYTES: usize = 20;

/// SHA-256 of a DER certificate: what a token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootDigest(pub [u8; 32]);

impl RootDigest {
    /// The digest of the given root certificate (DER).
    pub fn of(root_der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, root_der).as_ref());
        RootDigest(out)
    }

    /// Whether `der` is the pinned certificate (constant time; the digest is public,
    /// but there is no reason to leak how much matched).
    pub fn matches(&self, der: &[u8]) -> bool {
        RootDigest::of(der).0.ct_eq(&self.0).into()
    }
}

impl fmt::Display for RootDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for RootDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootDigest({self})")
    }
}

/// A parsed join token. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Digest of the root the client must find at the server.
    pub root: RootDigest,
    secret: Zeroizing<String>,
}

impl JoinToken {
    /// A fresh token for the given root, with a new random secret.
    ///
    /// # Errors
    /// [`TokenError::Random`] when the system's random source fails.
    pub fn generate(root: RootDigest) -> Result<Self, TokenError> {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
            .map_err(|_| TokenError::Random)?;
        Ok(JoinToken {
            root,
            secret: Zeroizing::new(BASE32_NOPAD.encode(bytes.as_ref())),
        })
    }

    /// What the server stores and looks up: the id and the SHA-256 of the secret.
    pub fn secret_hash(&self) -> SecretHash {
        SecretHash::of(&self.secret)
    }

    /// The whole token as printed to the operator. Treat it as a secret.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}-{}", self.root, self.secret.as_str())
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("root", &self.root)
            .field("id", &self.secret_hash().id())
            .finish_non_exhaustive()
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or(TokenError::Malformed("it does not start with DTCA-1-"))?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or(TokenError::Malformed("the secret part is missing"))?;
        let digest = BASE32_NOPAD
            .decode(digest.as_bytes())
            .map_err(|_| TokenError::Malformed("the root digest is not base32"))?;
        let root: [u8; 32] = digest
            .try_into()
            .map_err(|_| TokenError::Malformed("the root digest is not 32 bytes"))?;
        let secret_ok = BASE32_NOPAD
            .decode(secret.as_bytes())
            .map(|b| b.len() == SECRET_BYTES)
            .unwrap_or(false);
        if !secret_ok {
            return Err(TokenError::Malformed(
                "the secret is not 32 base32 characters",
            ));
        }
        Ok(JoinToken {
            root: RootDigest(root),
            secret: Zeroizing::new(secret.to_string()),
        })
    }
}

/// SHA-256 of a token secret: all the server keeps of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    fn of(secret: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, secret.as_bytes()).as_ref());
        SecretHash(out)
    }

    /// The public id of the token (first 8 bytes of the hash, hex): what `token list`
    /// shows and `token revoke` takes, and the key the store looks the token up by.
    pub fn id(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0[..8])
    }

    /// Compares with a stored hash in constant time.
    pub fn verify(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.0.ct_eq(stored))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash(id {})", self.id())
    }
}

/// Why a token string was refused before it reached the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed join token: {0} (expected DTCA-1-<root digest>-<secret>)")]
    Malformed(&'static str),
    #[error("the system random number generator failed")]
    Random,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken::generate(RootDigest::of(b"root")).unwrap()
    }

    #[test]
    fn token_round_trips_through_its_printed_form() {
        let t = token();
        let printed = t.expose();
        assert!(printed.starts_with("DTCA-1-"));
        let parsed: JoinToken = printed.parse().unwrap();
        assert_eq!(parsed, t);
        assert_eq!(parsed.secret_hash().id(), t.secret_hash().id());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let t = token();
        let secret = t.expose().rsplit('-').next().unwrap().to_string();
        assert!(!format!("{t:?}").contains(&secret));
    }

    #[test]
    fn rejects_tokens_with_bad_parts() {
        let good = token().expose();
        let (head, secret) = good.rsplit_once('-').unwrap();
        for bad in [
            "".to_string(),
            good.replace("DTCA-1-", "DTCA-2-"),
            format!("{head}-"),
            format!("{head}-{}", &secret[1..]),
            format!("{head}-{secret}!"),
            good.replacen(&good[7..9], "!!", 1),
            head.to_string(),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn root_digest_matches_only_its_certificate() {
        let d = RootDigest::of(b"root");
        assert!(d.matches(b"root"));
        assert!(!d.matches(b"other"));
    }

    #[test]
    fn secret_hash_verifies_only_the_same_secret() {
        let a = token();
        let b = token();
        assert!(a.secret_hash().verify(&a.secret_hash().0));
        assert!(!a.secret_hash().verify(&b.secret_hash().0));
        assert!(!a.secret_hash().verify(&a.secret_hash().0[..31]));
    }
}
