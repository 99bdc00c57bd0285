//! Reading the audit log (`ca-client audit [--follow] [--json]`): every file oldest first,
//! then, when following, what is appended, across rotations.
//!
//! A [`Follower`] holds one open file. When the current file's name no longer points at
//! the file it holds, the writer rotated: it reads the rest of its file (final now), finds
//! where that file went (`audit.log.N`, by inode) and goes on with the next newer one, so
//! no line is read twice or skipped, even across several rotations between two polls.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Entry, KEPT_FILES, file_path};
use dtca_common::fs::FileError;

use crate::error::ClientError;

/// How often `--follow` looks for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// `ca-client audit`: prints the log in `dir` oldest first, as text or as its JSON lines;
/// with `follow`, goes on printing what comes until interrupted (waiting for a log that
/// is not there yet).
///
/// # Errors
/// [`ClientError::NoAudit`] when there is no log and `follow` is off; a file of the log
/// that cannot be read.
pub(crate) async fn print(dir: &Path, follow: bool, json: bool) -> Result<(), ClientError> {
    use std::io::Write;
    let mut follower = Follower::new(dir);
    if !follow && !follower.exists() {
        return Err(ClientError::NoAudit {
            dir: dir.to_path_buf(),
        });
    }
    let unreadable = |e| FileError::new(&dir.join(super::FILE), "read", e);
    loop {
        let lines = follower.poll().map_err(unreadable)?;
        let mut stdout = std::io::stdout().lock();
        for line in &lines {
            let shown = if json { line.clone() } else { text(line) };
            // A closed pipe (`| head`) ends the command quietly.
            if writeln!(stdout, "{shown}").is_err() {
                return Ok(());
            }
        }
        if stdout.flush().is_err() || !follow {
            return Ok(());
        }
        drop(stdout);
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Reads the log's lines in order, from its oldest line on.
#[derive(Debug)]
pub(crate) struct Follower {
    dir: PathBuf,
    /// How many rotated files to look for (`audit.log.1` .. `audit.log.{kept - 1}`).
    kept_files: usize,
    current: Option<Open>,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
}

#[derive(Debug)]
struct Open {
    file: File,
    id: (u64, u64),
}

impl Follower {
    /// A follower of the log in `dir`, before its oldest line.
    pub(crate) fn new(dir: &Path) -> Follower {
        Follower::with_kept(dir, KEPT_FILES)
    }

    pub(crate) fn with_kept(dir: &Path, kept_files: usize) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            kept_files: kept_files.max(1),
            current: None,
            partial: Vec::new(),
        }
    }

    /// Whether the log has any file at all.
    pub(crate) fn exists(&self) -> bool {
        (0..self.kept_files).any(|i| file_path(&self.dir, i).exists())
    }

    /// Every complete line written since the last call (without their newlines).
    ///
    /// # Errors
    /// A file of the log cannot be read.
    pub(crate) fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        if self.current.is_none() {
            match self.oldest()? {
                Some(open) => self.current = Some(open),
                None => return Ok(lines),
            }
        }
        loop {
            self.read_rest(&mut lines)?;
            let Some(id) = self.current.as_ref().map(|open| open.id) else {
                return Ok(lines);
            };
            if id_of(&file_path(&self.dir, 0))? == Some(id) {
                return Ok(lines);
            }
            // Rotated away: what it holds is final. Read the rest, then the next newer.
            self.read_rest(&mut lines)?;
            self.finish_partial(&mut lines);
            let next = self.newer_than(id)?;
            self.current = next;
            if self.current.is_none() {
                return Ok(lines);
            }
        }
    }

    fn read_rest(&mut self, lines: &mut Vec<String>) -> io::Result<()> {
        let Some(open) = self.current.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        open.file.read_to_end(&mut buf)?;
        self.partial.extend_from_slice(&buf);
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            lines.extend(
                String::from_utf8_lossy(&complete)
                    .lines()
                    .map(str::to_string),
            );
        }
        Ok(())
    }

    /// A rotated file that ends without a newline still ends its line.
    fn finish_partial(&mut self, lines: &mut Vec<String>) {
        if !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
        }
    }

    /// The oldest file of the log, opened.
    fn oldest(&self) -> io::Result<Option<Open>> {
        for index in (0..self.kept_files).rev() {
            if let Some(open) = open(&file_path(&self.dir, index))? {
                return Ok(Some(open));
            }
        }
        Ok(None)
    }

    /// The file after the one with `id`: the next lower index than where `id` is now, or,
    /// when `id` left the log, its oldest file (all that is left is newer).
    fn newer_than(&self, id: (u64, u64)) -> io::Result<Option<Open>> {
        let mut found = None;
        for index in 1..self.kept_files {
            if id_of(&file_path(&self.dir, index))? == Some(id) {
                found = Some(index);
                break;
            }
        }
        match found {
            Some(index) => {
                for newer in (0..index).rev() {
                    if let Some(open) = open(&file_path(&self.dir, newer))? {
                        return Ok(Some(open));
                    }
                }
                Ok(None)
            }
            None => self.oldest(),
        }
    }
}

fn open(path: &Path) -> io::Result<Option<Open>> {
    match File::open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok(Some(Open {
                file,
                id: (meta.dev(), meta.ino()),
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn id_of(path: &Path) -> io::Result<Option<(u64, u64)>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some((meta.dev(), meta.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A line as `ca-client audit` prints it without `--json`: time, identity, serial,
/// access, method and path, status, bytes in and out, duration; a refusal's message; a
/// line that is not a record, as it is.
pub(crate) fn text(line: &str) -> String {
    let Ok(e) = serde_json::from_str::<Entry>(line) else {
        return line.to_string();
    };
    if let Some(n) = e.dropped {
        return format!("{}  {n} record(s) dropped: the disk fell behind", e.time);
    }
    let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "{}  {}  {}  {}  {} {}  {}  in {} out {}  {} ms",
        e.time,
        field(&e.identity),
        field(&e.serial),
        field(&e.access),
        field(&e.method),
        field(&e.path),
        e.status.map_or_else(|| "-".into(), |s| s.to_string()),
        e.bytes_in.map_or_else(|| "-".into(), bytes),
        e.bytes_out.map_or_else(|| "-".into(), bytes),
        e.duration_ms
            .map_or_else(|| "-".into(), |d| format!("{d:.1}")),
    );
    if let Some(refused) = &e.refused {
        out.push_str("  refused: ");
        out.push_str(refused);
    }
    out
}

fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.1} MiB", f / KIB / KIB)
    } else {
        format!("{:.2} GiB", f / KIB / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::super::{AuditLog, Limits};
    use super::*;

    fn serials(lines: &[String]) -> Vec<u64> {
        lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["bytes_out"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn an_absent_log_reads_as_nothing_until_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Follower::new(dir.path());
        assert!(!follower.exists());
        assert!(follower.poll().unwrap().is_empty());
        let log = AuditLog::open(dir.path()).unwrap();
        log.record(record(1));
        log.flush();
        assert!(follower.exists());
        assert_eq!(serials(&follower.poll().unwrap()), [1]);
    }

    #[test]
    fn follows_across_rotation_without_losing_or_repeating_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_file_bytes: 2048,
            kept_files: 4,
        };
        let log = AuditLog::open_with(dir.path(), limits, 1024).unwrap();
        let mut follower = Follower::with_kept(dir.path(), limits.kept_files);
        let mut seen = Vec::new();
        let mut n = 0;
        // Polls between every few records, and once after several rotations at a time
        // (each file holds about eight records, so 30 at once rotate three times).
        for burst in [1, 3, 8, 9, 30, 2, 17, 5] {
            for _ in 0..burst {
                log.record(record(n));
                n += 1;
            }
            log.flush();
            seen.extend(serials(&follower.poll().unwrap()));
        }
        assert!(dir.path().join("audit.log.3").exists(), "the log rotated");
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_follower_that_fell_behind_the_oldest_file_goes_on_from_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_file_bytes: 2048,
            kept_files: 2,
        };
        let log = AuditLog::open_with(dir.path(), limits, 1024).unwrap();
        let mut follower = Follower::with_kept(dir.path(), limits.kept_files);
        log.record(record(0));
        log.flush();
        assert_eq!(serials(&follower.poll().unwrap()), [0]);
        for n in 1..100 {
            log.record(record(n));
        }
        log.flush();
        let seen = serials(&follower.poll().unwrap());
        // The file it held was rotated out of the log: it reads that file to its end (the
        // open file outlives its name), then what is left, in order, each line once, up to
        // the newest. What was rotated out unread in between is gone.
        assert_eq!(seen.first(), Some(&1));
        assert_eq!(seen.last(), Some(&99));
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
        assert!(
            seen.len() < 99,
            "some files were rotated out unread: {seen:?}"
        );
    }

    #[test]
    fn a_line_being_written_is_returned_once_complete() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut file = std::fs::File::create(&path).unwrap();
        let line = record(7).to_line();
        let (head, tail) = line.split_at(20);
        file.write_all(head.as_bytes()).unwrap();
        let mut follower = Follower::new(dir.path());
        assert!(follower.poll().unwrap().is_empty());
        file.write_all(tail.as_bytes()).unwrap();
        assert_eq!(serials(&follower.poll().unwrap()), [7]);
    }

    #[test]
    fn text_shows_every_field_and_refusals() {
        let mut r = record(2048);
        r.status = 403;
        r.refused = Some("read-only access: POST /build runs code".into());
        let shown = text(r.to_line().trim_end());
        assert_eq!(
            shown,
            "2026-12-07T12:00:00.5Z  dtca://prod/operator/ann  5F3A01  read-only  GET /v1.47/containers/c2048/json  403  in 0 B out 2.0 KiB  1.2 ms  refused: read-only access: POST /build runs code"
        );
        assert_eq!(text("not json"), "not json");
        assert_eq!(
            text("{\"time\":\"t\",\"dropped\":3}"),
            "t  3 record(s) dropped: the disk fell behind"
        );
    }
}
