//! Files that are never half-written: temp file in the same directory, fsync, rename,
//! fsync the directory. Private keys get mode 0600 from the moment they exist.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of private keys and secrets.
pub const PRIVATE: u32 = 0o600;
/// Mode of certificates and other public files.
pub const PUBLIC: u32 = 0o644;

/// Writes `data` to `path` atomically with `mode`: readers see the old content or the new
/// one, never a mix, even across a crash.
///
/// # Errors
/// [`FileError`] naming the path and what failed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), FileError> {
    let tmp = stage(path, data, mode)?;
    commit(&tmp, path)
}

/// First half of [`write_atomic`]: writes and fsyncs `.<name>.next` beside `path` and
/// returns its path. Use [`commit`] to move it into place; this lets callers stage several
/// files and rename them together once all are on disk, and find a staged file again
/// after a crash ([`staged_path`]).
///
/// # Errors
/// [`FileError`] naming the path.
pub fn stage(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, FileError> {
    stage_at(staged_path(path), data, mode)
}

/// [`stage`] into `tmp`, which must be on the same filesystem as the file it will be
/// committed over. For directories that a reader lists and reads file by file (the docker
/// CLI's context TLS directories), where a staged file beside the real ones would be seen.
///
/// # Errors
/// [`FileError`] naming the path.
pub fn stage_at(tmp: PathBuf, data: &[u8], mode: u32) -> Result<PathBuf, FileError> {
    let err = |source| FileError::new(&tmp, "write", source);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    // The umask may have narrowed the mode; make it exact.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    let written = file.write_all(data).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(tmp)
}

/// Second half of [`write_atomic`]: renames a staged file over `path` and fsyncs the
/// directory.
///
/// # Errors
/// [`FileError`] naming the path.
pub fn commit(staged: &Path, path: &Path) -> Result<(), FileError> {
    fs::rename(staged, path).map_err(|e| FileError::new(path, "rename into place", e))?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, so a rename survives a crash.
///
/// # Errors
/// [`FileError`] naming the directory.
pub fn sync_dir(path: &Path) -> Result<(), FileError> {
    let dir = parent(path);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new(&dir, "sync directory", e))
}

/// Creates `dir` (and parents) with `mode` if missing.
///
/// # Errors
/// [`FileError`] naming the directory.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), FileError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| FileError::new(dir, "create directory", e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| FileError::new(dir, "set permissions of", e))
}

/// Makes `dir` its owner's alone (0700): created so when missing, an existing one open to
/// group or others tightened. Returns the mode it had when it tightened one, so the
/// caller can say so.
///
/// # Errors
/// [`FileError`] naming the directory (one this user does not own cannot be tightened).
pub fn ensure_private_dir(dir: &Path) -> Result<Option<u32>, FileError> {
    if !dir.is_dir() {
        ensure_dir(dir, 0o700)?;
        return Ok(None);
    }
    let mode = fs::metadata(dir)
        .map_err(|e| FileError::new(dir, "read the permissions of", e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700))
        .map_err(|e| FileError::new(dir, "tighten the permissions of", e))?;
    Ok(Some(mode))
}

/// Takes group and other permissions off `path` when it exists. Returns the mode it had
/// when it changed it.
///
/// # Errors
/// [`FileError`] naming the file.
pub fn make_private(path: &Path) -> Result<Option<u32>, FileError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(None);
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() || mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7700))
        .map_err(|e| FileError::new(path, "tighten the permissions of", e))?;
    Ok(Some(mode))
}

/// Creates `dir` like [`ensure_dir`] and proves that files can be created in it, so a
/// caller can refuse before it asks the CA for something it could not store.
///
/// # Errors
/// [`FileError`] naming the directory and what failed.
pub fn ensure_writable_dir(dir: &Path, mode: u32) -> Result<(), FileError> {
    ensure_dir(dir, mode)?;
    let probe = dir.join(format!(".dtca-probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .open(&probe)
        .map_err(|e| FileError::new(dir, "create files in", e))?;
    fs::remove_file(&probe).map_err(|e| FileError::new(&probe, "remove", e))
}

/// Reads a file to a string, with the path in the error.
///
/// # Errors
/// [`FileError`] naming the path.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).map_err(|e| FileError::new(path, "read", e))
}

/// Where [`stage`] puts the new content of `path` until [`commit`].
pub fn staged_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.next"))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file operation that failed, with its path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was being done.
    pub action: &'static str,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// Wraps an I/O error with its path.
    pub fn new(path: &Path, action: &'static str, source: io::Error) -> Self {
        FileError {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_directory_and_file_are_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private_dir(&dir).unwrap(), Some(0o755));
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(ensure_private_dir(&dir).unwrap(), None);
        let file = dir.join("store.db");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(make_private(&file).unwrap(), Some(0o644));
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(make_private(&dir.join("absent")).unwrap(), None);
        let fresh = tmp.path().join("fresh");
        assert_eq!(ensure_private_dir(&fresh).unwrap(), None);
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn writable_dir_is_created_and_a_file_in_the_way_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_writable_dir(&dir, 0o700).unwrap();
        assert!(dir.is_dir());
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is removed"
        );
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = ensure_writable_dir(&file.join("sub"), 0o700).unwrap_err();
        assert!(err.to_string().contains("sub"), "{err}");
    }

    #[test]
    fn writes_with_exact_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"secret", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&path, b"new", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn refuses_unwritable_paths_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("missing/dir/x"), b"x", PUBLIC).unwrap_err();
        assert!(err.to_string().contains("missing/dir"), "{err}");
        let path = dir.path().join("cert.pem");
        write_atomic(&path, b"old", PUBLIC).unwrap();
        // A directory where the temp file would go makes staging fail; the old file stays.
        fs::create_dir(staged_path(&path)).unwrap();
        assert!(write_atomic(&path, b"new", PUBLIC).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
