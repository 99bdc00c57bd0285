//! What a credential directory holds, judged against an explicit token: an enrollment
//! to keep using, or a stale one (another CA's, expired, revoked, unreadable) that the
//! token replaces with a fresh enrollment.

use std::path::Path;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::token::JoinToken;
use time::OffsetDateTime;

use crate::ca;
use crate::state::ClientState;

/// The enrollment found in a credential directory.
#[derive(Debug)]
pub enum Local {
    /// Nothing enrolled there.
    Empty,
    /// This CA's, unexpired, and not revoked as far as the CA was asked.
    Usable(Box<(ClientState, Bundle)>),
    /// One an explicit token replaces; what it is, for the user.
    Stale(String),
}

/// Judges the enrollment in `out`. With a `token`, an enrollment under another root is
/// stale, and the CA (at `server`, else the one enrolled with) is asked whether the
/// certificate was revoked; an unreachable CA leaves the enrollment usable (the renewal
/// that follows says what is wrong). Without one, nothing is asked online.
pub async fn judge(out: &Path, token: Option<&JoinToken>, server: &str) -> Local {
    let state_file = ClientState::path(out);
    if !state_file.exists() && !out.join("cert.pem").exists() {
        return Local::Empty;
    }
    let loaded = ClientState::load(out).and_then(|state| {
        Bundle::load(out, Layout::CLIENT)
            .map_err(Into::into)
            .map(|b| (state, b))
    });
    let (state, bundle) = match loaded {
        Ok(pair) => pair,
        Err(e) => return Local::Stale(format!("an unreadable enrollment ({e})")),
    };
    let leaf = match bundle.leaf() {
        Ok(leaf) => leaf,
        Err(e) => return Local::Stale(format!("an unreadable certificate ({e})")),
    };
    let who = leaf
        .identity
        .as_ref()
        .map_or_else(|| state.identity.clone(), |i| i.uri());
    if let Some(token) = token
        && !bundle.roots.iter().any(|r| token.root.matches(r))
    {
        return Local::Stale(format!(
            "an enrollment with another CA ({who}, cluster {:?}, CA {})",
            state.cluster, state.server
        ));
    }
    let now = OffsetDateTime::now_utc();
    if leaf.not_after <= now {
        return Local::Stale(format!(
            "an expired certificate ({who}, serial {}, expired {})",
            leaf.serial,
            duration::timestamp(leaf.not_after)
        ));
    }
    if token.is_some() {
        let at = if server.is_empty() {
            state.server.as_str()
        } else {
            server
        };
        let asked = match ServerAddr::parse(at) {
            Ok(addr) => ca::is_revoked(&addr, &bundle).await,
            Err(e) => Err(e.into()),
        };
        match asked {
            Ok(true) => {
                return Local::Stale(format!(
                    "a revoked certificate ({who}, serial {})",
                    leaf.serial
                ));
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not ask the CA whether the current certificate is revoked");
            }
        }
    }
    Local::Usable(Box::new((state, bundle)))
}
