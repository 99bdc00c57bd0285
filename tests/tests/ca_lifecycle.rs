//! The CA lifecycle with the real binaries, in real time with short lifetimes: the CA
//! switches intermediates by itself with full-length leaves; a root rotation from
//! `ca rotate-root` to `--finish`, across a kill -9, with every chain it serves checked by
//! openssl, pyca's strict verifier and webpki against old-only, new-only and two-root
//! trust stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::bundle::{Bundle, Layout};
use dtca_pki::chain::{self, Usage};
use dtca_pki::inspect::{self, CertInfo};
use dtca_tests::cli::{expect_exit, operator, run, stderr, stdout, text, token};
use dtca_tests::process::wait_until;
use dtca_tests::serve::ServeProcess;
use nix::sys::signal::Signal;
use time::OffsetDateTime;

fn init(state: &Path, extra: &[&str]) {
    let mut args = vec![
        "init",
        "--cluster",
        "life",
        "--insecure-no-passphrase",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run("ca-server", &args);
    assert!(out.status.success(), "init: {}", text(&out));
}

fn ca(state: &Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["ca"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--state-dir", state.to_str().unwrap()]);
    run("ca-server", &full)
}

fn status(state: &Path) -> serde_json::Value {
    let out = ca(state, &["status", "--json"]);
    assert!(out.status.success(), "ca status: {}", text(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn renew(dir: &Path) -> std::process::Output {
    run("ca-client", &["renew", "--out", dir.to_str().unwrap()])
}

fn pem_file(dir: &Path, name: &str, ders: &[Vec<u8>]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, inspect::certs_to_pem(ders.iter().map(Vec::as_slice))).unwrap();
    path
}

/// The chain in `bundle` verified by openssl, pyca (strict, RFC 5280 profile) and webpki
/// against `roots`, as a client certificate, or as a server's for `server_name`.
fn verify_everywhere(bundle: &Bundle, roots: &[Vec<u8>], scratch: &Path, what: &str) {
    verify_as(bundle, roots, scratch, what, None);
}

fn verify_as(
    bundle: &Bundle,
    roots: &[Vec<u8>],
    scratch: &Path,
    what: &str,
    server_name: Option<&str>,
) {
    let leaf = pem_file(scratch, "leaf.pem", &bundle.chain[..1]);
    let rest = pem_file(scratch, "rest.pem", &bundle.chain[1..]);
    let trust = pem_file(scratch, "trust.pem", roots);
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-purpose")
        .arg(if server_name.is_some() {
            "sslserver"
        } else {
            "sslclient"
        })
        .arg("-CAfile")
        .arg(&trust)
        .arg("-untrusted")
        .arg(&rest)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl, {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"
import sys
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
load = lambda p: x509.load_pem_x509_certificates(open(p, "rb").read())
store = Store(load(sys.argv[1]))
leaf = load(sys.argv[2])[0]
rest = load(sys.argv[3])
if len(sys.argv) > 4:
    from cryptography.x509 import DNSName
    verifier = PolicyBuilder().store(store).build_server_verifier(DNSName(sys.argv[4]))
else:
    verifier = PolicyBuilder().store(store).build_client_verifier()
verifier.verify(leaf, rest)
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&trust)
        .arg(&leaf)
        .arg(&rest)
        .args(server_name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyca, {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let anchors: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    chain::verify_any(
        &bundle.chain[0],
        &bundle.chain[1..],
        &anchors,
        OffsetDateTime::now_utc(),
        if server_name.is_some() {
            Usage::Server
        } else {
            Usage::Client
        },
    )
    .unwrap_or_else(|e| panic!("webpki, {what}: {e}"));
}

#[test]
fn a_root_rotation_from_start_to_finish_with_the_real_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init(&state, &[]);
    let mut server = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let old_root = Bundle::load(&state.join("admin"), Layout::CLIENT)
        .unwrap()
        .roots
        .remove(0);
    // Before: an operator, a copy of its bundle, and a token.
    let op = operator(&state, &server.addr, &dir.path().join("op"));
    let before_copy = dir.path().join("op-old");
    std::fs::create_dir_all(&before_copy).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(op.join(f), before_copy.join(f)).unwrap();
    }
    let old_token = token(&state, &["--role", "operator"]);

    let out = ca(&state, &["rotate-root"]);
    assert!(out.status.success(), "rotate-root: {}", text(&out));
    assert!(
        stdout(&out).contains("root rotation started"),
        "{}",
        text(&out)
    );
    let out = ca(&state, &["rotate-root"]);
    expect_exit(&out, Reason::RotationState);

    let s = status(&state);
    let rotation = &s["rotation"];
    let new_digest = rotation["new_root_digest"].as_str().unwrap().to_string();
    assert_eq!(s["roots"].as_array().unwrap().len(), 2);
    let me = rotation["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "operator")
        .unwrap()
        .clone();
    assert_eq!(me["lagging"], true, "{s}");
    assert_eq!(me["trusts_new_root"], false, "{s}");
    assert!(me["last_seen_unix"].as_i64().unwrap() > 0);

    // While something lags, finishing is refused and names it.
    let out = ca(&state, &["rotate-root", "--finish"]);
    expect_exit(&out, Reason::RotationLagging);
    assert!(stderr(&out).contains("operator/op-"), "{}", text(&out));

    // A restart in the middle (kill -9) resumes the rotation.
    let addr = server.addr.clone();
    server
        .proc
        .signal_and_wait(Signal::SIGKILL, Duration::from_secs(10));
    let server = ServeProcess::start_at(&state, &addr, &["--insecure-no-passphrase"], &[]);
    let s = status(&state);
    assert_eq!(s["rotation"]["new_root_digest"], new_digest.as_str(), "{s}");

    // The operator renews: the two-root bundle, a chain through the cross certificate.
    let out = renew(&op);
    assert!(out.status.success(), "renew: {}", text(&out));
    let renewed = Bundle::load(&op, Layout::CLIENT).unwrap();
    assert_eq!(renewed.roots.len(), 2, "ca.pem holds both roots");
    assert_eq!(
        renewed.chain.len(),
        3,
        "leaf, intermediate, cross certificate"
    );
    let new_root = renewed.roots[1].clone();
    assert_eq!(renewed.roots[0], old_root);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // A node enrolled now: its server chain, as its engine serves it.
    let node_token = token(&state, &["--role", "node"]);
    let node = dir.path().join("node");
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            &server.addr,
            "--token",
            &node_token,
            "--name",
            "node-1",
            "--no-default-sans",
            "--san",
            "node-1.example.net",
            "--out",
            node.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "node enroll: {}", text(&out));
    let node = Bundle::load(&node, Layout::CLIENT).unwrap();
    assert_eq!(node.chain.len(), 3);
    for (what, roots) in [
        ("old root only", vec![old_root.clone()]),
        ("new root only", vec![new_root.clone()]),
        ("both roots", vec![old_root.clone(), new_root.clone()]),
    ] {
        verify_everywhere(&renewed, &roots, &scratch, what);
        verify_as(&node, &roots, &scratch, what, Some("node-1.example.net"));
        verify_as(
            &served_chain(&server.addr),
            &roots,
            &scratch,
            what,
            Some("localhost"),
        );
    }
    // A token made before the rotation still enrolls; one made now pins the new root.
    let late = dir.path().join("late");
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            &server.addr,
            "--token",
            &old_token,
            "--name",
            "late",
            "--no-default-sans",
            "--out",
            late.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "enroll with an old token: {}",
        text(&out)
    );
    let new_token = token(&state, &["--role", "operator"]);
    assert!(
        new_token.contains(&new_digest),
        "{new_token} does not pin {new_digest}"
    );

    // The admin bundle renewed itself when the CA began trusting the new root.
    let admin = Bundle::load(&state.join("admin"), Layout::CLIENT).unwrap();
    assert_eq!(admin.roots.len(), 2);
    let s = status(&state);
    assert_eq!(s["rotation"]["lagging"], 0, "{s}");

    let out = ca(&state, &["rotate-root", "--finish"]);
    assert!(out.status.success(), "finish: {}", text(&out));
    let s = status(&state);
    assert!(s["rotation"].is_null(), "{s}");
    let states: Vec<&str> = s["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["retired", "active"]);
    // The next renewal drops the old root from ca.pem and the cross certificate.
    let out = renew(&op);
    assert!(out.status.success(), "renew after: {}", text(&out));
    let after = Bundle::load(&op, Layout::CLIENT).unwrap();
    assert_eq!(after.roots, vec![new_root.clone()]);
    assert_eq!(after.chain.len(), 2);
    verify_everywhere(
        &after,
        std::slice::from_ref(&new_root),
        &scratch,
        "after the rotation",
    );
    // A certificate of the old chain is refused (even by a client trusting both roots).
    let refused = refused_renewal(&server.addr, &before_copy, &[old_root, new_root]);
    assert_eq!(
        refused,
        Some(Reason::CertForeign),
        "old certificate after --finish"
    );
    drop(server);
}

/// The chain the CA server serves, as `openssl s_client` receives it.
fn served_chain(addr: &str) -> Bundle {
    let out = Command::new("openssl")
        .args(["s_client", "-showcerts", "-connect", addr])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pem = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            inside = true;
        }
        if inside {
            pem.push_str(line);
            pem.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            inside = false;
        }
    }
    let chain = inspect::certs_from_pem(&pem).unwrap();
    assert!(chain.len() >= 3, "served chain: {text}");
    Bundle {
        roots: Vec::new(),
        chain,
        key: dtca_pki::key::PrivateKey::generate(dtca_pki::key::KeyType::P256).unwrap(),
    }
}

/// Asks for a renewal with the bundle in `dir`, trusting `roots`: the refusal's reason.
fn refused_renewal(addr: &str, dir: &Path, roots: &[Vec<u8>]) -> Option<Reason> {
    let bundle = Bundle::load(dir, Layout::CLIENT).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = dtca_common::tls::client_config(
            dtca_common::tls::Trust::Roots(roots.to_vec()),
            Some(bundle.client_identity()),
        )
        .unwrap();
        let addr = dtca_common::tls::ServerAddr::parse(addr).unwrap();
        let channel = dtca_common::tls::connect(&addr, config).await.unwrap();
        let mut client = dtca_proto::v1::ca_client::CaClient::new(channel);
        let key = dtca_pki::key::PrivateKey::generate(dtca_pki::key::KeyType::P256).unwrap();
        let csr = dtca_pki::csr::build(&key, "x", &[], &[]).unwrap();
        match client
            .renew(dtca_proto::v1::RenewRequest { csr_der: csr })
            .await
        {
            Ok(_) => None,
            Err(status) => Some(dtca_common::reason::of_status_or_code(&status)),
        }
    })
}

#[test]
fn a_one_minute_intermediate_switches_by_itself_and_every_leaf_has_its_full_life() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init(&state, &["--intermediate-ttl", "60s", "--root-ttl", "1h"]);
    let server = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let op = operator(&state, &server.addr, &dir.path().join("op"));
    let root = Bundle::load(&op, Layout::CLIENT).unwrap().roots;
    let mut issuers: Vec<Vec<u8>> = Vec::new();
    let mut leaves = 0;
    let mut saw_prepared = false;
    // A leaf lives a third of its intermediate (20s): renewing every few seconds, three
    // switches come within a few minutes.
    let done = wait_until(Duration::from_secs(300), || {
        let asked = OffsetDateTime::now_utc();
        let out = renew(&op);
        assert!(out.status.success(), "renew: {}", text(&out));
        let bundle = Bundle::load(&op, Layout::CLIENT).unwrap();
        let leaf = CertInfo::from_der(&bundle.chain[0]).unwrap();
        assert!(
            leaf.not_after - asked >= time::Duration::seconds(19),
            "a leaf cut short: it ends {} after it was asked for",
            leaf.not_after - asked
        );
        let issuer = CertInfo::from_der(&bundle.chain[1]).unwrap();
        assert!(
            leaf.not_after <= issuer.not_after,
            "a leaf outlives its issuer"
        );
        let anchors: Vec<&[u8]> = root.iter().map(Vec::as_slice).collect();
        chain::verify_any(
            &bundle.chain[0],
            &bundle.chain[1..],
            &anchors,
            asked,
            Usage::Client,
        )
        .unwrap();
        leaves += 1;
        if issuers.last() != Some(&bundle.chain[1]) {
            issuers.push(bundle.chain[1].clone());
        }
        if !saw_prepared {
            let s = status(&state);
            saw_prepared = s["next_switch_unix"].as_i64().unwrap_or(0) > 0;
            assert!(s["warnings"].as_array().unwrap().is_empty(), "{s}");
        }
        std::thread::sleep(Duration::from_secs(3));
        issuers.len() >= 4
    });
    assert!(
        done,
        "after {leaves} leaves, {} intermediates signed: {}",
        issuers.len(),
        server.log_text()
    );
    assert!(
        saw_prepared,
        "ca status never showed a prepared intermediate"
    );
    let log = server.log_text();
    assert!(log.matches("intermediate switch").count() >= 3, "{log}");
    assert!(log.contains("prepared the next intermediate"), "{log}");
}
