//! Private keys: generation, PEM, and encryption at rest with a passphrase.
//!
//! Leaf keys are written as unencrypted PKCS#8 (`PRIVATE KEY`), because dockerd and the
//! docker CLI refuse encrypted keys. CA keys are written as PKCS#8 encrypted with PBES2
//! (scrypt + AES-256-CBC, `ENCRYPTED PRIVATE KEY`), a standard form that
//! `openssl pkey -in key.pem` also reads.

use std::fmt;
use std::str::FromStr;

use pkcs8::der::Decode;
use pkcs8::pkcs5::{pbes2, scrypt};
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use rcgen::{KeyPair, PublicKeyData};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// PEM label of unencrypted PKCS#8 keys.
pub const PEM_LABEL: &str = "PRIVATE KEY";
/// PEM label of encrypted PKCS#8 keys.
pub const ENCRYPTED_PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// scrypt cost: N = 2^14, r = 8 (16 MiB: `openssl pkey` refuses more than 32 MiB, so
/// the files stay readable with openssl), and p = 6, which multiplies the time, not the
/// memory: about 0.3 s per key on a 2026 server core, so `serve` (two keys) pays about
/// half a second at start and a stolen key file costs a guesser six times what OpenSSL's
/// default (p = 1) would. Keys written with other parameters still decrypt: they are in
/// the file.
const SCRYPT_LOG_N: u8 = 14;
/// See [`SCRYPT_LOG_N`].
const SCRYPT_P: u32 = 6;

/// Key algorithms the CA issues for and signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256: the default, supported by every Docker release.
    #[default]
    P256,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// Name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa" => Ok(KeyType::P256),
            "ed25519" => Ok(KeyType::Ed25519),
            _ => Err(KeyError::UnknownType(s.to_string())),
        }
    }
}

/// A private key. `Debug` prints only its algorithm; the PKCS#8 bytes are wiped on drop.
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: KeyPair,
}

impl PrivateKey {
    /// Generates a new key.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] when the crypto provider fails.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let pair = KeyPair::generate_for(key_type.algorithm()).map_err(KeyError::crypto)?;
        Ok(PrivateKey {
            pkcs8: Zeroizing::new(pair.serialize_der()),
            pair,
        })
    }

    /// Loads an unencrypted PKCS#8 key, DER.
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] for anything but a P-256 or Ed25519 PKCS#8 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = KeyPair::try_from(der).map_err(|_| KeyError::Unsupported)?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256
            && pair.algorithm() != &rcgen::PKCS_ED25519
        {
            return Err(KeyError::Unsupported);
        }
        Ok(PrivateKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            pair,
        })
    }

    /// Loads an unencrypted PKCS#8 key, PEM.
    ///
    /// # Errors
    /// [`KeyError::Pem`] when the text is not one `PRIVATE KEY` block, or the errors of
    /// [`PrivateKey::from_pkcs8_der`].
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(|_| KeyError::Pem)?;
        if block.tag() != PEM_LABEL {
            return Err(KeyError::Pem);
        }
        Self::from_pkcs8_der(block.contents())
    }

    /// The key as unencrypted PKCS#8 PEM, for dockerd and the docker CLI.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode(&pem::Pem::new(PEM_LABEL, self.pkcs8.to_vec())))
    }

    /// Encrypts the key for storage at rest.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] when randomness or encryption fails.
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        let rng = SystemRandom::new();
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        rng.fill(&mut salt)
            .map_err(|_| KeyError::crypto("random"))?;
        rng.fill(&mut iv).map_err(|_| KeyError::crypto("random"))?;
        let params =
            scrypt::Params::new(SCRYPT_LOG_N, 8, SCRYPT_P, 32).map_err(KeyError::crypto)?;
        let pbes2 =
            pbes2::Parameters::scrypt_aes256cbc(params, &salt, &iv).map_err(KeyError::crypto)?;
        let info = PrivateKeyInfo::try_from(self.pkcs8.as_slice()).map_err(KeyError::crypto)?;
        let doc = info
            .encrypt_with_params(pbes2, passphrase)
            .map_err(KeyError::crypto)?;
        Ok(Zeroizing::new(pem::encode_config(
            &pem::Pem::new(ENCRYPTED_PEM_LABEL, doc.as_bytes()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )))
    }

    /// Decrypts a key written by [`PrivateKey::to_encrypted_pem`].
    ///
    /// # Errors
    /// [`KeyError::Pem`] when the text is not an encrypted PKCS#8 block;
    /// [`KeyError::WrongPassphrase`] when decryption fails.
    pub fn from_encrypted_pem(text: &str, passphrase: &[u8]) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(|_| KeyError::Pem)?;
        if block.tag() != ENCRYPTED_PEM_LABEL {
            return Err(KeyError::Pem);
        }
        let info =
            EncryptedPrivateKeyInfo::from_der(block.contents()).map_err(|_| KeyError::Pem)?;
        let doc = info
            .decrypt(passphrase)
            .map_err(|_| KeyError::WrongPassphrase)?;
        // A wrong passphrase can still pass the CBC padding check by chance; then the
        // plaintext is not a key, and that too means the passphrase was wrong.
        Self::from_pkcs8_der(doc.as_bytes()).map_err(|_| KeyError::WrongPassphrase)
    }

    /// The rcgen key pair, for signing.
    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The unencrypted PKCS#8 DER. Keep it in memory only.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// Gives up the wrapper for rcgen's key pair (which also elides the key in `Debug`).
    pub fn into_pair(self) -> KeyPair {
        self.pair
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// Which algorithm the key is for.
    pub fn key_type(&self) -> KeyType {
        if self.pair.algorithm() == &rcgen::PKCS_ED25519 {
            KeyType::Ed25519
        } else {
            KeyType::P256
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, secret elided)", self.key_type())
    }
}

/// Why a key could not be made, read or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key type {0:?} (expected p256 or ed25519)")]
    UnknownType(String),
    #[error("not a PEM private key of the expected kind")]
    Pem,
    #[error("unsupported private key: expected a PKCS#8 P-256 or Ed25519 key")]
    Unsupported,
    #[error("wrong passphrase: the CA key could not be decrypted")]
    WrongPassphrase,
    #[error("cryptographic failure: {0}")]
    Crypto(String),
}

impl KeyError {
    fn crypto(err: impl fmt::Display) -> Self {
        KeyError::Crypto(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_round_trips_with_the_right_passphrase() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let pem = key.to_encrypted_pem(b"correct horse").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let back = PrivateKey::from_encrypted_pem(&pem, b"correct horse").unwrap();
        assert_eq!(back.public_key_der(), key.public_key_der());
    }

    #[test]
    fn rejects_wrong_passphrase() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let pem = key.to_encrypted_pem(b"right").unwrap();
        assert_eq!(
            PrivateKey::from_encrypted_pem(&pem, b"wrong").unwrap_err(),
            KeyError::WrongPassphrase
        );
    }

    #[test]
    fn plain_pem_round_trips_and_debug_hides_the_key() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let pem = key.to_pem();
        let back = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(back.public_key_der(), key.public_key_der());
        let body: String = pem.lines().nth(1).unwrap().to_string();
        assert!(!format!("{key:?}").contains(&body));
    }

    #[test]
    fn rejects_garbage_and_certificates_as_keys() {
        assert_eq!(PrivateKey::from_pem("nope").unwrap_err(), KeyError::Pem);
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert_eq!(PrivateKey::from_pem(&cert).unwrap_err(), KeyError::Pem);
        let junk = pem::encode(&pem::Pem::new(PEM_LABEL, vec![1, 2, 3]));
        assert_eq!(
            PrivateKey::from_pem(&junk).unwrap_err(),
            KeyError::Unsupported
        );
    }
}
