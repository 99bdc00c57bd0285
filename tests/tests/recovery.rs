//! A node in any state gets back to a working enrollment: default names fitted to what
//! the token allows, an explicit token winning over a stale enrollment, no empty
//! directories left by a failed enroll. Real `ca-server serve` and `ca-client`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use dtca_common::Reason;
use dtca_tests::cli::{expect_exit, run, text, token};
use dtca_tests::serve::{ServeProcess, init_insecure};

struct Ca {
    _tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    serve: ServeProcess,
}

impl Ca {
    fn start() -> Ca {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("ca");
        init_insecure(&state);
        let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
        Ca {
            _tmp: tmp,
            state,
            serve,
        }
    }
}

fn enroll(ca: &Ca, token: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "enroll",
        "--server",
        &ca.serve.addr,
        "--token",
        token,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("ca-client", &args)
}

fn token_uses(ca: &Ca) -> String {
    text(&run(
        "ca-server",
        &["token", "list", "--state-dir", ca.state.to_str().unwrap()],
    ))
}

/// The README's example token (`--allow-dns '*.nodes.example.com' --allow-ip
/// 10.0.0.0/8`) on a host whose name and addresses are outside it: the default names
/// are left out and said so, a `--san` outside it is refused with a hint, and nothing
/// is spent or created by a refusal.
#[test]
fn default_names_outside_the_token_are_left_out_and_given_ones_refused() {
    let ca = Ca::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = token(
        &ca.state,
        &[
            "--role",
            "node",
            "--allow-dns",
            "*.nodes.example.com",
            "--allow-ip",
            "10.0.0.0/8",
        ],
    );
    let before = token_uses(&ca);

    // Only the host's own names: none is inside, so refused before spending.
    let out = tmp.path().join("a/b/creds");
    let refused = enroll(&ca, &t, &out, &[]);
    expect_exit(&refused, Reason::NameNotAllowed);
    assert!(
        text(&refused).contains("--san"),
        "no hint: {}",
        text(&refused)
    );
    assert!(
        !tmp.path().join("a").exists(),
        "a refused enroll left directories"
    );

    // A given name outside: refused, naming it.
    let refused = enroll(
        &ca,
        &t,
        &out,
        &[
            "--san",
            "web-1.nodes.example.com",
            "--san",
            "db.example.org",
        ],
    );
    expect_exit(&refused, Reason::NameNotAllowed);
    assert!(
        text(&refused).contains("db.example.org"),
        "{}",
        text(&refused)
    );
    assert!(!tmp.path().join("a").exists());
    assert_eq!(token_uses(&ca), before, "a refusal spent the token");

    // A name inside: enrolled, with the host's own names left out and listed.
    let ok = enroll(&ca, &t, &out, &["--san", "web-1.nodes.example.com"]);
    assert!(ok.status.success(), "enroll: {}", text(&ok));
    let printed = text(&ok);
    assert!(printed.contains("left out:"), "{printed}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(printed.contains(host.trim()), "{printed}");
    let sans = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(out.join("cert.pem"))
        .output()
        .unwrap();
    let sans = String::from_utf8_lossy(&sans.stdout).to_string();
    assert!(sans.contains("DNS:web-1.nodes.example.com"), "{sans}");
    assert!(!sans.contains(&format!("DNS:{},", host.trim())), "{sans}");
}
