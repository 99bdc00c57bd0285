//! Copies of every file the docker switch touches, taken before it touches them, with a
//! manifest that says whether the switch finished. An unfinished manifest found later
//! (the switch was killed) is rolled back before anything else happens.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use dtca_common::endpoint::EngineAddr;
use dtca_common::fs::{self as files, FileError, PRIVATE};
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Invalid};

/// Name of the manifest inside the backup directory.
const MANIFEST: &str = "manifest.json";

/// What a path was before the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "was", rename_all = "lowercase")]
pub enum Was {
    /// It did not exist.
    Absent,
    /// A regular file, copied to `copy` in the backup directory.
    File { copy: String, mode: u32 },
    /// A symbolic link to `target`.
    Link { target: PathBuf },
}

/// One touched path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path.
    pub path: PathBuf,
    /// What it was.
    #[serde(flatten)]
    pub was: Was,
}

/// The manifest of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// When the switch started.
    pub started: String,
    /// Whether it finished (then the backup is only kept for manual rollback).
    pub complete: bool,
    /// Touched paths.
    pub entries: Vec<Entry>,
    /// How to restart the engine.
    pub restart: String,
    /// The engine's unix socket before the switch.
    pub socket: PathBuf,
    /// Plain TCP hosts the engine answered on before the switch.
    pub plain_tcp: Vec<EngineAddr>,
    /// The process making the switch: while it lives, the switch is under way, not
    /// interrupted (in guard mode it starts the agent, which must not undo it).
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Manifest {
    /// Whether the process that began this switch still runs (and is not this one).
    pub fn owner_alive(&self) -> bool {
        self.pid.is_some_and(|pid| {
            pid != std::process::id()
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("ca-client"))
        })
    }
}

/// A backup on disk.
#[derive(Debug)]
pub struct Backup {
    dir: PathBuf,
    /// What it holds.
    pub manifest: Manifest,
}

impl Backup {
    /// Copies `paths` into `dir` (replacing an older, finished backup) and records the
    /// switch as started.
    ///
    /// # Errors
    /// [`ClientError`] when a copy cannot be made; nothing has been touched then.
    pub fn begin(
        dir: &Path,
        paths: &[PathBuf],
        restart: &str,
        socket: &Path,
        plain_tcp: &[EngineAddr],
    ) -> Result<Backup, ClientError> {
        let _ = std::fs::remove_dir_all(dir);
        files::ensure_dir(dir, 0o700)?;
        let mut entries = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let was = match std::fs::symlink_metadata(path) {
                Err(_) => Was::Absent,
                Ok(meta) if meta.file_type().is_symlink() => Was::Link {
                    target: std::fs::read_link(path)
                        .map_err(|e| FileError::new(path, "read link", e))?,
                },
                Ok(meta) => {
                    let copy = format!(
                        "{i}-{}",
                        path.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    );
                    let data =
                        std::fs::read(path).map_err(|e| FileError::new(path, "back up", e))?;
                    files::write_atomic(&dir.join(&copy), &data, PRIVATE)?;
                    Was::File {
                        copy,
                        mode: meta.permissions().mode() & 0o7777,
                    }
                }
            };
            entries.push(Entry {
                path: path.clone(),
                was,
            });
        }
        let backup = Backup {
            dir: dir.to_path_buf(),
            manifest: Manifest {
                started: dtca_pki::duration::timestamp(time::OffsetDateTime::now_utc()),
                complete: false,
                entries,
                restart: restart.to_string(),
                socket: socket.to_path_buf(),
                plain_tcp: plain_tcp.to_vec(),
                pid: Some(std::process::id()),
            },
        };
        backup.write()?;
        Ok(backup)
    }

    /// An unfinished backup in `dir`, if the last switch was interrupted.
    pub fn pending(dir: &Path) -> Option<Backup> {
        let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        (!manifest.complete).then(|| Backup {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Puts every path back as it was; returns what could not be restored.
    pub fn restore(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for entry in self.manifest.entries.iter().rev() {
            if let Err(e) = self.restore_one(entry) {
                failed.push(e.to_string());
            }
        }
        failed
    }

    fn restore_one(&self, entry: &Entry) -> Result<(), FileError> {
        let path = &entry.path;
        match &entry.was {
            Was::Absent => match std::fs::symlink_metadata(path) {
                Ok(_) => {
                    std::fs::remove_file(path).map_err(|e| FileError::new(path, "remove", e))?;
                    files::sync_dir(path)
                }
                Err(_) => Ok(()),
            },
            Was::File { copy, mode } => {
                let data = std::fs::read(self.dir.join(copy))
                    .map_err(|e| FileError::new(&self.dir.join(copy), "read backup", e))?;
                // A link where the file was (our pair layout) is replaced by the file.
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::fs::remove_file(path).map_err(|e| FileError::new(path, "remove", e))?;
                }
                files::write_atomic(path, &data, *mode)
            }
            Was::Link { target } => {
                let staged = files::staged_path(path);
                let _ = std::fs::remove_file(&staged);
                symlink(target, &staged).map_err(|e| FileError::new(&staged, "create link", e))?;
                files::commit(&staged, path)
            }
        }
    }

    /// Records the switch as finished; the copies stay for manual rollback.
    ///
    /// # Errors
    /// [`ClientError`] when the manifest cannot be written.
    pub fn finish(&mut self) -> Result<(), ClientError> {
        self.manifest.complete = true;
        self.write()
    }

    fn write(&self) -> Result<(), ClientError> {
        let text = serde_json::to_string_pretty(&self.manifest).map_err(|e| Invalid::Encode {
            what: "the backup manifest",
            detail: e.to_string(),
        })?;
        files::write_atomic(&self.dir.join(MANIFEST), text.as_bytes(), PRIVATE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_files_links_and_absence_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("daemon.json");
        let link = tmp.path().join("server-cert.pem");
        let absent = tmp.path().join("drop-in.conf");
        std::fs::write(&file, "{\"debug\":true}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        symlink("old-target", &link).unwrap();
        let backup = Backup::begin(
            &tmp.path().join("backup"),
            &[file.clone(), link.clone(), absent.clone()],
            "true",
            Path::new("/run/d.sock"),
            &[],
        )
        .unwrap();
        assert!(Backup::pending(&tmp.path().join("backup")).is_some());

        std::fs::write(&file, "{}").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, "now a file").unwrap();
        std::fs::write(&absent, "new").unwrap();
        assert!(backup.restore().is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"debug\":true}");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("old-target")
        );
        assert!(!absent.exists());
    }

    #[test]
    fn a_finished_backup_is_not_pending() {
        let tmp = tempfile::tempdir().unwrap();
        let mut backup =
            Backup::begin(&tmp.path().join("b"), &[], "true", Path::new("/s"), &[]).unwrap();
        backup.finish().unwrap();
        assert!(Backup::pending(&tmp.path().join("b")).is_none());
    }
}
