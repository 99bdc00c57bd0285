//! `ca-server store migrate` (copy the embedded store of a state dir into PostgreSQL)
//! and `ca-server store backup` (an online copy of the embedded store).

use dtca_common::Reason;
use dtca_common::config::Problems;

use super::serve::{state_error, store_error};
use super::settings::{self, FileConfig};
use super::{BackupArgs, CliError, MigrateArgs};
use crate::state::{StateDir, StateError};
use crate::store::postgres::{ImportError, PostgresStore, redact};
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::backup::{self, BackupError};

pub(super) fn backup(args: BackupArgs, file: &FileConfig) -> Result<(), CliError> {
    let dir = StateDir::new(settings::state_dir(&args.state, file));
    let Some(out) = args.out else {
        return Err(CliError::new(
            Reason::Usage,
            "--out is required: the new file to write the backup to",
        ));
    };
    let db = dir.store_path();
    let report = backup::backup(&db, &out).map_err(|e| {
        let reason = match &e {
            BackupError::Missing(_) => Reason::NotInitialized,
            BackupError::Damaged { .. } => Reason::StoreCorrupt,
            BackupError::Source { .. } => Reason::StoreUnavailable,
            BackupError::Exists(_) | BackupError::Destination { .. } => Reason::LocalIo,
        };
        CliError::new(reason, e.to_string())
    })?;
    println!(
        "Backed up {} to {} ({:.1} MiB, SQLite's integrity check: ok):",
        db.display(),
        out.display(),
        report.bytes as f64 / f64::from(1 << 20)
    );
    println!("  certificates    {:>9}", report.certificates);
    println!("  tokens          {:>9}", report.tokens);
    println!("  audit entries   {:>9}", report.audit);
    println!(
        "To restore: stop ca-server, then: rm -f {0}-wal {0}-shm && install -m 0600 {1} {0}",
        db.display(),
        out.display()
    );
    Ok(())
}

pub(super) async fn migrate(args: MigrateArgs, file: &FileConfig) -> Result<(), CliError> {
    let mut problems = Problems::default();
    let dir = StateDir::new(settings::state_dir(&args.state, file));
    let url = args.database.or_else(|| file.database.clone());
    let config = match &url {
        Some(url) => problems.check(PostgresStore::parse_url(url)),
        None => {
            problems.missing(
                "--database is required: the empty PostgreSQL database to copy into (postgres://USER:PASSWORD@HOST:PORT/DBNAME)",
            );
            None
        }
    };
    settings::finish(problems)?;
    let (Some(url), Some(config)) = (url, config) else {
        return Err(CliError::new(Reason::Config, "invalid configuration"));
    };
    if !dir.is_initialized() {
        return Err(state_error(StateError::NotInitialized(
            dir.path().to_path_buf(),
        )));
    }
    let path = dir.store_path();
    if !path.exists() {
        return Err(CliError::new(
            Reason::NotInitialized,
            format!(
                "{} holds no embedded store ({} is missing): nothing to copy",
                dir.path().display(),
                path.display()
            ),
        ));
    }
    let target_name = redact(&url);
    let source = SqliteStore::open(&path).map_err(store_error)?;
    let target = PostgresStore::connect(config)
        .await
        .map_err(|e| CliError::new(Reason::StoreUnavailable, format!("{target_name}: {e}")))?;
    let copied = target.import_from(&source).await.map_err(|e| {
        let reason = match &e {
            ImportError::NotEmpty(_) => Reason::AlreadyInitialized,
            ImportError::SourceChanged(_) | ImportError::Mismatch { .. } => Reason::Internal,
            ImportError::Source(_) | ImportError::Target(_) => Reason::StoreUnavailable,
        };
        CliError::new(reason, format!("{target_name}: {e}"))
    })?;
    println!("Copied {} into {target_name}:", path.display());
    println!("  tokens          {:>9}", copied.tokens);
    println!(
        "  certificates    {:>9}  ({} revoked, {} renewed)",
        copied.certificates, copied.revoked, copied.renewed
    );
    println!("  node engines    {:>9}", copied.engines);
    println!("  audit entries   {:>9}", copied.audit);
    println!(
        "Verified: counted again in PostgreSQL after the commit; every table matches the embedded store."
    );
    println!(
        "Next, on each replica: ca-server serve --state-dir {} --database <URL>",
        dir.path().display()
    );
    Ok(())
}
