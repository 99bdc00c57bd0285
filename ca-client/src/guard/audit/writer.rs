//! Writing the audit log: requests hand records over without waiting on the disk; a thread
//! of its own appends them in batches (what gathered while it wrote the last one, or
//! [`BATCH`] after it), flushes each batch, and rotates.
//!
//! The queue between the two is bounded ([`QUEUE`] records). When the disk stalls long
//! enough to fill it, new records are dropped and counted rather than holding requests up,
//! and the count is written as a line of its own once the disk moves again. A file that
//! cannot be written is reported once in the log and opened again for the next record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use dtca_common::fs::PRIVATE;

use super::{AuditRecord, Entry, Limits, QUEUE, file_path};

/// How long the writer lets records gather after writing a batch. At [`QUEUE`] records per
/// batch this bounds the rate written without drops far above what the guard serves.
const BATCH: Duration = Duration::from_millis(25);

/// The audit log's sending end: cheap to clone, one per connection if need be. The writing
/// thread ends when the last clone is dropped, after writing what was queued.
#[derive(Debug, Clone)]
pub(crate) struct AuditLog {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

enum Message {
    Record(Box<AuditRecord>),
    /// Answered once everything sent before it is on disk (flushed, not fsynced).
    Flush(SyncSender<()>),
}

impl AuditLog {
    /// Starts the log in `dir` (the node's credential directory) at the default limits.
    ///
    /// # Errors
    /// The directory or the current file cannot be opened for appending.
    pub(crate) fn open(dir: &Path) -> io::Result<AuditLog> {
        AuditLog::open_with(dir, Limits::default(), QUEUE)
    }

    /// Starts the log with other limits and queue length (tests).
    ///
    /// # Errors
    /// As [`AuditLog::open`].
    pub(crate) fn open_with(dir: &Path, limits: Limits, queue: usize) -> io::Result<AuditLog> {
        let mut files = Rotating::open(dir, limits)?;
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("dtca-audit".into())
            .spawn(move || files.run(&rx, &counter))?;
        Ok(AuditLog { tx, dropped })
    }

    /// Queues a record; never waits. When the queue is full the record is counted as
    /// dropped instead.
    pub(crate) fn record(&self, record: AuditRecord) {
        match self.tx.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!("audit writer stopped; a record was lost");
            }
        }
    }

    /// Waits until every record queued before the call is written out. For shutdown and
    /// tests; never on a request's path.
    pub(crate) fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Message::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Records dropped so far and not yet written as a `dropped` line.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The current file and its rotation.
struct Rotating {
    dir: PathBuf,
    limits: Limits,
    /// `None` after a failure: opened again for the next line.
    file: Option<BufWriter<File>>,
    /// Bytes in the current file, written or buffered.
    size: u64,
    /// Whether the last failure was logged already (one warning per outage).
    failing: bool,
}

impl Rotating {
    fn open(dir: &Path, limits: Limits) -> io::Result<Rotating> {
        fs::create_dir_all(dir)?;
        let mut rotating = Rotating {
            dir: dir.to_path_buf(),
            limits,
            file: None,
            size: 0,
            failing: false,
        };
        rotating.reopen()?;
        Ok(rotating)
    }

    fn run(&mut self, rx: &Receiver<Message>, dropped: &AtomicU64) {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Message::Record(record) => {
                        let lost = dropped.swap(0, Ordering::Relaxed);
                        if lost > 0 {
                            self.write(&Entry::dropped(record.time, lost).to_line());
                        }
                        self.write(&record.to_line());
                    }
                    Message::Flush(ack) => {
                        self.flush();
                        let _ = ack.send(());
                    }
                }
                next = rx.try_recv().ok();
            }
            self.flush();
            // Records that come meanwhile queue up without waking this thread (a sender
            // wakes it only when it waits in `recv`): one write per batch, not per request.
            std::thread::sleep(BATCH);
        }
        self.flush();
    }

    fn write(&mut self, line: &str) {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.limits.max_file_bytes {
            let rotated = self.rotate();
            self.outcome("rotate", rotated);
        }
        if self.file.is_none() {
            let reopened = self.reopen();
            self.outcome("open", reopened);
        }
        if let Some(file) = self.file.as_mut() {
            match file.write_all(line.as_bytes()) {
                Ok(()) => {
                    self.size += len;
                    self.failing = false;
                }
                Err(e) => {
                    self.file = None;
                    self.outcome("write", Err(e));
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Some(file) = self.file.as_mut()
            && let Err(e) = file.flush()
        {
            self.file = None;
            self.outcome("write", Err(e));
        }
    }

    /// `audit.log.3` -> `.4`, ..., `audit.log` -> `.1`; the oldest is overwritten.
    fn rotate(&mut self) -> io::Result<()> {
        self.flush();
        self.file = None;
        for index in (1..self.limits.kept_files.max(1)).rev() {
            let from = file_path(&self.dir, index - 1);
            match fs::rename(&from, file_path(&self.dir, index)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.limits.kept_files <= 1 {
            fs::remove_file(file_path(&self.dir, 0))?;
        }
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        let path = file_path(&self.dir, 0);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE)
            .open(&path)?;
        self.size = file.metadata()?.len();
        self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    fn outcome(&mut self, action: &str, result: io::Result<()>) {
        match result {
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(dir = %self.dir.display(), "cannot {action} the audit log: {e}");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_are_appended_in_order_to_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for n in 0..100 {
            log.record(record(n));
        }
        log.flush();
        let got = lines(&dir.path().join("audit.log"));
        assert_eq!(got.len(), 100);
        for (n, v) in got.iter().enumerate() {
            assert_eq!(v["bytes_out"], n as u64);
        }
        let mode = fs::metadata(dir.path().join("audit.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rotation_keeps_the_files_within_their_bound_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_file_bytes: 4096,
            kept_files: 3,
        };
        let log = AuditLog::open_with(dir.path(), limits, 64).unwrap();
        let total = 500;
        for n in 0..total {
            log.record(record(n));
            if n % 32 == 0 {
                log.flush();
            }
        }
        log.flush();
        assert!(!dir.path().join("audit.log.3").exists());
        let mut seen = Vec::new();
        for index in (0..3).rev() {
            let path = file_path(dir.path(), index);
            let size = fs::metadata(&path).unwrap().len();
            assert!(
                size <= limits.max_file_bytes,
                "{} is {size} bytes",
                path.display()
            );
            seen.extend(
                lines(&path)
                    .into_iter()
                    .map(|v| v["bytes_out"].as_u64().unwrap()),
            );
        }
        // What is kept is the newest records, whole, in order, ending at the last one.
        assert!(seen.len() < total as usize);
        assert_eq!(seen.last(), Some(&(total - 1)));
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn a_stalled_disk_drops_and_counts_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with(dir.path(), Limits::default(), 1).unwrap();
        // The writer stalls, as on a disk that does not answer: it cannot hand over this
        // flush's answer until the test reads it.
        let (ack, stalled) = mpsc::sync_channel(0);
        log.tx.send(Message::Flush(ack)).unwrap();
        for n in 0..100 {
            log.record(record(n));
        }
        // At most one record fits in the queue; the rest were counted, not waited for.
        assert!(log.dropped() >= 99, "dropped {}", log.dropped());
        stalled.recv().unwrap();
        log.flush();
        log.record(record(100));
        log.flush();
        let got = lines(&dir.path().join("audit.log"));
        let written = got.iter().filter(|v| v.get("dropped").is_none()).count() as u64;
        let reported: u64 = got.iter().filter_map(|v| v["dropped"].as_u64()).sum();
        assert_eq!(written + reported, 101);
        assert_eq!(got.last().unwrap()["bytes_out"], 100);
        assert!(got[got.len() - 2]["dropped"].as_u64().unwrap() >= 99);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        assert!(AuditLog::open(&file).is_err());
    }
}
