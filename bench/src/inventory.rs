//! Inventory at scale: a store holding 1,000,000 certificates with a realistic history,
//! written through the store API (the same code path as the server: one group-committed
//! transaction per batch, an audit entry per certificate, renewals marking what they
//! supersede).
//!
//! The fleet: `total / chain` nodes, each with `chain` certificates of 30 days renewed
//! every 18 days (60 % of their life), so all but the newest of each node are superseded.
//! The newest: 98 % of nodes are healthy (9 to 30 days left, as renewal at 50-70 % of life
//! leaves them), 1 % are behind (0 to 7 days left: what `--expiring-within 7d` must find),
//! 1 % are dead (expired up to 60 days ago).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ca_server::store::sqlite::SqliteStore;
use ca_server::store::{AuditEntry, AuditKind, CertRecord, CertSummary, Issuance, Store};
use dtca_pki::identity::{Identity, Role};
use dtca_pki::policy::SanPolicy;
use dtca_pki::serial::Serial;
use ring::rand::SystemRandom;
use time::OffsetDateTime;

const DAY: i64 = 86_400;

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Filled {
    /// Certificates written.
    pub certs: u64,
    /// Nodes they belong to.
    pub nodes: u64,
    /// Current certificates expiring within 7 days (what the list must show).
    pub expiring_7d: u64,
    /// How long writing took.
    pub took: Duration,
}

/// Writes `total` certificates of cluster `cluster` into the store at `db` (the server
/// must not be running).
///
/// # Errors
/// When the store refuses a write.
pub async fn fill(
    db: PathBuf,
    cluster: &str,
    total: u64,
    chain: u64,
    der: Vec<u8>,
) -> anyhow::Result<Filled> {
    let store = Arc::new(SqliteStore::open(&db).context("open the store")?);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let nodes = total / chain;
    let der: Arc<[u8]> = der.into();
    let cluster: Arc<str> = cluster.into();
    let expiring = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    const WORKERS: u64 = 2048;
    let tasks: Vec<_> = (0..WORKERS.min(nodes))
        .map(|w| {
            let store = store.clone();
            let der = der.clone();
            let cluster = cluster.clone();
            let expiring = expiring.clone();
            let written = written.clone();
            tokio::spawn(async move {
                let rng = SystemRandom::new();
                let mut node = w;
                while node < nodes {
                    let last_not_after = newest_not_after(node, now);
                    if last_not_after > now && last_not_after <= now + 7 * DAY {
                        expiring.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut previous: Option<Serial> = None;
                    for k in 0..chain {
                        let back = i64::try_from(chain - 1 - k).unwrap_or(0) * 18 * DAY;
                        let issuance =
                            record(&cluster, node, last_not_after - back, &der, &previous, &rng)?;
                        let serial = issuance.cert.summary.serial.clone();
                        store.record_issuance(issuance).await?;
                        written.fetch_add(1, Ordering::Relaxed);
                        previous = Some(serial);
                    }
                    node += WORKERS;
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    // Dropping the store closes its connections on their own threads, and the last close
    // checkpoints whatever the WAL still holds: hundreds of megabytes here, which would
    // compete with the measurements that follow. Checkpoint now and wait for it.
    drop(store);
    tokio::task::spawn_blocking(move || checkpoint(&db)).await??;
    Ok(Filled {
        certs: written.load(Ordering::Relaxed),
        nodes,
        expiring_7d: expiring.load(Ordering::Relaxed),
        took: started.elapsed(),
    })
}

/// Copies the whole WAL into the database file and empties it, waiting for the store's
/// closing connections if they hold locks.
fn checkpoint(db: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(120))?;
    for _ in 0..600 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the inventory store's WAL could not be checkpointed")
}

/// When node `node`'s newest certificate expires (see the module docs).
fn newest_not_after(node: u64, now: i64) -> i64 {
    let r = mix(node);
    let bucket = r % 100;
    let frac = ((r >> 8) % 1_000_000) as f64 / 1_000_000.0;
    let secs = |days: f64| (days * DAY as f64) as i64;
    match bucket {
        0 => now + 60 + secs(frac * 6.9),
        1 => now - secs(frac * 60.0) - 1,
        _ => now + secs(9.0 + frac * 21.0),
    }
}

fn record(
    cluster: &str,
    node: u64,
    not_after: i64,
    der: &[u8],
    renewal_of: &Option<Serial>,
    rng: &SystemRandom,
) -> anyhow::Result<Issuance> {
    let name = format!("fleet-{node:06}");
    let identity = Identity::new(cluster, Role::Node, &name)?;
    let not_before = OffsetDateTime::from_unix_timestamp(not_after - 30 * DAY)?;
    let not_after = OffsetDateTime::from_unix_timestamp(not_after)?;
    let issued_at = not_before + time::Duration::minutes(5);
    // As the CA makes them: the second of issue, then random bits.
    let serial =
        Serial::in_issue_order(rng, issued_at).map_err(|e| anyhow::anyhow!("serial: {e}"))?;
    let dns = format!("{name}.fleet.internal");
    let ip = std::net::IpAddr::from([10, (node >> 16) as u8, (node >> 8) as u8, node as u8]);
    let audit = AuditEntry::new(
        issued_at,
        if renewal_of.is_some() {
            AuditKind::Renew
        } else {
            AuditKind::Issue
        },
        identity.uri(),
        serial.to_string(),
        format!("{} until {not_after} names [{dns} {ip}]", identity.uri()),
    );
    Ok(Issuance {
        cert: CertRecord {
            summary: CertSummary {
                serial,
                identity,
                dns_names: vec![dns],
                ip_addresses: vec![ip],
                not_before,
                not_after,
                revoked_at: None,
                renewed_by: None,
                access: dtca_pki::access::Access::Full,
            },
            der: der.to_vec(),
            token_id: None,
            renewed_from: renewal_of.clone(),
            policy: SanPolicy::default(),
            issued_at,
            revocation_reason: None,
            first_used_at: None,
        },
        token_id: None,
        renewal_of: renewal_of.clone(),
        replace: false,
        audit: vec![audit],
        at: issued_at,
    })
}

/// splitmix64: a fixed, well-spread pseudo-random number per node.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Size of a SQLite database with its WAL.
pub fn db_bytes(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(db) + size(&db.with_extension("db-wal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_in_a_hundred_is_behind_and_one_is_dead() {
        let now = 1_800_000_000;
        let n = 100_000;
        let behind = (0..n)
            .filter(|i| {
                let t = newest_not_after(*i, now);
                t > now && t <= now + 7 * DAY
            })
            .count();
        let dead = (0..n).filter(|i| newest_not_after(*i, now) <= now).count();
        assert!((800..1200).contains(&behind), "{behind}");
        assert!((800..1200).contains(&dead), "{dead}");
        assert!((0..n).all(|i| newest_not_after(i, now) <= now + 30 * DAY));
    }
}
