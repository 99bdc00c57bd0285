//! An online copy of the embedded store (`ca-server store backup`): consistent while
//! `serve` keeps writing, checked, and put in place only when complete.
//!
//! SQLite's backup API copies every page of the database as one snapshot (one read
//! transaction, so `serve`'s writes go on; its WAL cannot start over until the copy is
//! done). The copy is made under a temporary name next to the destination, turned into
//! a single self-contained file (no WAL), checked with SQLite's full `integrity_check`,
//! synced, made 0600, and only then renamed to the destination: a backup file that
//! exists is complete and sound.

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the backup file.
    pub bytes: u64,
    /// Certificates in it.
    pub certificates: u64,
    /// Join tokens in it.
    pub tokens: u64,
    /// Audit entries in it.
    pub audit: u64,
}

/// Why no backup was made. Nothing is left at the destination then.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{} does not exist: this state directory holds no embedded store (a CA on PostgreSQL is backed up with pg_dump)", .0.display())]
    Missing(PathBuf),
    #[error("{} already exists: give a new file name (a backup never overwrites anything)", .0.display())]
    Exists(PathBuf),
    #[error("{}: the copy does not pass SQLite's integrity check ({finding}): the store itself is damaged; keep it, and restore the last good backup", store.display())]
    Damaged { store: PathBuf, finding: String },
    #[error("cannot read {}: {detail}", path.display())]
    Source { path: PathBuf, detail: String },
    #[error("cannot write {}: {detail}", path.display())]
    Destination { path: PathBuf, detail: String },
}

/// Copies the database at `db` to `dest`, which must not exist.
///
/// # Errors
/// [`BackupError`] saying what failed; nothing is left at `dest` then.
pub fn backup(db: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    if !db.exists() {
        return Err(BackupError::Missing(db.to_path_buf()));
    }
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let partial = partial_path(dest);
    let _ = std::fs::remove_file(&partial);
    let made = copy(db, &partial).and_then(|report| {
        place(&partial, dest)?;
        Ok(report)
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    made
}

/// The copy, checked, under its temporary name.
fn copy(db: &Path, partial: &Path) -> Result<BackupReport, BackupError> {
    let source_error = |e: rusqlite::Error| BackupError::Source {
        path: db.to_path_buf(),
        detail: e.to_string(),
    };
    let dest_error = |e: rusqlite::Error| BackupError::Destination {
        path: partial.to_path_buf(),
        detail: e.to_string(),
    };
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_error)?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(source_error)?;
    let mut dst = Connection::open(partial).map_err(dest_error)?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(dest_error)?;
        // Every page in one step: one snapshot, whatever `serve` writes meanwhile.
        loop {
            match backup.step(-1) {
                Ok(StepResult::Done) => break,
                Ok(StepResult::More | StepResult::Busy | StepResult::Locked) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Ok(_) => break,
                Err(e) => return Err(source_error(e)),
            }
        }
    }
    drop(src);
    // One self-contained file: no WAL beside it.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(dest_error)?;
    let findings: Vec<String> = dst
        .prepare("PRAGMA integrity_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| BackupError::Damaged {
            store: db.to_path_buf(),
            finding: e.to_string(),
        })?;
    if findings != ["ok"] {
        return Err(BackupError::Damaged {
            store: db.to_path_buf(),
            finding: findings.join("; "),
        });
    }
    let count = |table: &str| -> Result<u64, BackupError> {
        dst.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(|e| BackupError::Damaged {
            store: db.to_path_buf(),
            finding: e.to_string(),
        })
    };
    let (certificates, tokens, audit) = (count("certificates")?, count("tokens")?, count("audit")?);
    dst.close().map_err(|(_, e)| dest_error(e))?;
    let bytes = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        bytes,
        certificates,
        tokens,
        audit,
    })
}

/// Syncs the copy, makes it 0600 and renames it into place.
fn place(partial: &Path, dest: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path, e: std::io::Error| BackupError::Destination {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    std::fs::set_permissions(partial, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io(partial, e))?;
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(partial, e))?;
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    std::fs::rename(partial, dest).map_err(|e| io(dest, e))?;
    if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// `DIR/.NAME.partial` next to `dest`.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store-backup".into());
    dest.with_file_name(format!(".{name}.partial"))
}
