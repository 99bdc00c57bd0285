//! `ca-server ca status | rotate-intermediate | rotate-root [--finish [--force]]`.
//!
//! `status` and `rotate-root` reach the running server with the admin bundle, like the
//! other admin commands (a rotation's start needs the root key on the server's host; its
//! finish does not). `rotate-intermediate` works on the root's host directly on the
//! store, for deployments where no running server holds the root key.

use std::sync::Arc;

use dtca_common::Reason;
use dtca_common::config::Problems;
use dtca_proto::v1;
use time::OffsetDateTime;

use super::admin::{connect, print_json, role_name, status_error, timestamp};
use super::hint::Hint;
use super::offline::Offline;
use super::serve::{lifecycle_error, state_error};
use super::settings::{self, FileConfig};
use super::{CaCommand, CliError, RotateIntermediateArgs, RotateRootArgs};
use crate::lifecycle::{CaState, ops};
use crate::service::lifecycle;
use crate::state::StateDir;
use crate::store::Store;
use crate::store::postgres::{PostgresStore, redact};
use crate::store::sqlite::SqliteStore;

pub(super) async fn run(cmd: CaCommand, file: &FileConfig) -> Result<(), CliError> {
    match cmd {
        CaCommand::Status(admin) => {
            let status = match connect(&admin, file).await {
                Ok(mut client) => client
                    .ca_status(v1::CaStatusRequest {})
                    .await
                    .map_err(status_error)?
                    .into_inner(),
                Err(e) => Offline::instead_of(&admin, file, e)?.ca_status()?,
            };
            if admin.wants_json(file) {
                print_json(&lifecycle::status_json(&status));
            } else {
                print_status(&status);
            }
            Ok(())
        }
        CaCommand::RotateIntermediate(args) => rotate_intermediate(args, file).await,
        CaCommand::RotateRoot(args) => rotate_root(args, file).await,
    }
}

async fn rotate_root(args: RotateRootArgs, file: &FileConfig) -> Result<(), CliError> {
    let mut client = connect(&args.admin, file).await?;
    let answer = client
        .rotate_root(v1::RotateRootRequest {
            key_type: args.key_type.unwrap_or_default(),
            finish: args.finish,
            force: args.force,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if answer.finished {
        println!(
            "root rotation finished: only root {} is trusted now; {} left the trust bundle",
            answer.new_root_digest, answer.old_root_digest
        );
        if !answer.left_behind.is_empty() {
            println!(
                "left behind (their certificates chain only to the old root and are refused; they must re-enroll with a token): {}",
                answer.left_behind.join(", ")
            );
        }
    } else {
        println!(
            "root rotation started: new root {} (expires {}), cross-signed by the old root {}",
            answer.new_root_digest,
            timestamp(answer.not_after_unix),
            answer.old_root_digest
        );
        println!(
            "agents renew and install the two-root bundle now; operators run `ca-client login --renew`; new join tokens pin the new root"
        );
        let status = Hint::new(&["ca-server", "ca", "status"]).admin(&args.admin, file);
        let finish =
            Hint::new(&["ca-server", "ca", "rotate-root", "--finish"]).admin(&args.admin, file);
        println!("watch `{status}`, then run `{finish}` once nothing lags");
    }
    Ok(())
}

async fn rotate_intermediate(
    args: RotateIntermediateArgs,
    file: &FileConfig,
) -> Result<(), CliError> {
    let mut problems = Problems::default();
    let dir = StateDir::new(settings::state_dir(&args.state, file));
    let passphrase = settings::passphrase(&args.passphrase, file, &mut problems);
    let url = args.database.or_else(|| file.database.clone());
    let config = url
        .as_deref()
        .and_then(|u| problems.check(PostgresStore::parse_url(u)));
    settings::finish(problems)?;
    let Some(passphrase) = passphrase else {
        return Err(CliError::new(Reason::Config, "no passphrase"));
    };
    let (_, cluster) = dir.load_authority(&passphrase).map_err(state_error)?;
    let store: Arc<dyn Store> = match (url, config) {
        (Some(url), Some(config)) => {
            Arc::new(PostgresStore::connect(config).await.map_err(|e| {
                CliError::new(Reason::StoreUnavailable, format!("{}: {e}", redact(&url)))
            })?)
        }
        _ => Arc::new(
            SqliteStore::open(&dir.store_path())
                .map_err(|e| CliError::new(Reason::StoreUnavailable, e.to_string()))?,
        ),
    };
    let refusal = lifecycle_error;
    let now = OffsetDateTime::now_utc();
    let files = dir.ca_files().map_err(state_error)?;
    ops::import(store.as_ref(), files, now)
        .await
        .map_err(refusal)?;
    let material = store
        .ca_material()
        .await
        .map_err(|e| CliError::new(Reason::StoreUnavailable, e.to_string()))?;
    let state = CaState::load(&cluster.cluster, &material, &passphrase, now).map_err(refusal)?;
    let key = dir
        .root_key_of(state.active_root(), &passphrase)
        .map_err(state_error)?
        .ok_or_else(|| refusal(crate::lifecycle::LifecycleError::NoRootKey))?;
    let prepared = ops::prepare(
        store.as_ref(),
        &state,
        &key,
        cluster.lifetimes(),
        &passphrase,
        false,
        "ca-server ca rotate-intermediate",
        now,
    )
    .await
    .map_err(refusal)?;
    match prepared {
        Some(p) => println!(
            "prepared intermediate {}: signs from {} (running servers pick it up within seconds), expires {}",
            p.subject,
            dtca_pki::duration::timestamp(p.start),
            dtca_pki::duration::timestamp(p.not_after)
        ),
        None => {
            let next = state
                .lineage()
                .successor(now)
                .map(|s| dtca_pki::duration::timestamp(s.schedule().start))
                .unwrap_or_default();
            println!("a successor is prepared already (it takes over at {next}): nothing to do");
        }
    }
    Ok(())
}

fn print_status(s: &v1::CaStatusResponse) {
    println!("cluster {}", s.cluster);
    println!("roots:");
    for r in &s.roots {
        println!(
            "  {:<8} {}  {}  expires {}",
            r.state,
            r.digest,
            r.subject,
            timestamp(r.not_after_unix)
        );
    }
    println!("intermediates:");
    for i in &s.intermediates {
        println!(
            "  {:<8} {}  from {}  switch {}  expires {}  (leaves up to {})",
            i.state,
            i.subject,
            timestamp(i.start_unix),
            timestamp(i.switch_unix),
            timestamp(i.not_after_unix),
            dtca_pki::duration::human(i.leaf_cap_seconds)
        );
    }
    if s.next_switch_unix > 0 {
        println!("next switch: {}", timestamp(s.next_switch_unix));
    } else {
        println!("next switch: none prepared yet");
    }
    for w in &s.warnings {
        println!("WARNING: {w}");
    }
    if let Some(r) = &s.rotation {
        println!(
            "root rotation since {}: {} -> {}; {} lagging",
            timestamp(r.started_unix),
            r.old_root_digest,
            r.new_root_digest,
            r.lagging
        );
        println!(
            "  {:<9} {:<20} {:<10} {:<11} {:<20} SERIAL",
            "ROLE", "NAME", "CHAINS-TO", "TRUSTS-NEW", "LAST-HEARD"
        );
        for m in &r.members {
            let root = if m.root_digest == r.new_root_digest {
                "new"
            } else if m.root_digest == r.old_root_digest {
                "old"
            } else {
                "?"
            };
            println!(
                "  {:<9} {:<20} {:<10} {:<11} {:<20} {}{}",
                role_name(m.role),
                m.name,
                root,
                if m.trusts_new_root { "yes" } else { "no" },
                timestamp(m.last_seen_unix),
                m.serial,
                if m.lagging { "  (lagging)" } else { "" }
            );
        }
    }
}
