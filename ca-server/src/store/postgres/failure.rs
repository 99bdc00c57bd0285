//! How a write fails inside a batch: refused or failed on its own (its savepoint is rolled
//! back and the batch goes on), to be retried in a later transaction (a deadlock), or
//! with the whole transaction (the connection broke). Shared by the writer and the
//! issuance statement.

use tokio_postgres::error::SqlState;

use super::{describe, unavailable};
use crate::store::StoreError;

/// Why one write in a batch did not apply.
pub(super) enum WriteFail {
    /// A refusal or failure to report.
    Store(StoreError),
    /// A deadlock or serialization failure: apply it again in a later transaction.
    Retry(String),
}

impl From<StoreError> for WriteFail {
    fn from(e: StoreError) -> Self {
        WriteFail::Store(e)
    }
}

impl From<tokio_postgres::Error> for WriteFail {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::LOCK_NOT_AVAILABLE =>
            {
                WriteFail::Retry(describe(&e))
            }
            _ => WriteFail::Store(unavailable(e)),
        }
    }
}

/// A batch that failed as a whole; `begun` tells whether anything reached the database.
pub(super) struct BatchFail {
    pub(super) begun: bool,
    pub(super) error: StoreError,
}

/// The connection failed inside the transaction: nothing of the batch holds.
pub(super) fn broken(e: tokio_postgres::Error) -> BatchFail {
    BatchFail {
        begun: true,
        error: unavailable(e),
    }
}
