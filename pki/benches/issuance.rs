//! The CA's pure core on one core, no I/O: what one enrollment costs before any network or
//! storage. Run with `cargo bench -p dtca-pki --bench issuance` (scripts/bench.sh does, and
//! BENCHMARKS.md reads the results from target/criterion/pki/).
//!
//! - `pki/csr_verify`: `VerifiedCsr::from_der`: parse, P-256 signature check, names.
//! - `pki/issue_leaf`: `Authority::issue`: template, rcgen build, P-256 signature, then the
//!   leaf parsed again and every field checked.
//! - `pki/verify_and_issue`: both, the core of one enrollment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench's fixtures either work or the bench is wrong.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dtca_pki::authority::{Authority, LeafTemplate, hierarchy};
use dtca_pki::csr::{self, VerifiedCsr};
use dtca_pki::identity::{Identity, Role};
use dtca_pki::key::{KeyType, PrivateKey};
use time::OffsetDateTime;

fn authority(now: OffsetDateTime) -> Authority {
    let h = hierarchy::create("bench", KeyType::P256, now).expect("hierarchy");
    let key = PrivateKey::from_pkcs8_der(&h.intermediate_key.pkcs8_der()).expect("key");
    Authority::new("bench", h.root_der, h.intermediate_der, key).expect("authority")
}

fn csr_der(i: usize) -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::P256).expect("key");
    let name = format!("node-{i}");
    csr::build(&key, &name, &[format!("{name}.bench.internal")], &[]).expect("csr")
}

fn template(csr: VerifiedCsr, i: usize) -> LeafTemplate {
    LeafTemplate {
        identity: Identity::new("bench", Role::Node, &format!("node-{i}")).expect("identity"),
        public_key_der: csr.public_key_der,
        dns_names: csr.dns_names,
        ip_addresses: csr.ip_addresses,
        access: dtca_pki::access::Access::Full,
        lifetime: Duration::from_secs(30 * 86_400),
    }
}

fn issuance(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let authority = authority(now);
    let csrs: Vec<Vec<u8>> = (0..64).map(csr_der).collect();
    let mut group = c.benchmark_group("pki");

    let mut i = 0;
    group.bench_function("csr_verify", |b| {
        b.iter(|| {
            i += 1;
            black_box(VerifiedCsr::from_der(black_box(&csrs[i % csrs.len()])).expect("valid"))
        });
    });

    let templates: Vec<LeafTemplate> = csrs
        .iter()
        .enumerate()
        .map(|(i, der)| template(VerifiedCsr::from_der(der).expect("valid"), i))
        .collect();
    let mut i = 0;
    group.bench_function("issue_leaf", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                authority
                    .issue(black_box(&templates[i % templates.len()]), now)
                    .expect("issued"),
            )
        });
    });

    let mut i = 0;
    group.bench_function("verify_and_issue", |b| {
        b.iter(|| {
            i += 1;
            let csr = VerifiedCsr::from_der(&csrs[i % csrs.len()]).expect("valid");
            black_box(authority.issue(&template(csr, i), now).expect("issued"))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = issuance
}
criterion_main!(benches);
