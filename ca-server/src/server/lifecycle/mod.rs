//! The loop in `serve` that keeps the CA's certificates current: it follows the store
//! (another replica, or `ca rotate-intermediate` on the root's host, changed them), makes
//! the next intermediate when the schedule says so and this host holds the root key,
//! tells agents (the hub's trust generation) whenever the trust state changes (an
//! intermediate switch, a root rotation's start or finish), and warns when the signing
//! intermediate nears its end without a successor.
//!
//! Every step reads the store first, so a restart (kill -9 included) simply carries on:
//! a prepared intermediate takes over at its start, a rotation stays under way.

use std::sync::Arc;
use std::time::Duration;

use dtca_pki::authority::lineage::Warning;
use time::OffsetDateTime;

use crate::channel::Event;
use crate::lifecycle::{CaState, Custody, LifecycleError, ops};
use crate::metrics::CaGauges;
use crate::registrar::{Refusal, Registrar};

/// How often the store is read for changes, by default.
pub const POLL: Duration = Duration::from_secs(2);
/// A warning is logged again after this long.
const WARN_EVERY: Duration = Duration::from_secs(600);

/// What the loop saw last.
#[derive(Debug, Default)]
struct Seen {
    trust_generation: u64,
    signing: Option<String>,
    rotation: Option<OffsetDateTime>,
    warned: Option<(Vec<String>, tokio::time::Instant)>,
}

/// Runs until the task is dropped. Does nothing for a registrar without custody.
pub async fn run(registrar: Arc<Registrar>) {
    let Some(custody) = registrar.custody().cloned() else {
        return;
    };
    let now = OffsetDateTime::now_utc();
    let ca = registrar.ca();
    let mut seen = Seen {
        trust_generation: ca.trust_generation(now),
        signing: ca.signing_id(now),
        rotation: ca.lineage().rotation_started(),
        warned: None,
    };
    registrar.hub().publish(Event::TrustChanged {
        generation: seen.trust_generation,
        renew_before: None,
    });
    loop {
        if let Err(e) = tick(&registrar, &custody, &mut seen).await {
            tracing::warn!(error = %e, "CA lifecycle: cannot follow the CA's certificates; trying again");
        }
        tokio::time::sleep(custody.poll).await;
    }
}

async fn tick(registrar: &Registrar, custody: &Custody, seen: &mut Seen) -> Result<(), Refusal> {
    let now = OffsetDateTime::now_utc();
    if registrar.store().ca_generation().await? != registrar.ca().generation() {
        registrar.reload().await?;
    }
    let ca = registrar.ca();
    let plan = ca.lineage().plan(now, custody.lifetimes.intermediate);
    if plan.prepare
        && let Some(key) = custody.root_key(ca.active_root())?
    {
        match ops::prepare(
            registrar.store().as_ref(),
            &ca,
            &key,
            custody.lifetimes,
            &custody.passphrase,
            true,
            ops::ACTOR,
            now,
        )
        .await
        {
            Ok(Some(p)) => tracing::info!(
                intermediate = %p.subject,
                start = %dtca_pki::duration::timestamp(p.start),
                not_after = %dtca_pki::duration::timestamp(p.not_after),
                "prepared the next intermediate"
            ),
            Ok(None) | Err(LifecycleError::Store(crate::store::StoreError::Conflict(_))) => {}
            Err(e) => return Err(e.into()),
        }
        registrar.reload().await?;
    }
    let ca = registrar.ca();
    publish(registrar, &ca, seen, now);
    warn(registrar, custody, &ca, seen, now);
    Ok(())
}

/// Tells agents when the trust state moved: a switch, a new or finished rotation.
fn publish(registrar: &Registrar, ca: &CaState, seen: &mut Seen, now: OffsetDateTime) {
    let generation = ca.trust_generation(now);
    if generation == seen.trust_generation {
        return;
    }
    let signing = ca.signing_id(now);
    if signing != seen.signing
        && let Ok(signer) = ca.signer(now)
    {
        tracing::info!(
            intermediate = %signer.intermediate().subject,
            not_after = %dtca_pki::duration::timestamp(signer.intermediate_not_after()),
            "intermediate switch: a new intermediate signs from now on"
        );
    }
    let rotation = ca.lineage().rotation_started();
    // Certificates issued before a rotation began chain to the old root only: at its
    // start, agents renew those now. Times are whole seconds, so one issued in the second
    // the rotation began counts as before it. At its end nobody renews: a certificate of
    // the old chain is refused from then on (it was left behind by --force), and one of
    // the new chain needs only the one-root bundle, which agents fetch without a renewal
    // (a second engine restart for nothing).
    let renew_before = match (seen.rotation, rotation) {
        (None, Some(started)) => {
            tracing::info!(root = %ca.active_root().digest(), "root rotation started");
            Some(started + time::Duration::seconds(1))
        }
        (Some(_), None) => {
            tracing::info!(root = %ca.active_root().digest(), "root rotation finished");
            None
        }
        _ => None,
    };
    registrar.hub().publish(Event::TrustChanged {
        generation,
        renew_before,
    });
    *seen = Seen {
        trust_generation: generation,
        signing,
        rotation,
        warned: seen.warned.take(),
    };
}

fn warn(
    registrar: &Registrar,
    custody: &Custody,
    ca: &CaState,
    seen: &mut Seen,
    now: OffsetDateTime,
) {
    let plan = ca.lineage().plan(now, custody.lifetimes.intermediate);
    let warnings: Vec<String> = plan.warnings.iter().map(Warning::to_string).collect();
    registrar.metrics().set_ca(CaGauges {
        warnings: warnings.len() as u64,
        intermediate_not_after: plan.signing.map(|s| s.not_after),
        next_switch: plan.successor.map(|s| s.start),
    });
    if let Ok(mut w) = custody.warnings.lock() {
        w.clone_from(&warnings);
    }
    let due = match &seen.warned {
        Some((said, at)) => *said != warnings || at.elapsed() >= WARN_EVERY,
        None => true,
    };
    if due && !warnings.is_empty() {
        for w in &warnings {
            tracing::warn!("CA lifecycle: {w}");
        }
    }
    if due {
        seen.warned = Some((warnings, tokio::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests;
