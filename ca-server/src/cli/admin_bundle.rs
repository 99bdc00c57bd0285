//! The admin bundle renews itself: every admin command, once connected, renews it when a
//! third of its life remains, or when the CA trusts a root the bundle does not know yet
//! or no longer trusts the root its certificate chains to (a root rotation), and says so.

use std::path::Path;

use dtca_common::bundle::{Bundle, Layout};
use dtca_pki::chain::{self, Usage};
use dtca_pki::csr;
use dtca_pki::key::PrivateKey;
use dtca_pki::profile::BACKDATE;
use dtca_proto::v1::{self, ca_client::CaClient};
use time::OffsetDateTime;
use tonic::transport::Channel;

/// Renewal comes when this fraction (1/n) of the certificate's life remains.
pub(super) const RENEW_SHARE: i32 = 3;

/// Why the bundle should be renewed now, if it should.
pub(super) fn why_renew(
    bundle: &Bundle,
    ca_roots: &[Vec<u8>],
    now: OffsetDateTime,
) -> Option<&'static str> {
    let leaf = bundle.leaf().ok()?;
    // Leaves start BACKDATE early (clock skew): their life counts from the moment after.
    let start = (leaf.not_before + BACKDATE).min(leaf.not_after);
    let life = leaf.not_after - start;
    if leaf.not_after - now <= life / RENEW_SHARE {
        return Some("a third of its life remains");
    }
    if ca_roots.iter().any(|r| !bundle.roots.contains(r)) {
        return Some("the CA trusts a new root");
    }
    let roots: Vec<&[u8]> = ca_roots.iter().map(Vec::as_slice).collect();
    let (first, rest) = bundle.chain.split_first()?;
    // Without the cross certificate: does it reach a root the CA trusts by its own chain?
    let own: Vec<Vec<u8>> = rest.iter().take(1).cloned().collect();
    if !ca_roots.is_empty() && chain::verify_any(first, &own, &roots, now, Usage::Client).is_err() {
        return Some("its certificate chains to a root the CA is retiring");
    }
    None
}

/// Renews the admin bundle in `dir` over `channel` when [`why_renew`] says so, and tells
/// the user on stderr. A failure is only reported: the command itself goes on.
pub(super) async fn refresh(dir: &Path, bundle: &Bundle, channel: Channel) {
    let mut client = CaClient::new(channel);
    let now = OffsetDateTime::now_utc();
    let roots = match client.trust_bundle(v1::TrustBundleRequest {}).await {
        Ok(answer) => answer.into_inner().roots_der,
        Err(_) => Vec::new(),
    };
    let Some(why) = why_renew(bundle, &roots, now) else {
        return;
    };
    match renew(&mut client, bundle).await {
        Ok(renewed) => match renewed.save(dir, Layout::CLIENT) {
            Ok(()) => {
                let until = renewed
                    .leaf()
                    .map(|l| dtca_pki::duration::timestamp(l.not_after))
                    .unwrap_or_default();
                eprintln!(
                    "renewed the admin bundle in {} ({why}); valid until {until}",
                    dir.display()
                );
            }
            Err(e) => eprintln!("warning: cannot write the renewed admin bundle: {e}"),
        },
        Err(e) => eprintln!("warning: the admin bundle should be renewed ({why}) but: {e}"),
    }
}

async fn renew(client: &mut CaClient<Channel>, bundle: &Bundle) -> Result<Bundle, String> {
    let leaf = bundle.leaf().map_err(|e| e.to_string())?;
    let name = leaf
        .identity
        .as_ref()
        .map(|i| i.name.clone())
        .ok_or("the admin certificate carries no identity")?;
    let key = PrivateKey::generate(bundle.key.key_type()).map_err(|e| e.to_string())?;
    let csr = csr::build(&key, &name, &[], &[]).map_err(|e| e.to_string())?;
    let issued = client
        .renew(v1::RenewRequest { csr_der: csr })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut chain = vec![issued.leaf_der.clone(), issued.intermediate_der];
    chain.extend(issued.chain_der);
    let roots = if issued.roots_der.is_empty() {
        bundle.roots.clone()
    } else {
        issued.roots_der
    };
    let trusted: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    chain::verify_any(
        &issued.leaf_der,
        &chain[1..],
        &trusted,
        OffsetDateTime::now_utc(),
        Usage::Client,
    )
    .map_err(|e| format!("the renewed certificate does not verify: {e}"))?;
    Ok(Bundle { roots, chain, key })
}

#[cfg(test)]
mod tests {
    use dtca_common::bundle::sample;
    use dtca_pki::Role;

    use super::*;

    #[test]
    fn an_admin_bundle_renews_when_a_third_of_its_life_remains_and_not_before() {
        let bundle = sample("prod", Role::Admin, "admin", &[]);
        let leaf = bundle.leaf().unwrap();
        let start = leaf.not_before + BACKDATE;
        let life = leaf.not_after - start;
        let roots = bundle.roots.clone();
        let before = leaf.not_after - life / 3 - time::Duration::seconds(1);
        assert_eq!(why_renew(&bundle, &roots, before), None);
        let at = leaf.not_after - life / 3;
        assert_eq!(
            why_renew(&bundle, &roots, at),
            Some("a third of its life remains")
        );
    }

    #[test]
    fn an_admin_bundle_renews_when_the_ca_trusts_a_root_it_does_not_know() {
        let bundle = sample("prod", Role::Admin, "admin", &[]);
        let other = sample("prod", Role::Admin, "admin", &[]);
        let now = OffsetDateTime::now_utc();
        let mut roots = bundle.roots.clone();
        roots.extend(other.roots.clone());
        assert_eq!(
            why_renew(&bundle, &roots, now),
            Some("the CA trusts a new root")
        );
        // After a rotation's end: the CA trusts only a root its certificate does not reach.
        assert_eq!(
            why_renew(&bundle, &other.roots, now),
            Some("the CA trusts a new root")
        );
        assert_eq!(why_renew(&bundle, &bundle.roots, now), None);
    }
}
