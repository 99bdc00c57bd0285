//! `certs-example/` still parses and chains (regenerate with certs-example/generate.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dtca_common::bundle::{Bundle, Layout};
use dtca_pki::chain::{self, Usage};
use dtca_pki::identity::Role;
use dtca_pki::inspect::{self, CertInfo};
use dtca_pki::key::PrivateKey;
use dtca_tests::openssl;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("certs-example")
}

fn read(rel: &str) -> Vec<Vec<u8>> {
    inspect::certs_from_pem(&std::fs::read_to_string(dir().join(rel)).unwrap()).unwrap()
}

#[test]
fn every_sample_bundle_parses_and_chains_to_the_sample_root() {
    let root = read("ca/ca.pem").remove(0);
    let intermediate = read("ca/intermediate.pem").remove(0);
    chain::verify_ca_signature(&intermediate, &root).unwrap();
    for (sub, role, usages) in [
        ("node", Role::Node, vec![Usage::Server]),
        ("operator", Role::Operator, vec![Usage::Client]),
        ("ca/admin", Role::Admin, vec![Usage::Client]),
    ] {
        let bundle =
            Bundle::load(&dir().join(sub), Layout::CLIENT).unwrap_or_else(|e| panic!("{sub}: {e}"));
        assert_eq!(
            bundle.roots,
            vec![root.clone()],
            "{sub}/ca.pem is not the sample root"
        );
        assert_eq!(
            bundle.chain[1], intermediate,
            "{sub}/cert.pem does not carry the intermediate"
        );
        let leaf = CertInfo::from_der(&bundle.chain[0]).unwrap();
        assert_eq!(leaf.identity.as_ref().unwrap().role, role);
        assert_eq!(leaf.identity.as_ref().unwrap().cluster, "example");
        // Sample leaves expire; check them at a moment inside their validity.
        let at = leaf.not_before + time::Duration::minutes(10);
        for usage in usages {
            chain::verify(&bundle.chain[0], &bundle.chain[1..], &root, at, usage)
                .unwrap_or_else(|e| panic!("{sub}: {e}"));
        }
        if role == Role::Node {
            assert!(
                chain::verify(
                    &bundle.chain[0],
                    &bundle.chain[1..],
                    &root,
                    at,
                    Usage::Client
                )
                .is_err(),
                "the sample node certificate is a client certificate"
            );
        }
        let cert = dir().join(sub).join("cert.pem");
        let ok = openssl_verify_at(&dir().join("ca/ca.pem"), &cert, at.unix_timestamp());
        assert!(ok.contains("OK"), "{sub}: {ok}");
        assert!(openssl::serial(&cert).starts_with("serial="));
    }
}

#[test]
fn sample_ca_key_decrypts_with_the_documented_passphrase() {
    let text = std::fs::read_to_string(dir().join("ca/intermediate-key.pem")).unwrap();
    let key = PrivateKey::from_encrypted_pem(&text, b"example-passphrase").unwrap();
    let intermediate = CertInfo::from_der(&read("ca/intermediate.pem")[0]).unwrap();
    assert_eq!(key.public_key_der(), intermediate.public_key_der);
    assert!(PrivateKey::from_encrypted_pem(&text, b"wrong").is_err());
}

fn openssl_verify_at(ca: &Path, cert: &Path, at: i64) -> String {
    let out = std::process::Command::new("openssl")
        .args(["verify", "-attime", &at.to_string(), "-CAfile"])
        .arg(ca)
        .arg("-untrusted")
        .arg(cert)
        .arg(cert)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
