//! A credential directory: the roots, a leaf with its chain, and the leaf's key, under the
//! names the docker CLI expects (`ca.pem`, `cert.pem`, `key.pem`) or dockerd's
//! (`server-cert.pem`, `server-key.pem`).
//!
//! Replacing a pair is crash-safe: all files are staged and fsynced first, then the key
//! and the certificate are renamed into place. A crash between those two renames leaves
//! the new key with the old certificate and the new certificate still staged; [`Bundle::load`]
//! finishes the job, so a matching pair is always found.

use std::path::{Path, PathBuf};

use dtca_pki::inspect::{self, CertInfo};
use dtca_pki::key::PrivateKey;

use crate::fs::{self as files, FileError, PRIVATE, PUBLIC};
use crate::tls::ClientIdentity;

/// File names inside a credential directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Root certificates (the trust bundle: two during a root rotation).
    pub ca: &'static str,
    /// Leaf followed by the intermediate.
    pub cert: &'static str,
    /// The leaf's private key, unencrypted PKCS#8, mode 0600.
    pub key: &'static str,
}

impl Layout {
    /// `ca.pem`, `cert.pem`, `key.pem`: the docker CLI's names, used for every client bundle.
    pub const CLIENT: Layout = Layout {
        ca: "ca.pem",
        cert: "cert.pem",
        key: "key.pem",
    };
    /// `ca.pem`, `server-cert.pem`, `server-key.pem`: what dockerd is pointed at.
    pub const DOCKERD: Layout = Layout {
        ca: "ca.pem",
        cert: "server-cert.pem",
        key: "server-key.pem",
    };
}

/// The roots, a chain (leaf first) and the leaf's key.
#[derive(Debug)]
pub struct Bundle {
    /// Root certificates to trust, DER, oldest first: one, or during a root rotation the
    /// old and the new root. Never empty in a loaded bundle.
    pub roots: Vec<Vec<u8>>,
    /// Leaf then intermediate(s), DER.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's key.
    pub key: PrivateKey,
}

impl Bundle {
    /// Parsed fields of the leaf.
    ///
    /// # Errors
    /// [`BundleError::Invalid`] when the leaf does not parse (a loaded bundle always does).
    pub fn leaf(&self) -> Result<CertInfo, BundleError> {
        let der = self
            .chain
            .first()
            .ok_or(BundleError::Invalid("empty chain".into()))?;
        CertInfo::from_der(der).map_err(|e| BundleError::Invalid(e.to_string()))
    }

    /// The roots as slices, for chain verification.
    pub fn root_slices(&self) -> Vec<&[u8]> {
        self.roots.iter().map(Vec::as_slice).collect()
    }

    /// The chain and key for mutual TLS.
    pub fn client_identity(&self) -> ClientIdentity {
        ClientIdentity {
            chain: self.chain.clone(),
            key_pkcs8: self.key.pkcs8_der().to_vec(),
        }
    }

    /// Loads and checks a bundle: every file parses and the key is the leaf's.
    ///
    /// # Errors
    /// [`BundleError::Missing`] when a file is absent, [`BundleError::Io`] when one cannot
    /// be read, [`BundleError::Invalid`] when they are malformed or do not match.
    pub fn load(dir: &Path, layout: Layout) -> Result<Bundle, BundleError> {
        let paths = Paths::new(dir, layout);
        for path in [&paths.ca, &paths.cert, &paths.key] {
            if !path.exists() {
                return Err(BundleError::Missing(path.clone()));
            }
        }
        let bundle = Self::read(&paths)?;
        if bundle.matches() {
            return Ok(bundle);
        }
        // Interrupted replacement: key renamed, certificate still staged.
        let staged = files::staged_path(&paths.cert);
        if staged.exists() {
            let candidate = Bundle {
                chain: read_chain(&staged)?,
                ..Self::read(&paths)?
            };
            if candidate.matches() {
                files::commit(&staged, &paths.cert)?;
                return Ok(candidate);
            }
        }
        Err(BundleError::Invalid(format!(
            "{} does not belong to {}",
            paths.key.display(),
            paths.cert.display()
        )))
    }

    /// Writes the bundle into `dir` (created 0755 if missing): roots and chain 0644, key
    /// 0600, crash-safe as described in the module docs.
    ///
    /// # Errors
    /// [`BundleError::Io`] naming the path that failed; the previous files stay intact.
    pub fn save(&self, dir: &Path, layout: Layout) -> Result<(), BundleError> {
        self.save_staged(dir, layout, None)
    }

    /// [`Bundle::save`], staging the new files in `staging` (same filesystem as `dir`)
    /// instead of beside the old ones, for a directory whose reader would trip over a
    /// staged file (the docker CLI lists a context's TLS directory and reads every file).
    ///
    /// # Errors
    /// As [`Bundle::save`].
    pub fn save_staged(
        &self,
        dir: &Path,
        layout: Layout,
        staging: Option<&Path>,
    ) -> Result<(), BundleError> {
        files::ensure_dir(dir, 0o755)?;
        if let Some(staging) = staging {
            files::ensure_dir(staging, 0o700)?;
        }
        let paths = Paths::new(dir, layout);
        let chain_pem = inspect::certs_to_pem(self.chain.iter().map(Vec::as_slice));
        let root_pem = inspect::certs_to_pem(self.roots.iter().map(Vec::as_slice));
        let stage = |path: &Path, data: &[u8], mode| match staging {
            Some(staging) => files::stage_at(
                staging.join(files::staged_path(path).file_name().unwrap_or_default()),
                data,
                mode,
            ),
            None => files::stage(path, data, mode),
        };
        let ca = stage(&paths.ca, root_pem.as_bytes(), PUBLIC)?;
        let cert = stage(&paths.cert, chain_pem.as_bytes(), PUBLIC)?;
        let key = stage(&paths.key, self.key.to_pem().as_bytes(), PRIVATE)?;
        files::commit(&ca, &paths.ca)?;
        files::commit(&key, &paths.key)?;
        files::commit(&cert, &paths.cert)?;
        Ok(())
    }

    fn read(paths: &Paths) -> Result<Bundle, BundleError> {
        let root = read_chain(&paths.ca)?;
        let chain = read_chain(&paths.cert)?;
        let key_pem = files::read_to_string(&paths.key)?;
        let key = PrivateKey::from_pem(&key_pem)
            .map_err(|e| BundleError::Invalid(format!("{}: {e}", paths.key.display())))?;
        Ok(Bundle {
            roots: root,
            chain,
            key,
        })
    }

    fn matches(&self) -> bool {
        self.leaf()
            .map(|leaf| leaf.public_key_der == self.key.public_key_der())
            .unwrap_or(false)
    }
}

struct Paths {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Paths {
    fn new(dir: &Path, layout: Layout) -> Self {
        Paths {
            ca: dir.join(layout.ca),
            cert: dir.join(layout.cert),
            key: dir.join(layout.key),
        }
    }
}

fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, BundleError> {
    let text = files::read_to_string(path)?;
    inspect::certs_from_pem(&text)
        .map_err(|e| BundleError::Invalid(format!("{}: {e}", path.display())))
}

/// Why a bundle could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{} is missing", .0.display())]
    Missing(PathBuf),
    #[error(transparent)]
    Io(#[from] FileError),
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

/// A bundle from a throwaway CA of cluster `cluster`: a one-hour leaf for `role`/`name`
/// with `dns_names`, its chain and key. For unit tests only.
///
/// # Panics
/// When the CA or the leaf cannot be made, which is a bug.
#[cfg(any(test, feature = "testing"))]
#[must_use]
#[allow(
    clippy::expect_used,
    reason = "a test fixture: failing is a bug in the test set-up"
)]
pub fn sample(cluster: &str, role: dtca_pki::Role, name: &str, dns_names: &[&str]) -> Bundle {
    use dtca_pki::authority::{Authority, LeafTemplate, hierarchy};
    let now = time::OffsetDateTime::now_utc();
    let h = hierarchy::create(cluster, dtca_pki::KeyType::P256, now).expect("test CA");
    let roots = vec![h.root_der.clone()];
    let ca = Authority::new(cluster, h.root_der, h.intermediate_der, h.intermediate_key)
        .expect("test CA");
    let key = PrivateKey::generate(dtca_pki::KeyType::P256).expect("test key");
    let leaf = ca
        .issue(
            &LeafTemplate {
                identity: dtca_pki::Identity::new(cluster, role, name).expect("test identity"),
                public_key_der: key.public_key_der(),
                dns_names: dns_names.iter().map(|d| (*d).to_string()).collect(),
                ip_addresses: vec![],
                access: dtca_pki::access::Access::Full,
                lifetime: std::time::Duration::from_secs(3600),
            },
            now,
        )
        .expect("test leaf");
    Bundle {
        roots,
        chain: vec![leaf.der, ca.intermediate_der().to_vec()],
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtca_pki::{KeyType, Role};
    use std::os::unix::fs::PermissionsExt;

    fn bundle() -> Bundle {
        sample("t", Role::Operator, "alice", &[])
    }

    #[test]
    fn saves_and_loads_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle();
        b.save(dir.path(), Layout::CLIENT).unwrap();
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Bundle::load(dir.path(), Layout::CLIENT).unwrap();
        assert_eq!(back.chain, b.chain);
        assert_eq!(back.roots, b.roots);
    }

    /// During a root rotation ca.pem holds both roots; both come back.
    #[test]
    fn keeps_every_root_of_the_trust_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bundle();
        let other = sample("t", Role::Operator, "bob", &[]);
        b.roots.push(other.roots[0].clone());
        b.save(dir.path(), Layout::CLIENT).unwrap();
        let back = Bundle::load(dir.path(), Layout::CLIENT).unwrap();
        assert_eq!(back.roots.len(), 2);
        assert_eq!(back.roots, b.roots);
    }

    #[test]
    fn refuses_a_key_that_does_not_match_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        bundle().save(dir.path(), Layout::CLIENT).unwrap();
        let other = PrivateKey::generate(KeyType::P256).unwrap();
        std::fs::write(dir.path().join("key.pem"), other.to_pem().as_bytes()).unwrap();
        assert!(matches!(
            Bundle::load(dir.path(), Layout::CLIENT),
            Err(BundleError::Invalid(_))
        ));
    }

    #[test]
    fn finishes_a_replacement_interrupted_between_the_renames() {
        let dir = tempfile::tempdir().unwrap();
        bundle().save(dir.path(), Layout::DOCKERD).unwrap();
        let next = bundle();
        // Simulate the crash: key renamed into place, certificate still staged.
        let cert_path = dir.path().join("server-cert.pem");
        let chain_pem = inspect::certs_to_pem(next.chain.iter().map(Vec::as_slice));
        files::stage(&cert_path, chain_pem.as_bytes(), PUBLIC).unwrap();
        files::write_atomic(
            &dir.path().join("server-key.pem"),
            next.key.to_pem().as_bytes(),
            PRIVATE,
        )
        .unwrap();
        let loaded = Bundle::load(dir.path(), Layout::DOCKERD).unwrap();
        assert_eq!(loaded.chain, next.chain);
        assert!(!files::staged_path(&cert_path).exists());
    }

    #[test]
    fn reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Bundle::load(dir.path(), Layout::CLIENT),
            Err(BundleError::Missing(_))
        ));
    }
}
