//! CA keys at rest: sealed with the CA's passphrase (in clear only for a CA made with
//! `--insecure-no-passphrase`), in the store for intermediates (every replica opens
//! them) and, behind [`RootKeys`], in the state directory for roots (which stay on the
//! root's host).

use dtca_pki::authority::lineage::CaCert;
use dtca_pki::key::{KeyError, PrivateKey};
use zeroize::Zeroizing;

/// How CA keys are protected at rest.
pub enum Passphrase {
    /// Encrypt/decrypt with this secret.
    Secret(Zeroizing<Vec<u8>>),
    /// Keys in clear: only with `--insecure-no-passphrase`.
    InsecureNone,
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Passphrase::Secret(_) => f.write_str("Passphrase(elided)"),
            Passphrase::InsecureNone => f.write_str("Passphrase(none, insecure)"),
        }
    }
}

/// Where the root keys are kept (the state directory of the root's host).
pub trait RootKeys: Send + Sync + std::fmt::Debug {
    /// The key of `root`, when it is kept here.
    ///
    /// # Errors
    /// A message when a key is there but cannot be opened.
    fn key_of(&self, root: &CaCert, passphrase: &Passphrase) -> Result<Option<PrivateKey>, String>;

    /// Keeps the key of a new root (before the root itself is stored).
    ///
    /// # Errors
    /// A message when it cannot be sealed or written.
    fn keep(&self, root: &CaCert, key: &PrivateKey, passphrase: &Passphrase) -> Result<(), String>;
}

/// Seals a key as PEM.
///
/// # Errors
/// [`KeyError`] when encryption fails.
pub fn seal(key: &PrivateKey, passphrase: &Passphrase) -> Result<Zeroizing<String>, KeyError> {
    match passphrase {
        Passphrase::Secret(secret) => key.to_encrypted_pem(secret),
        Passphrase::InsecureNone => Ok(key.to_pem()),
    }
}

/// Opens a sealed key.
///
/// # Errors
/// [`KeyError::WrongPassphrase`], or another [`KeyError`] when it does not parse (a key
/// sealed with a passphrase given none, too).
pub fn open(pem: &str, passphrase: &Passphrase) -> Result<PrivateKey, KeyError> {
    match passphrase {
        Passphrase::Secret(secret) => PrivateKey::from_encrypted_pem(pem, secret),
        Passphrase::InsecureNone => PrivateKey::from_pem(pem),
    }
}

/// The CA certificates `init` wrote into a state directory.
pub struct CaFiles {
    /// `ca.pem`.
    pub root_der: Vec<u8>,
    /// `intermediate.pem`.
    pub intermediate_der: Vec<u8>,
    /// `intermediate-key.pem`, sealed as it is.
    pub intermediate_key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaFiles")
    }
}
