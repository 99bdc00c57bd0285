//! dockerd's TLS directory, laid out so that the certificate and key dockerd reads always
//! belong together, even after a kill -9 at any moment:
//!
//! ```text
//! <tls-dir>/ca.pem                        the root (tlscacert)
//! <tls-dir>/pairs/<SERIAL>/server-cert.pem  leaf + intermediate
//! <tls-dir>/pairs/<SERIAL>/server-key.pem   its key, 0600
//! <tls-dir>/current -> pairs/<SERIAL>      switched by one atomic rename
//! <tls-dir>/server-cert.pem -> current/server-cert.pem   (tlscert)
//! <tls-dir>/server-key.pem  -> current/server-key.pem    (tlskey)
//! ```
//!
//! A new pair is written in full beside the current one, then `current` is swapped; the
//! previous pair stays until the new one is proven (the engine serves it), so going back
//! is one more swap. This is SPIRE's "keep current and next" in file-system form.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::fs::{self as files, FileError, PUBLIC};
use dtca_pki::Serial;
use dtca_pki::inspect;

use super::daemon_json::TlsPaths;
use crate::error::{ClientError, Invalid};

/// dockerd's TLS directory.
#[derive(Debug, Clone)]
pub struct TlsDir {
    root: PathBuf,
}

impl TlsDir {
    /// The directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TlsDir { root: root.into() }
    }

    /// The paths daemon.json points at.
    pub fn paths(&self) -> TlsPaths {
        TlsPaths {
            ca: self.root.join("ca.pem"),
            cert: self.root.join(Layout::DOCKERD.cert),
            key: self.root.join(Layout::DOCKERD.key),
        }
    }

    /// Files and links that installing touches (for backups).
    pub fn touched(&self) -> Vec<PathBuf> {
        let p = self.paths();
        vec![p.ca, p.cert, p.key, self.current_link()]
    }

    fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    fn pair_dir(&self, serial: &Serial) -> PathBuf {
        self.root.join("pairs").join(serial.to_string())
    }

    /// Writes a pair (and the root) without making it current; returns its serial.
    ///
    /// # Errors
    /// [`ClientError`] naming the file that could not be written.
    pub fn install(&self, bundle: &Bundle) -> Result<Serial, ClientError> {
        files::ensure_dir(&self.root, 0o755)?;
        let serial = bundle.leaf()?.serial;
        let dir = self.pair_dir(&serial);
        files::ensure_dir(&dir, 0o700)?;
        bundle.save(&dir, Layout::DOCKERD)?;
        let root_pem = inspect::certs_to_pem(bundle.roots.iter().map(Vec::as_slice));
        files::write_atomic(&self.paths().ca, root_pem.as_bytes(), PUBLIC)?;
        Ok(serial)
    }

    /// Replaces the engine's CA file with `roots` (after a root rotation ends). A native
    /// engine reads it at its next start; nothing is restarted for it.
    ///
    /// # Errors
    /// [`ClientError`] naming the file that could not be written.
    pub fn trust(&self, roots: &[Vec<u8>]) -> Result<bool, ClientError> {
        let path = self.paths().ca;
        let root_pem = inspect::certs_to_pem(roots.iter().map(Vec::as_slice));
        if std::fs::read(&path).is_ok_and(|now| now == root_pem.as_bytes()) {
            return Ok(false);
        }
        files::write_atomic(&path, root_pem.as_bytes(), PUBLIC)?;
        Ok(true)
    }

    /// Makes `serial` the pair dockerd reads (one atomic rename), and makes sure the
    /// file names in daemon.json lead to it.
    ///
    /// # Errors
    /// [`ClientError`] when the pair is not installed or a link cannot be made.
    pub fn activate(&self, serial: &Serial) -> Result<(), ClientError> {
        let target = PathBuf::from("pairs").join(serial.to_string());
        if !self.root.join(&target).is_dir() {
            return Err(Invalid::PairNotInstalled {
                serial: serial.clone(),
                dir: self.root.clone(),
            }
            .into());
        }
        replace_link(&self.current_link(), &target)?;
        for name in [Layout::DOCKERD.cert, Layout::DOCKERD.key] {
            let link = self.root.join(name);
            let want = PathBuf::from("current").join(name);
            if std::fs::read_link(&link).ok().as_deref() != Some(want.as_path()) {
                replace_link(&link, &want)?;
            }
        }
        Ok(())
    }

    /// The serial `current` points at.
    pub fn current(&self) -> Option<Serial> {
        std::fs::read_link(self.current_link())
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            .and_then(|s| s.parse().ok())
    }

    /// The pair dockerd reads now.
    ///
    /// # Errors
    /// [`ClientError`] when it is missing or broken.
    pub fn load_current(&self) -> Result<Bundle, ClientError> {
        Ok(Bundle::load(&self.root, Layout::DOCKERD)?)
    }

    /// Deletes pairs other than `keep`.
    pub fn prune(&self, keep: &[&Serial]) {
        let Ok(entries) = std::fs::read_dir(self.root.join("pairs")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.iter().any(|s| s.to_string() == name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Points `link` at `target` atomically: a new link beside it, renamed over it.
fn replace_link(link: &Path, target: &Path) -> Result<(), FileError> {
    let staged = files::staged_path(link);
    let _ = std::fs::remove_file(&staged);
    symlink(target, &staged).map_err(|e| FileError::new(&staged, "create link", e))?;
    files::commit(&staged, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtca_common::bundle::sample;
    use dtca_pki::Role;

    fn bundle() -> Bundle {
        sample("t", Role::Node, "n", &["n.example"])
    }

    #[test]
    fn switching_pairs_is_one_rename_and_the_old_pair_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path().join("tls"));
        let (a, b) = (bundle(), bundle());
        let sa = dir.install(&a).unwrap();
        dir.activate(&sa).unwrap();
        assert_eq!(dir.current(), Some(sa.clone()));
        assert_eq!(dir.load_current().unwrap().chain, a.chain);
        let sb = dir.install(&b).unwrap();
        // Installed but not active: dockerd still reads the first pair.
        assert_eq!(dir.load_current().unwrap().chain, a.chain);
        dir.activate(&sb).unwrap();
        assert_eq!(dir.load_current().unwrap().chain, b.chain);
        // Going back is one swap.
        dir.activate(&sa).unwrap();
        assert_eq!(dir.load_current().unwrap().chain, a.chain);
        dir.prune(&[&sa]);
        assert!(dir.activate(&sb).is_err());
        // The names daemon.json uses are links into current/.
        let link = std::fs::read_link(dir.paths().cert).unwrap();
        assert_eq!(link, PathBuf::from("current/server-cert.pem"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.paths().key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn replaces_plain_files_left_by_a_manual_setup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path());
        std::fs::write(dir.paths().cert, "old").unwrap();
        std::fs::write(dir.paths().key, "old").unwrap();
        let b = bundle();
        let s = dir.install(&b).unwrap();
        dir.activate(&s).unwrap();
        assert_eq!(dir.load_current().unwrap().chain, b.chain);
    }
}
