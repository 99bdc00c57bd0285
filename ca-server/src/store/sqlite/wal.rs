//! Keeping the WAL small: checkpoints in the background, and a short hand-over to the
//! writer so the WAL starts over.
//!
//! SQLite appends every commit to the WAL; a checkpoint copies committed pages into the
//! database file, and only a writer that begins a transaction after a checkpoint reached
//! the WAL's end starts writing at its beginning again. A writer that never pauses never
//! sees that moment (the WAL grew to gigabytes under load), and a checkpoint inside the
//! commit path makes every issuance queued behind it wait (the p99 of issuance). So:
//!
//! - the maintenance thread runs passive checkpoints off the commit path (they never
//!   block the writer or readers): a few a second while the WAL is small, back to back
//!   once it passes [`REWIND_AT`];
//! - past [`REWIND_AT`], after a pass has copied nearly everything, it hands over: the
//!   writer, between two transactions, copies the little that is left (a few
//!   milliseconds) and its next transaction starts the WAL over. Past [`HARD_LIMIT`] the
//!   writer does this after every commit until it works, waiting for a pass if it must;
//! - `journal_size_limit` trims the file once it has started over, and after a second
//!   without writes (and when the store closes) a truncating checkpoint empties it.
//!
//! A reader in the middle of a long scan keeps the WAL from starting over until it ends
//! (its snapshot needs those frames); that is logged when the WAL passes the hard limit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use super::condition::Condition;
use super::db_error;
use crate::store::{StoreError, StoreStats};

/// One mebibyte.
const MIB: u64 = 1 << 20;
/// Past this much WAL, the writer is asked to start it over.
pub(super) const REWIND_AT: u64 = 16 * MIB;
/// Past this much WAL, the writer starts it over after every commit until it works.
pub(super) const HARD_LIMIT: u64 = 128 * MIB;
/// The WAL file is trimmed to this once it has started over (`journal_size_limit`).
pub(super) const SIZE_LIMIT: u64 = 64 * MIB;
/// Pause between checkpoints while the WAL is small: an idle CA does nothing, a loaded
/// one a few checkpoints a second.
const PAUSE: Duration = Duration::from_millis(250);
/// With this long without a commit, the WAL is emptied.
const IDLE: Duration = Duration::from_secs(1);
/// While the disk is full, how often to try to recover.
const FULL_RETRY: Duration = Duration::from_secs(1);
/// How long the maintenance thread leaves the writer to start the WAL over before it
/// checkpoints again.
const HAND_OVER: Duration = Duration::from_millis(100);
/// How long a truncating checkpoint waits for the writer and readers.
const TRUNCATE_WAIT: Duration = Duration::from_millis(200);
/// The database checkpoints work on.
const MAIN: Option<&str> = Some("main");
/// Bytes of a WAL frame besides its page.
const FRAME_HEADER: u64 = 24;

/// The WAL's state, shared by the writer, the maintenance thread and the store.
#[derive(Debug)]
pub(super) struct Wal {
    /// The `-wal` file, for its size.
    file: PathBuf,
    /// Bytes of one frame (page and header).
    frame_bytes: u64,
    /// Frames in the WAL after the last commit (SQLite's WAL hook).
    frames: AtomicU64,
    /// Frames appended since the store opened.
    written: AtomicU64,
    /// Times the WAL started over.
    resets: AtomicU64,
    /// Commits seen by the hook.
    commits: AtomicU64,
    /// The maintenance thread copied nearly everything: the writer should finish it.
    rewind_due: AtomicBool,
    /// One checkpoint at a time: SQLite refuses a second one rather than waiting.
    checkpoint: Mutex<()>,
    /// Warned about a WAL past the hard limit that would not start over.
    warned: AtomicBool,
}

impl Wal {
    pub(super) fn new(db: &std::path::Path, page_size: u64) -> Self {
        let mut file = db.as_os_str().to_owned();
        file.push("-wal");
        Wal {
            file: PathBuf::from(file),
            frame_bytes: page_size + FRAME_HEADER,
            frames: AtomicU64::new(0),
            written: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            rewind_due: AtomicBool::new(false),
            checkpoint: Mutex::new(()),
            warned: AtomicBool::new(false),
        }
    }

    /// Installs the hook that counts frames on the writer's connection (after
    /// `wal_autocheckpoint`, which replaces any hook).
    pub(super) fn watch(self: &Arc<Self>, conn: &mut Connection) -> Result<(), StoreError> {
        let wal = self.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            wal.committed(u64::try_from(pages).unwrap_or(0));
            Ok(())
        }))
        .map_err(db_error)
    }

    fn committed(&self, frames: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let before = self.frames.swap(frames, Ordering::Relaxed);
        let added = if frames >= before {
            frames - before
        } else {
            // Started over: everything in it now was written by this commit.
            self.resets.fetch_add(1, Ordering::Relaxed);
            self.warned.store(false, Ordering::Relaxed);
            frames
        };
        self.written.fetch_add(added, Ordering::Relaxed);
    }

    /// Bytes in the WAL after the last commit.
    fn bytes(&self) -> u64 {
        self.frames.load(Ordering::Relaxed) * self.frame_bytes
    }

    /// After a commit, on the writer's connection: starts the WAL over when the
    /// maintenance thread asked for it or the WAL passed the hard limit.
    pub(super) fn after_commit(&self, conn: &Connection) {
        let over = self.bytes() >= HARD_LIMIT;
        if !over && !self.rewind_due.load(Ordering::Acquire) {
            return;
        }
        // Past the hard limit, wait for a pass under way; otherwise the maintenance
        // thread hands over right after its pass, and the next commit comes soon.
        let lock = if over {
            self.checkpoint.lock().ok()
        } else {
            self.checkpoint.try_lock().ok()
        };
        let Some(_one) = lock else {
            return;
        };
        match conn.wal_checkpoint_v2(MAIN, CheckpointMode::PASSIVE) {
            // Everything copied: the next transaction starts the WAL over.
            Ok((log, done)) if log >= 0 && log == done => {
                self.rewind_due.store(false, Ordering::Release);
            }
            Ok((log, done)) => {
                if over && !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        wal_mib = self.bytes() / MIB,
                        frames_left = log - done,
                        "the WAL cannot start over: a long read (a backup, a large list) holds an old snapshot"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint on the writer failed"),
        }
    }

    /// What the WAL looks like, for metrics.
    pub(super) fn stats(&self, condition: &Condition) -> StoreStats {
        StoreStats {
            wal_bytes: std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0),
            wal_written_bytes: self.written.load(Ordering::Relaxed) * self.frame_bytes,
            wal_resets: self.resets.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            free_bytes: condition.free_bytes(),
        }
    }
}

/// What the maintenance thread is told.
#[derive(Debug)]
pub(super) enum Poke {
    /// The writer committed (or refused writes because the disk is full).
    Wrote,
    /// The store is closing: empty the WAL and answer.
    Close(SyncSender<()>),
}

/// The maintenance thread: checkpoints, the hand-over to the writer, an empty WAL when
/// idle, and recovery from a full disk.
pub(super) fn maintenance_loop(
    conn: Connection,
    pokes: Receiver<Poke>,
    wal: Arc<Wal>,
    condition: Arc<Condition>,
) {
    let _ = conn.busy_timeout(TRUNCATE_WAIT);
    // A connection that has read nothing yet has not opened the WAL, and its checkpoints
    // would do nothing at all.
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        tracing::error!(error = %e, "the store's maintenance thread cannot read the database");
    }
    // Whether commits happened since the WAL was last emptied.
    let mut dirty = false;
    loop {
        let wait = if condition.is_full() {
            Some(FULL_RETRY)
        } else if dirty {
            Some(IDLE)
        } else {
            None
        };
        let poke = match wait {
            Some(t) => match pokes.recv_timeout(t) {
                Ok(p) => Some(p),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match pokes.recv() {
                Ok(p) => Some(p),
                Err(_) => return,
            },
        };
        match poke {
            Some(Poke::Close(done)) => {
                truncate(&conn, &wal, true);
                let _ = done.send(());
                return;
            }
            _ if condition.is_full() => {
                condition.release_reserve();
                dirty = !truncate(&conn, &wal, false);
                condition.try_recover();
            }
            Some(Poke::Wrote) => {
                dirty = true;
                pass(&conn, &wal, &condition);
            }
            None => dirty = !truncate(&conn, &wal, false),
        }
    }
}

/// One passive checkpoint; past [`REWIND_AT`], hands the rest over to the writer.
fn pass(conn: &Connection, wal: &Wal, condition: &Condition) {
    let result = match wal.checkpoint.lock() {
        Ok(_one) => conn.wal_checkpoint_v2(MAIN, CheckpointMode::PASSIVE),
        Err(_) => return,
    };
    if let Err(e) = result {
        let e = db_error(e);
        condition.note(&e);
        tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit");
    }
    if wal.bytes() >= REWIND_AT {
        wal.rewind_due.store(true, Ordering::Release);
        // Leave the lock to the writer for its next commit.
        std::thread::sleep(HAND_OVER);
    } else {
        std::thread::sleep(PAUSE);
    }
}

/// Copies everything and empties the WAL file; whether it worked. `closing` waits for
/// the checkpoint lock; otherwise a checkpoint under way means trying later.
fn truncate(conn: &Connection, wal: &Wal, closing: bool) -> bool {
    let guard = if closing {
        wal.checkpoint.lock().ok()
    } else {
        wal.checkpoint.try_lock().ok()
    };
    let Some(_one) = guard else {
        return false;
    };
    match conn.wal_checkpoint_v2(MAIN, CheckpointMode::TRUNCATE) {
        Ok((0, 0)) => {
            if wal.frames.swap(0, Ordering::Relaxed) > 0 {
                wal.resets.fetch_add(1, Ordering::Relaxed);
            }
            true
        }
        Ok(_) => false,
        Err(e) => {
            // Busy (a writer or a reader in the way) or the disk: try again later.
            tracing::debug!(error = %e, "emptying the WAL did not work this time");
            false
        }
    }
}
