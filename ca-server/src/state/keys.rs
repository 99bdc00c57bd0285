//! The root keys and the CA files `init` wrote, as the lifecycle reads them.
//!
//! ```text
//! DIR/root-key.pem            the key of the root `init` made
//! DIR/root-keys/<id>.pem      the key of each root a rotation made (<id>: the root's
//!                             hex SHA-256), written before the root is stored
//! ```

use std::path::PathBuf;

use dtca_common::fs::{self as files, PRIVATE};
use dtca_pki::authority::lineage::CaCert;
use dtca_pki::key::PrivateKey;
use zeroize::Zeroizing;

use super::{Passphrase, StateDir, StateError, read_cert};
use crate::lifecycle::keys::{CaFiles, RootKeys, open, seal};

impl StateDir {
    fn root_keys_dir(&self) -> PathBuf {
        self.path().join("root-keys")
    }

    /// The key of `root`, when this state directory holds it (the root host).
    ///
    /// # Errors
    /// [`StateError`] when a key file is there but cannot be opened.
    pub fn root_key_of(
        &self,
        root: &CaCert,
        passphrase: &Passphrase,
    ) -> Result<Option<PrivateKey>, StateError> {
        let candidates = [
            self.root_keys_dir().join(format!("{}.pem", root.id())),
            self.path().join("root-key.pem"),
        ];
        for path in candidates {
            if !path.exists() {
                continue;
            }
            let text = Zeroizing::new(files::read_to_string(&path)?);
            let key = open(&text, passphrase)?;
            if key.public_key_der() == root.info.public_key_der {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Writes the key of a new root (before the root itself is stored).
    ///
    /// # Errors
    /// [`StateError`] when it cannot be sealed or written.
    pub fn save_root_key(
        &self,
        root: &CaCert,
        key: &PrivateKey,
        passphrase: &Passphrase,
    ) -> Result<(), StateError> {
        files::ensure_dir(&self.root_keys_dir(), 0o700)?;
        let sealed = seal(key, passphrase)?;
        files::write_atomic(
            &self.root_keys_dir().join(format!("{}.pem", root.id())),
            sealed.as_bytes(),
            PRIVATE,
        )?;
        Ok(())
    }
}

impl StateDir {
    /// Reads the CA certificates and the sealed intermediate key of `init`.
    ///
    /// # Errors
    /// [`StateError`] when a file is missing or holds no certificate.
    pub fn ca_files(&self) -> Result<CaFiles, StateError> {
        Ok(CaFiles {
            root_der: read_cert(&self.ca_pem())?,
            intermediate_der: read_cert(&self.intermediate_pem())?,
            intermediate_key_pem: Zeroizing::new(files::read_to_string(&self.intermediate_key())?),
        })
    }
}

impl RootKeys for StateDir {
    fn key_of(&self, root: &CaCert, passphrase: &Passphrase) -> Result<Option<PrivateKey>, String> {
        self.root_key_of(root, passphrase)
            .map_err(|e| e.to_string())
    }

    fn keep(&self, root: &CaCert, key: &PrivateKey, passphrase: &Passphrase) -> Result<(), String> {
        self.save_root_key(root, key, passphrase)
            .map_err(|e| e.to_string())
    }
}
