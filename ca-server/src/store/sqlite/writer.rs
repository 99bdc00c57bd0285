//! The writer thread: writes queue up, and whatever has queued is applied as one
//! transaction (each write in its own savepoint, its statements in [`super::apply`]) with
//! one commit. Before each batch it asks the store's [`Condition`] whether it may write at
//! all (not with a full disk or a damaged file); after each commit it lets the [`Wal`]
//! start over when it is due.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::mpsc;

use super::apply::apply;
use super::condition::Condition;
use super::db_error;
use super::wal::{Poke, Wal};
use crate::store::StoreError;
use crate::store::queue::{Job, Outcome};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 1024;

pub(super) fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wal: Arc<Wal>,
    condition: Arc<Condition>,
    pokes: SyncSender<Poke>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let results = match condition.check_space() {
            Ok(()) => apply_batch(&mut conn, &mut batch, &mut rx),
            Err(refused) => {
                // Nothing is begun: every write waiting now gets the same answer.
                drain(&mut batch, &mut rx);
                batch.iter().map(|_| Err(refused.clone())).collect()
            }
        };
        let committed = results.iter().any(Result::is_ok);
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            condition.note(e);
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        if committed {
            wal.after_commit(&conn);
        }
        // Full (a poke is already waiting) or closed: either way nothing to do.
        let _ = pokes.try_send(Poke::Wrote);
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
        Err(e) => return fail_all(batch.len(), db_error(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    loop {
        for job in &batch[results.len()..] {
            let result = match tx.savepoint() {
                Ok(mut sp) => match apply(&mut sp, &job.write) {
                    Ok(outcome) => sp.commit().map(|()| outcome).map_err(db_error),
                    Err(e) => {
                        // Dropping the savepoint rolls this write back; the batch goes on.
                        drop(sp);
                        Err(e)
                    }
                },
                Err(e) => Err(db_error(e)),
            };
            results.push(result);
        }
        if !drain(batch, rx) {
            break;
        }
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(batch.len(), db_error(e)),
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
