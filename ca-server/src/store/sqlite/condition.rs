//! What the store is fit for: writing, or not, because its disk is full or its file is
//! damaged; and the space it keeps for itself on its file system.
//!
//! A full disk is met in one of two ways: the free space falls below a floor (checked
//! before every batch of writes and by every health check), or a write fails with
//! SQLite's "disk full". Either way the store stops writing (every write is refused with
//! [`StoreError::Full`], nothing half-done), gives back the reserve file it keeps next to
//! the database so that a checkpoint can still move the WAL into the database file and
//! empty it, and looks again every second. Once the file system has room for the reserve
//! and twice the floor above it, the reserve is made again and writes resume: no restart,
//! nothing lost (every refused write was refused before its transaction committed).
//!
//! Damage is for good: once SQLite reports the file corrupt, writes are refused with
//! [`StoreError::Corrupt`] until `serve` is restarted on a repaired file (and `serve`
//! checks the file before it starts).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::StoreError;

/// One mebibyte.
const MIB: u64 = 1 << 20;

/// The default size of the reserve file.
pub const DEFAULT_RESERVE: u64 = 64 * MIB;

/// Whether the store may write, and the space it keeps.
#[derive(Debug)]
pub(super) struct Condition {
    /// The directory holding the database: its file system is the one that fills up.
    dir: PathBuf,
    /// The reserve file, `<database>.reserve`.
    reserve: PathBuf,
    /// Its size; zero keeps no reserve and no floor (only a failed write stops writes).
    reserve_bytes: u64,
    /// Why writes are refused now, if they are.
    trouble: Mutex<Option<StoreError>>,
    /// `trouble.is_some()`, read without the lock on every batch.
    troubled: AtomicBool,
}

impl Condition {
    /// The condition of the database at `path`, keeping a reserve of `reserve` bytes next
    /// to it (`None`: leave whatever reserve is there alone and keep no floor). The
    /// reserve is made now if it is missing; when there is no room for it the store
    /// starts out full.
    pub(super) fn new(path: &Path, reserve: Option<u64>) -> Self {
        let reserve_bytes = reserve.unwrap_or(0);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut reserve_file = path.as_os_str().to_owned();
        reserve_file.push(".reserve");
        let condition = Condition {
            dir,
            reserve: PathBuf::from(reserve_file),
            reserve_bytes,
            trouble: Mutex::new(None),
            troubled: AtomicBool::new(false),
        };
        if reserve == Some(0) {
            let _ = std::fs::remove_file(&condition.reserve);
        } else if let Err(why) = condition.make_reserve() {
            condition.set(StoreError::Full(why));
        } else {
            let _ = condition.check_space();
        }
        condition
    }

    /// Why writes are refused, if they are.
    pub(super) fn trouble(&self) -> Option<StoreError> {
        if !self.troubled.load(Ordering::Acquire) {
            return None;
        }
        self.trouble.lock().ok().and_then(|t| t.clone())
    }

    /// Whether the disk is full now (as opposed to fine, or the file damaged).
    pub(super) fn is_full(&self) -> bool {
        matches!(self.trouble(), Some(StoreError::Full(_)))
    }

    /// Records what an operation met: a full disk or a damaged file changes the
    /// condition; anything else does not.
    pub(super) fn note(&self, error: &StoreError) {
        match error {
            StoreError::Full(_) if self.trouble().is_none() => {
                tracing::error!(error = %error, "the store's disk is full: writes are refused until there is room again");
                self.set(error.clone());
            }
            StoreError::Corrupt(_) if !matches!(self.trouble(), Some(StoreError::Corrupt(_))) => {
                tracing::error!(error = %error, "the store's database is damaged: writes are refused; restore it from a backup");
                self.set(error.clone());
            }
            _ => {}
        }
    }

    /// Before writing: the reason not to (a full disk or a damaged file), after looking
    /// at the free space again.
    ///
    /// # Errors
    /// [`StoreError::Full`] or [`StoreError::Corrupt`].
    pub(super) fn check_space(&self) -> Result<(), StoreError> {
        if let Some(trouble) = self.trouble() {
            return Err(trouble);
        }
        let floor = self.floor();
        if floor == 0 {
            return Ok(());
        }
        match free_bytes(&self.dir) {
            Ok(free) if free < floor => {
                let e = StoreError::Full(format!(
                    "{} has {} free, less than the {} the store keeps free",
                    self.dir.display(),
                    mib(free),
                    mib(floor)
                ));
                self.note(&e);
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// While full: gives the reserve back (so a checkpoint can move the WAL into the
    /// database file and empty it); called before each attempt to recover.
    pub(super) fn release_reserve(&self) {
        if self.reserve_bytes > 0 && std::fs::remove_file(&self.reserve).is_ok() {
            tracing::warn!(reserve = %self.reserve.display(), "released the store's reserve to let a checkpoint through");
        }
    }

    /// While full: whether there is room again (the reserve and twice the floor); if so
    /// the reserve is made again and writes resume.
    pub(super) fn try_recover(&self) -> bool {
        if !self.is_full() {
            return false;
        }
        let needed = self.reserve_bytes + 2 * self.floor() + MIB;
        match free_bytes(&self.dir) {
            Ok(free) if free >= needed => {}
            _ => return false,
        }
        if let Err(why) = self.make_reserve() {
            tracing::warn!(error = %why, "cannot make the store's reserve again yet");
            let _ = std::fs::remove_file(&self.reserve);
            return false;
        }
        if let Ok(mut t) = self.trouble.lock()
            && matches!(*t, Some(StoreError::Full(_)))
        {
            *t = None;
            self.troubled.store(false, Ordering::Release);
            tracing::info!(dir = %self.dir.display(), "the store's disk has room again: writes resume");
            return true;
        }
        false
    }

    /// Free space of the database's file system, when it can be read.
    pub(super) fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir).ok()
    }

    /// Writes are refused below this much free space.
    fn floor(&self) -> u64 {
        self.reserve_bytes / 4
    }

    fn set(&self, error: StoreError) {
        if let Ok(mut t) = self.trouble.lock() {
            *t = Some(error);
            self.troubled.store(true, Ordering::Release);
        }
    }

    /// Makes the reserve file (blocks really allocated, not a sparse file), replacing a
    /// short one.
    fn make_reserve(&self) -> Result<(), String> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let have = std::fs::metadata(&self.reserve)
            .map(|m| m.len())
            .unwrap_or(0);
        if have == self.reserve_bytes {
            return Ok(());
        }
        let file = File::create(&self.reserve)
            .map_err(|e| format!("cannot make {}: {e}", self.reserve.display()))?;
        let len = i64::try_from(self.reserve_bytes).unwrap_or(i64::MAX);
        let made = nix::fcntl::posix_fallocate(&file, 0, len)
            .map_err(|e| {
                format!(
                    "no room for the store's {} reserve {}: {e}",
                    mib(self.reserve_bytes),
                    self.reserve.display()
                )
            })
            .and_then(|()| {
                file.sync_all()
                    .map_err(|e| format!("cannot sync {}: {e}", self.reserve.display()))
            });
        if made.is_err() {
            drop(file);
            let _ = std::fs::remove_file(&self.reserve);
        }
        made
    }
}

/// Space an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| e.to_string())?;
    #[allow(
        clippy::useless_conversion,
        reason = "the field types differ by platform"
    )]
    let free = u64::from(stat.blocks_available()) * u64::from(stat.fragment_size());
    Ok(free)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_reserve_of_real_blocks_next_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let c = Condition::new(&db, Some(2 * MIB));
        assert!(c.trouble().is_none());
        let reserve = dir.path().join("store.db.reserve");
        let meta = std::fs::metadata(&reserve).unwrap();
        assert_eq!(meta.len(), 2 * MIB);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 >= 2 * MIB,
            "a sparse reserve reserves nothing"
        );
        drop(c);
        // No reserve asked for: none kept, and no floor.
        let c = Condition::new(&db, None);
        assert!(
            reserve.exists(),
            "a tool that keeps no reserve leaves serve's alone"
        );
        drop(c);
        let c = Condition::new(&db, Some(0));
        assert!(!reserve.exists());
        assert!(c.check_space().is_ok());
    }

    #[test]
    fn refuses_writes_when_the_reserve_does_not_fit_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let c = Condition::new(&dir.path().join("store.db"), Some(u64::MAX / 4));
        let Some(StoreError::Full(why)) = c.trouble() else {
            panic!("not full: {:?}", c.trouble())
        };
        assert!(why.contains("store.db.reserve"), "{why}");
        assert!(matches!(c.check_space(), Err(StoreError::Full(_))));
        assert!(!c.try_recover(), "recovered without room");
    }

    #[test]
    fn a_damaged_file_stays_damaged_and_outranks_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let c = Condition::new(&dir.path().join("store.db"), None);
        c.note(&StoreError::Unavailable("busy".into()));
        assert!(c.trouble().is_none(), "an outage is not a condition");
        c.note(&StoreError::Corrupt("page 7".into()));
        c.note(&StoreError::Full("no room".into()));
        assert!(matches!(c.check_space(), Err(StoreError::Corrupt(_))));
        assert!(!c.try_recover());
        assert!(matches!(c.trouble(), Some(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_full_disk_clears_once_there_is_room_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = Condition::new(&dir.path().join("store.db"), Some(MIB));
        c.note(&StoreError::Full("disk full".into()));
        assert!(c.is_full());
        c.release_reserve();
        assert!(!dir.path().join("store.db.reserve").exists());
        // A temp dir has far more than 1 MiB + 2 * 256 KiB + 1 MiB free.
        assert!(c.try_recover());
        assert!(c.trouble().is_none());
        assert!(dir.path().join("store.db.reserve").exists());
    }
}
