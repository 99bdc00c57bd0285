//! The admin side of the CA's lifecycle: `ca status`, `ca rotate-intermediate` and
//! `ca rotate-root [--finish [--force]]` as the running server does them. The changes
//! themselves are in `crate::lifecycle::ops`; this registrar's view is read again right
//! after, and the lifecycle driver tells agents within its poll.

use dtca_pki::identity::Role;
use dtca_pki::key::KeyType;
use time::OffsetDateTime;

use super::{Caller, Refusal, Registrar, require};
use crate::lifecycle::CaState;
use crate::lifecycle::ops::{self, Prepared, Started};
use crate::lifecycle::status::{self, Member};

/// What `ca status` shows, besides the certificates in [`CaState`].
#[derive(Debug)]
pub struct CaReport {
    /// The certificates.
    pub state: std::sync::Arc<CaState>,
    /// Every identity's current certificate (during a root rotation: who lags).
    pub members: Vec<Member>,
    /// What an operator must act on.
    pub warnings: Vec<String>,
    /// Intermediate lifetime, for the plan.
    pub intermediate_lifetime: std::time::Duration,
}

impl CaReport {
    /// The report of `state` with `members` (during a root rotation), and the warnings of
    /// its plan at `now` for intermediates of `intermediate_lifetime`.
    pub fn of(
        state: std::sync::Arc<CaState>,
        members: Vec<Member>,
        intermediate_lifetime: std::time::Duration,
        now: OffsetDateTime,
    ) -> CaReport {
        let warnings = state
            .lineage()
            .plan(now, intermediate_lifetime)
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect();
        CaReport {
            state,
            members,
            warnings,
            intermediate_lifetime,
        }
    }
}

impl Registrar {
    /// Reads the CA's certificates from the store again and installs them (nothing for
    /// a registrar without custody: it has no passphrase to open the keys with).
    ///
    /// # Errors
    /// [`Refusal`] when the store cannot be read or its material does not fit.
    pub async fn reload(&self) -> Result<(), Refusal> {
        let Some(custody) = &self.custody else {
            return Ok(());
        };
        let material = self.store.ca_material().await?;
        let state = CaState::load(
            &self.cluster(),
            &material,
            &custody.passphrase,
            OffsetDateTime::now_utc(),
        )?;
        self.install(state);
        Ok(())
    }

    /// The CA's certificates and, during a root rotation, where everyone stands.
    ///
    /// # Errors
    /// [`Refusal::RoleNotAllowed`] for non-admins; store failures.
    pub async fn ca_report(
        &self,
        caller: &Caller,
        now: OffsetDateTime,
    ) -> Result<CaReport, Refusal> {
        require(caller, &[Role::Admin], "see the CA's status")?;
        self.lifecycle_report(now).await
    }

    /// What [`Registrar::ca_report`] answers, for the server's own read-only views (the
    /// web page): nothing in it is secret.
    ///
    /// # Errors
    /// Store failures.
    pub async fn lifecycle_report(&self, now: OffsetDateTime) -> Result<CaReport, Refusal> {
        let state = self.ca();
        // Who stands where matters only during a root rotation; reading every current
        // certificate and report for nothing cost the web page most of its time.
        let members = if state.lineage().rotation_started().is_some() {
            status::members(self.store.as_ref(), &state, now).await?
        } else {
            Vec::new()
        };
        let lifetime = self.custody.as_ref().map_or_else(
            || dtca_pki::authority::hierarchy::Lifetimes::default().intermediate,
            |c| c.lifetimes.intermediate,
        );
        Ok(CaReport::of(state, members, lifetime, now))
    }

    /// Prepares the next intermediate now, unless one is.
    ///
    /// # Errors
    /// [`Refusal::NoRootKey`] when this host does not hold the active root's key.
    pub async fn rotate_intermediate(
        &self,
        caller: &Caller,
        now: OffsetDateTime,
    ) -> Result<Option<Prepared>, Refusal> {
        require(caller, &[Role::Admin], "rotate the intermediate")?;
        let custody = self.custody.as_ref().ok_or(Refusal::NoRootKey)?;
        self.reload().await?;
        let state = self.ca();
        let key = custody
            .root_key(state.active_root())?
            .ok_or(Refusal::NoRootKey)?;
        let actor = caller.identity.uri();
        let prepared = ops::prepare(
            self.store.as_ref(),
            &state,
            &key,
            custody.lifetimes,
            &custody.passphrase,
            false,
            &actor,
            now,
        )
        .await?;
        self.reload().await?;
        Ok(prepared)
    }

    /// Starts a root rotation with a new root of `key_type` (the old root's when `None`).
    ///
    /// # Errors
    /// [`Refusal::NoRootKey`], [`Refusal::RotationState`] when one is under way.
    pub async fn start_root_rotation(
        &self,
        caller: &Caller,
        key_type: Option<KeyType>,
        now: OffsetDateTime,
    ) -> Result<Started, Refusal> {
        require(caller, &[Role::Admin], "rotate the root")?;
        let custody = self.custody.as_ref().ok_or(Refusal::NoRootKey)?;
        self.reload().await?;
        let state = self.ca();
        if state.lineage().rotation_started().is_none() {
            let key = custody
                .root_key(state.active_root())?
                .ok_or(Refusal::NoRootKey)?;
            let started = ops::start_rotation(
                self.store.as_ref(),
                &state,
                custody.root_keys.as_ref(),
                &key,
                key_type.unwrap_or(key.key_type()),
                custody.lifetimes,
                &custody.passphrase,
                &caller.identity.uri(),
                now,
            )
            .await?;
            self.reload().await?;
            return Ok(started);
        }
        Err(ops::already_rotating(&state).into())
    }

    /// Finishes the root rotation under way; returns who was left behind (`force`).
    ///
    /// # Errors
    /// [`Refusal::RotationState`], [`Refusal::RotationLagging`].
    pub async fn finish_root_rotation(
        &self,
        caller: &Caller,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, Refusal> {
        require(caller, &[Role::Admin], "finish a root rotation")?;
        if self.custody.is_some() {
            self.reload().await?;
        }
        let state = self.ca();
        let left = ops::finish_rotation(
            self.store.as_ref(),
            &state,
            force,
            &caller.identity.uri(),
            now,
        )
        .await?;
        if self.custody.is_some() {
            self.reload().await?;
        }
        Ok(left)
    }
}
