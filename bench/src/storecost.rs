//! What each part of a stored certificate costs in WAL bytes, measured with the store's
//! own code (`SqliteStore`, in process): certificates written one at a time (each its own
//! transaction, as a quiet CA writes them) and 64 at a time (group commit under load),
//! into a store already holding 20,000, first as this build stores them (the row, its
//! serial, name and expiry indexes, the identity's and its DNS name's claims, two audit
//! rows, the token's use), then with one part left out at a time, and with serials in random order as builds before this one made
//! them. The difference to the first row is what that part costs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ca_server::store::sqlite::SqliteStore;
use ca_server::store::{
    AuditEntry, AuditKind, CertRecord, CertSummary, Issuance, Store, TokenRecord,
};
use dtca_pki::identity::{Identity, Role};
use dtca_pki::policy::SanPolicy;
use dtca_pki::serial::Serial;
use ring::rand::SystemRandom;
use time::OffsetDateTime;

/// Certificates in the store before measuring.
const PREFILL: usize = 20_000;
/// Certificates written one at a time.
const ONE_AT_A_TIME: usize = 1_000;
/// Writers at once for the batched row, and certificates each.
const BATCH: (usize, usize) = (64, 50);

/// One way of storing a certificate, and what it cost.
#[derive(Debug, Clone)]
pub struct Cost {
    /// What differs from the store as it is.
    pub what: &'static str,
    /// WAL bytes per certificate, one at a time.
    pub one: f64,
    /// WAL bytes per certificate, 64 writers at once.
    pub batched: f64,
    /// Certificates per transaction in the batched run.
    pub per_commit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    AsStored,
    NoNameIndex,
    NoExpiryIndex,
    NoAudit,
    NoToken,
    RandomSerials,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::AsStored,
        Variant::NoNameIndex,
        Variant::NoExpiryIndex,
        Variant::NoAudit,
        Variant::NoToken,
        Variant::RandomSerials,
    ];

    fn what(self) -> &'static str {
        match self {
            Variant::AsStored => "as this build stores it",
            Variant::NoNameIndex => "without the name index",
            Variant::NoExpiryIndex => "without the expiry index",
            Variant::NoAudit => "without its two audit rows",
            Variant::NoToken => "without a token use (a renewal)",
            Variant::RandomSerials => "serials in random order (before this build)",
        }
    }
}

/// Measures every variant in `work`, with `der` as the certificate bytes stored.
///
/// # Errors
/// When a store cannot be opened or refuses a write.
pub async fn measure(work: &Path, der: &[u8]) -> anyhow::Result<Vec<Cost>> {
    let mut out = Vec::new();
    for (i, variant) in Variant::ALL.into_iter().enumerate() {
        let db = work.join(format!("cost-{i}")).join("store.db");
        std::fs::create_dir_all(db.parent().context("no parent")?)?;
        out.push(one_variant(&db, variant, der).await?);
        if let Some(dir) = db.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(out)
}

async fn one_variant(db: &Path, variant: Variant, der: &[u8]) -> anyhow::Result<Cost> {
    // The schema first, then the part left out.
    drop(SqliteStore::open(db)?);
    let drop_index = match variant {
        Variant::NoNameIndex => Some("certificates_name"),
        Variant::NoExpiryIndex => Some("certificates_expiry"),
        _ => None,
    };
    if let Some(index) = drop_index {
        let conn = rusqlite::Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(&format!("DROP INDEX {index}"))?;
    }
    let store = Arc::new(SqliteStore::open(db)?);
    let now = OffsetDateTime::now_utc();
    store
        .insert_token(
            TokenRecord {
                id: "bench".into(),
                secret_hash: vec![0; 32],
                role: Role::Node,
                name: None,
                max_uses: u32::MAX,
                uses: 0,
                created_at: now,
                expires_at: now + time::Duration::days(1),
                revoked_at: None,
                policy: SanPolicy::default(),
                cert_ttl: None,
                replace: false,
                access: dtca_pki::access::Access::Full,
            },
            AuditEntry::new(now, AuditKind::TokenCreate, "bench", "bench", ""),
        )
        .await?;
    let der: Arc<[u8]> = der.into();
    let mut n = 0;
    write(&store, variant, &der, &mut n, PREFILL / BATCH.0, BATCH.0).await?;
    let stats = || store.stats().unwrap_or_default();
    let before = stats();
    write(&store, variant, &der, &mut n, ONE_AT_A_TIME, 1).await?;
    let after_one = stats();
    write(&store, variant, &der, &mut n, BATCH.1, BATCH.0).await?;
    let after_batch = stats();
    store.close().await;
    let per = |bytes: u64, certs: usize| bytes as f64 / certs.max(1) as f64;
    let batched_certs = BATCH.0 * BATCH.1;
    Ok(Cost {
        what: variant.what(),
        one: per(
            after_one.wal_written_bytes - before.wal_written_bytes,
            ONE_AT_A_TIME,
        ),
        batched: per(
            after_batch.wal_written_bytes - after_one.wal_written_bytes,
            batched_certs,
        ),
        per_commit: batched_certs as f64 / (after_batch.commits - after_one.commits).max(1) as f64,
    })
}

/// `rounds` rounds of `writers` concurrent issuances.
async fn write(
    store: &Arc<SqliteStore>,
    variant: Variant,
    der: &Arc<[u8]>,
    n: &mut u64,
    rounds: usize,
    writers: usize,
) -> anyhow::Result<()> {
    for _ in 0..rounds {
        let mut tasks = Vec::with_capacity(writers);
        for _ in 0..writers {
            *n += 1;
            let issuance = issuance(variant, *n, der)?;
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.record_issuance(issuance).await
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    Ok(())
}

/// Certificate `n`: a node enrolling under a name no one had (names arrive in no order).
fn issuance(variant: Variant, n: u64, der: &[u8]) -> anyhow::Result<Issuance> {
    let rng = SystemRandom::new();
    let now = OffsetDateTime::now_utc();
    let serial = match variant {
        Variant::RandomSerials => Serial::random(&rng),
        _ => Serial::in_issue_order(&rng, now),
    }
    .map_err(|e| anyhow::anyhow!("serial: {e}"))?;
    let name = format!("node-{:016x}", splitmix(n));
    let identity = Identity::new("bench", Role::Node, &name)?;
    let dns = format!("{name}.bench.internal");
    let not_after = now + time::Duration::days(30);
    let audit = match variant {
        Variant::NoAudit => vec![],
        _ => vec![
            AuditEntry::new(
                now,
                AuditKind::TokenUse,
                "token:bench",
                "bench",
                format!("{} {serial}", identity.uri()),
            ),
            AuditEntry::new(
                now,
                AuditKind::Issue,
                "token:bench",
                serial.to_string(),
                format!("{} until {not_after} names [{dns}]", identity.uri()),
            ),
        ],
    };
    let token = (variant != Variant::NoToken).then(|| "bench".to_string());
    Ok(Issuance {
        cert: CertRecord {
            summary: CertSummary {
                serial,
                identity,
                dns_names: vec![dns],
                ip_addresses: vec![],
                not_before: now - time::Duration::minutes(5),
                not_after,
                revoked_at: None,
                renewed_by: None,
                access: dtca_pki::access::Access::Full,
            },
            der: der.to_vec(),
            token_id: token.clone(),
            renewed_from: None,
            policy: SanPolicy::default(),
            issued_at: now,
            revocation_reason: None,
            first_used_at: None,
        },
        token_id: token,
        renewal_of: None,
        replace: false,
        audit,
        at: now,
    })
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
