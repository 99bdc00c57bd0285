//! The writer thread: writes queue up, and whatever has queued is applied as one
//! transaction (each write in its own savepoint, its statements in [`super::apply`]) with
//! one commit; and the checkpoint thread that moves committed pages from the WAL into the
//! database file.

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::mpsc;

use super::apply::apply;
use super::unavailable;
use crate::store::StoreError;
use crate::store::queue::{Job, Outcome};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Shortest time between two WAL checkpoints.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

pub(super) fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wrote: std::sync::mpsc::SyncSender<()>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let results = apply_batch(&mut conn, &mut batch, &mut rx);
        let committed = results.iter().any(Result::is_ok);
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        if committed {
            // Full (a checkpoint is already due) or closed: either way nothing to do.
            let _ = wrote.try_send(());
        }
    }
}

/// Applies `batch` in one transaction, each write in its own savepoint, and keeps taking
/// the writes that queue up meanwhile (up to [`MAX_BATCH`]) before the one commit: under
/// load the fsync is shared by more certificates, and nothing ever waits on purpose. The
/// results are only good if the commit succeeds, so a failed commit fails them all.
fn apply_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    rx: &mut mpsc::Receiver<Job>,
) -> Vec<Result<Outcome, StoreError>> {
    let fail_all = |n: usize, e: StoreError| (0..n).map(|_| Err(e.clone())).collect();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch.len(), unavailable(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    loop {
        for job in &batch[results.len()..] {
            let result = match tx.savepoint() {
                Ok(mut sp) => match apply(&mut sp, &job.write) {
                    Ok(outcome) => sp.commit().map(|()| outcome).map_err(unavailable),
                    Err(e) => {
                        // Dropping the savepoint rolls this write back; the batch goes on.
                        drop(sp);
                        Err(e)
                    }
                },
                Err(e) => Err(unavailable(e)),
            };
            results.push(result);
        }
        if !drain(batch, rx) {
            break;
        }
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(batch.len(), unavailable(e)),
    }
}

/// Moves writes that are already queued into `batch`, up to [`MAX_BATCH`]; whether any were.
fn drain(batch: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>) -> bool {
    let before = batch.len();
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch.len() > before
}

/// Copies committed pages from the WAL into the database file, off the commit path.
///
/// With SQLite's automatic checkpoints, the commit that crosses the WAL size limit copies
/// a thousand pages and syncs the database file before it returns, and every issuance
/// waiting behind it waits that long too (the p99 of issuance latency). Here the writer
/// only signals that it committed; this thread runs a passive checkpoint (which never
/// blocks the writer or readers) and then pauses, so under load it checkpoints a few
/// times a second, and an idle server does nothing at all.
pub(super) fn checkpoint_loop(conn: Connection, wrote: std::sync::mpsc::Receiver<()>) {
    while wrote.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit");
        }
        std::thread::sleep(CHECKPOINT_PAUSE);
    }
}
