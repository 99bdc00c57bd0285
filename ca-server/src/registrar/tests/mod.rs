//! The registrar against a real authority and an embedded store in a temp dir: a
//! fixture with an admin caller, and the tests of each part beside it.

mod access;
mod authorize;
mod fleet;
mod identity;
mod issue;
mod revoke;
mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dtca_pki::authority::hierarchy;
use dtca_pki::csr;
use dtca_pki::identity::{Identity, Role};
use dtca_pki::key::{KeyType, PrivateKey};
use time::OffsetDateTime;

use super::*;
use crate::store::TokenRecord;
use crate::store::sqlite::SqliteStore;

struct Fixture {
    registrar: Registrar,
    admin: Caller,
    /// The CA's certificates and key, for another replica over the same store.
    hierarchy: hierarchy::Hierarchy,
    _dir: tempfile::TempDir,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn fixture_with(rules: Rules) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let h = hierarchy::create("prod", KeyType::P256, now()).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let registrar = Registrar::new(authority(&h), store, rules, Arc::new(Metrics::default()));
    let (issued, _) = registrar
        .issue_local(
            Identity::new("prod", Role::Admin, "admin").unwrap(),
            vec![],
            vec![],
            Duration::from_secs(3600),
            now(),
        )
        .await
        .unwrap();
    let admin = registrar
        .authenticate(Some(&[issued.leaf_der]), now(), false)
        .await
        .unwrap();
    Fixture {
        registrar,
        admin,
        hierarchy: h,
        _dir: dir,
    }
}

fn authority(h: &hierarchy::Hierarchy) -> Authority {
    let key = PrivateKey::from_pem(&h.intermediate_key.to_pem()).unwrap();
    Authority::new("prod", h.root_der.clone(), h.intermediate_der.clone(), key).unwrap()
}

async fn fixture() -> Fixture {
    fixture_with(Rules::default()).await
}

fn spec(role: Role) -> TokenSpec {
    TokenSpec {
        role,
        ttl: None,
        uses: None,
        name: None,
        allow_dns: vec![],
        allow_ip: vec![],
        cert_ttl: None,
        replace: false,
        access: None,
    }
}

fn node_csr(key: &PrivateKey, dns: &[&str], ips: &[&str]) -> Vec<u8> {
    let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
    let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
    csr::build(key, "n", &dns, &ips).unwrap()
}

impl Fixture {
    async fn token(&self, spec: TokenSpec) -> (String, TokenRecord) {
        self.registrar
            .create_token(&self.admin, spec, now())
            .await
            .unwrap()
    }

    async fn enroll_node(&self, token: &str, key: &PrivateKey) -> Result<Issued, Refusal> {
        self.registrar
            .enroll(
                token,
                &node_csr(key, &["web-1.example.com"], &["10.0.0.5"]),
                "web-1",
                now(),
            )
            .await
    }

    /// Another server over the same store, as a second replica on PostgreSQL is.
    fn replica(&self) -> Registrar {
        Registrar::new(
            authority(&self.hierarchy),
            self.registrar.store().clone(),
            Rules::default(),
            Arc::new(Metrics::default()),
        )
    }

    /// A node enrolled with a fresh token and key, as it calls.
    async fn node(&self) -> Caller {
        let (token, _) = self.token(spec(Role::Node)).await;
        let issued = self
            .enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
            .await
            .unwrap();
        self.caller_for(&issued).await
    }

    async fn caller_for(&self, issued: &Issued) -> Caller {
        self.registrar
            .authenticate(Some(std::slice::from_ref(&issued.leaf_der)), now(), false)
            .await
            .unwrap()
    }
}
