//! The changes of the CA's material, each decided on one read of it and written as one
//! [`CaUpdate`] that only applies if nothing changed meanwhile: import a state directory
//! made before the CA kept its certificates in the store, prepare the next intermediate,
//! start and finish a root rotation.

use dtca_pki::authority::hierarchy::{self, Lifetimes};
use dtca_pki::authority::lineage::{CaCert, CaKind, hex_digest};
use dtca_pki::duration::timestamp;
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::token::RootDigest;
use time::OffsetDateTime;

use super::keys::{CaFiles, Passphrase, RootKeys};
use super::{CaState, LifecycleError, keys, status};
use crate::store::{
    AuditEntry, AuditKind, CaCertRecord, CaUpdate, RotationChange, Store, StoreError,
};

/// Who made a change, in the audit log.
pub const ACTOR: &str = "ca";

fn record(
    kind: CaKind,
    der: Vec<u8>,
    key_pem: Option<String>,
    now: OffsetDateTime,
) -> CaCertRecord {
    CaCertRecord {
        id: hex_digest(&der),
        kind,
        der,
        key_pem,
        added_at: now,
        retired_at: None,
    }
}

fn update(expected: u64, now: OffsetDateTime) -> CaUpdate {
    CaUpdate {
        expected_generation: expected,
        add: Vec::new(),
        remove: Vec::new(),
        retire: Vec::new(),
        active_root: None,
        rotation: RotationChange::Keep,
        audit: Vec::new(),
        at: now,
    }
}

fn audit(actor: &str, subject: &str, detail: String, now: OffsetDateTime) -> AuditEntry {
    AuditEntry::new(
        now,
        AuditKind::Ca,
        actor.to_string(),
        subject.to_string(),
        detail,
    )
}

/// Copies the root and intermediate of a state directory into an empty store (a CA made
/// before the store kept them, or `init` itself). Returns whether it did: false when the
/// store already holds them (another replica was first).
///
/// # Errors
/// [`LifecycleError`] when the files cannot be read or the store fails.
pub async fn import(
    store: &dyn Store,
    files: CaFiles,
    now: OffsetDateTime,
) -> Result<bool, LifecycleError> {
    let material = store.ca_material().await?;
    if !material.certs.is_empty() {
        return Ok(false);
    }
    let root = record(CaKind::Root, files.root_der, None, now);
    let root_id = root.id.clone();
    let inter = record(
        CaKind::Intermediate,
        files.intermediate_der,
        Some(files.intermediate_key_pem.to_string()),
        now,
    );
    let mut u = update(material.generation, now);
    u.audit.push(audit(
        ACTOR,
        &root_id,
        format!("root {root_id} and intermediate {} stored", inter.id),
        now,
    ));
    u.add = vec![root, inter];
    u.active_root = Some(root_id);
    match store.update_ca(u).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What a successor was made for.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Its subject.
    pub subject: String,
    /// When it starts signing.
    pub start: OffsetDateTime,
    /// When it ends.
    pub not_after: OffsetDateTime,
}

/// Makes the next intermediate of the active root (whose key is `root_key`), to start
/// when the one signing now hands over, unless one is prepared already. With `due_only`,
/// only once the schedule says it is time.
///
/// # Errors
/// [`LifecycleError`] when signing fails or the store refuses ([`StoreError::Conflict`] when
/// another replica changed the material meanwhile: read it again).
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    store: &dyn Store,
    state: &CaState,
    root_key: &PrivateKey,
    lifetimes: Lifetimes,
    passphrase: &Passphrase,
    due_only: bool,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Option<Prepared>, LifecycleError> {
    let plan = state.lineage().plan(now, lifetimes.intermediate);
    if plan.successor.is_some() || (due_only && !plan.prepare) {
        return Ok(None);
    }
    let root = state.active_root();
    let (der, key) = hierarchy::intermediate(
        state.cluster(),
        &root.der,
        root_key,
        root_key.key_type(),
        plan.successor_start,
        lifetimes.intermediate,
    )?;
    let cert = CaCert::new(CaKind::Intermediate, der.clone(), false)?;
    let sealed =
        keys::seal(&key, passphrase).map_err(|e| LifecycleError::Internal(e.to_string()))?;
    let prepared = Prepared {
        subject: cert.info.subject.clone(),
        start: cert.schedule().start,
        not_after: cert.info.not_after,
    };
    let mut u = update(state.generation(), now);
    u.audit.push(audit(
        actor,
        &cert.id(),
        format!(
            "intermediate {} prepared: signs from {} (the current one hands over then), ends {}",
            prepared.subject,
            timestamp(prepared.start),
            timestamp(prepared.not_after)
        ),
        now,
    ));
    u.add.push(record(
        CaKind::Intermediate,
        der,
        Some(sealed.to_string()),
        now,
    ));
    store.update_ca(u).await?;
    Ok(Some(prepared))
}

/// The refusal to start a rotation while one runs.
pub fn already_rotating(state: &CaState) -> LifecycleError {
    LifecycleError::RotationState(format!(
        "a root rotation is under way since {}: finish it first (ca-server ca rotate-root --finish)",
        state
            .lineage()
            .rotation_started()
            .map(timestamp)
            .unwrap_or_default()
    ))
}

/// A root rotation just started.
#[derive(Debug, Clone)]
pub struct Started {
    /// Digest of the new root (what new join tokens pin).
    pub new_root: RootDigest,
    /// Digest of the old one.
    pub old_root: RootDigest,
    /// When the new root ends.
    pub not_after: OffsetDateTime,
}

/// Starts a root rotation: a new root (its key written to the state directory first),
/// the new root cross-signed by the old one (whose key is `old_key`), and an intermediate
/// of the new root that signs from now on.
///
/// # Errors
/// [`LifecycleError::RotationState`] when one is under way already; signing, file or store
/// failures.
#[allow(clippy::too_many_arguments)]
pub async fn start_rotation(
    store: &dyn Store,
    state: &CaState,
    root_keys: &dyn RootKeys,
    old_key: &PrivateKey,
    key_type: KeyType,
    lifetimes: Lifetimes,
    passphrase: &Passphrase,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Started, LifecycleError> {
    if state.lineage().rotation_started().is_some() {
        return Err(already_rotating(state));
    }
    let old = state.active_root();
    let (root_der, root_key) = hierarchy::root(state.cluster(), key_type, now, lifetimes.root)?;
    let cross = hierarchy::cross_sign(&root_der, &old.der, old_key, now)?;
    let (inter_der, inter_key) = hierarchy::intermediate(
        state.cluster(),
        &root_der,
        &root_key,
        key_type,
        now,
        lifetimes.intermediate,
    )?;
    let new_root = CaCert::new(CaKind::Root, root_der.clone(), false)?;
    root_keys
        .keep(&new_root, &root_key, passphrase)
        .map_err(LifecycleError::Internal)?;
    let sealed =
        keys::seal(&inter_key, passphrase).map_err(|e| LifecycleError::Internal(e.to_string()))?;
    let mut u = update(state.generation(), now);
    u.audit.push(audit(
        actor,
        &new_root.id(),
        format!(
            "root rotation started: new root {} ({}), cross-signed by the old root {}",
            new_root.digest(),
            new_root.info.subject,
            old.digest()
        ),
        now,
    ));
    u.add = vec![
        record(CaKind::Root, root_der, None, now),
        record(CaKind::Cross, cross, None, now),
        record(
            CaKind::Intermediate,
            inter_der,
            Some(sealed.to_string()),
            now,
        ),
    ];
    u.active_root = Some(new_root.id());
    u.rotation = RotationChange::Start(now);
    store.update_ca(u).await?;
    Ok(Started {
        new_root: new_root.digest(),
        old_root: old.digest(),
        not_after: new_root.info.not_after,
    })
}

/// Ends the root rotation under way: the old root and the cross certificate leave the
/// trust bundle, and certificates that chain only to the old root are refused from now
/// on. Refuses while a node or operator still holds such a certificate, unless `force`.
/// Returns what it left behind (`role/name`).
///
/// # Errors
/// [`LifecycleError::RotationState`] when none is under way, [`LifecycleError::RotationLagging`]
/// naming who lags, store failures.
pub async fn finish_rotation(
    store: &dyn Store,
    state: &CaState,
    force: bool,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Vec<String>, LifecycleError> {
    if state.lineage().rotation_started().is_none() {
        return Err(LifecycleError::RotationState(
            "no root rotation is under way (start one with ca-server ca rotate-root)".into(),
        ));
    }
    let lagging: Vec<String> = status::members(store, state, now)
        .await?
        .into_iter()
        .filter(|m| m.lagging)
        .map(|m| format!("{}/{}", m.role, m.name))
        .collect();
    if !lagging.is_empty() && !force {
        return Err(LifecycleError::RotationLagging(lagging));
    }
    let active = state.active_root().id();
    let mut u = update(state.generation(), now);
    u.retire = state
        .lineage()
        .certs()
        .iter()
        .filter(|c| !c.retired)
        .filter(|c| (c.kind == CaKind::Root && c.id() != active) || c.kind == CaKind::Cross)
        .map(CaCert::id)
        .collect();
    u.rotation = RotationChange::End;
    let mut detail = format!(
        "root rotation finished: only root {} is trusted",
        state.active_root().digest()
    );
    if !lagging.is_empty() {
        detail.push_str(&format!(
            "; forced, leaving behind {} (their certificates chain only to the old root and are refused now)",
            lagging.join(", ")
        ));
    }
    u.audit.push(audit(actor, &active, detail, now));
    store.update_ca(u).await?;
    Ok(lagging)
}
