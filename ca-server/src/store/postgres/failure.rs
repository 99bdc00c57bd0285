//! How a write fails inside a batch: refused or failed on its own (its savepoint is rolled
//! back and the batch goes on), to be retried in a later transaction (a deadlock), or
//! with the whole transaction (the connection broke). Shared by the writer and the
//! issuance statement.

use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;
use crate::store::columns;

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

pub(super) fn time_of(secs: i64) -> Result<OffsetDateTime, StoreError> {
    columns::time(secs).map_err(StoreError::Corrupt)
}

pub(super) fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(describe(&e))
}

/// A failed statement: a full disk and a damaged database are reasons of their own;
/// anything else is an outage to retry.
pub(super) fn unavailable(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let text = format!("PostgreSQL: {}", describe(&e));
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL => StoreError::Full(text),
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            StoreError::Corrupt(text)
        }
        _ => StoreError::Unavailable(text),
    }
}

/// The error with its causes: tokio-postgres puts the useful part ("connection refused",
/// the server's message) in the source.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
