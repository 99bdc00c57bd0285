//! Running the built binaries and reading what they printed: one copy of the helpers the
//! end-to-end tests share.

use std::path::Path;
use std::process::{Command, Output};

use dtca_common::Reason;

use crate::bins::bin;

/// `NAME ARGS...` with one of the workspace binaries (`ca-server`, `ca-client`).
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name)).args(args).output().unwrap()
}

/// What it printed on stdout, trimmed.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What it printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// stdout and stderr together, for assertion messages and searches.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the exit code of `reason` and exactly one `error:` line on stderr.
pub fn expect_exit(out: &Output, reason: Reason) {
    assert_eq!(
        out.status.code(),
        Some(i32::from(reason.exit_code())),
        "expected {reason} ({}): {}",
        reason.exit_code(),
        text(out)
    );
    let lines = stderr(out)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(lines, 1, "expected one error line: {}", stderr(out));
}

/// `ca-server token create --state-dir STATE ARGS...` (on the CA's host, so it finds
/// the running server): the token it printed.
pub fn token(state: &Path, args: &[&str]) -> String {
    let mut full = vec![
        "token",
        "create",
        "--quiet",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    full.extend_from_slice(args);
    let out = run("ca-server", &full);
    assert!(out.status.success(), "token create: {}", text(&out));
    stdout(&out)
}

/// An operator's client bundle (`ca.pem`, `cert.pem`, `key.pem`) from the CA whose state
/// is `state` and which listens at `server`, enrolled into `dir` under a name of its own.
pub fn operator(state: &Path, server: &str, dir: &Path) -> std::path::PathBuf {
    operator_with(state, server, dir, &[])
}

/// [`operator`] with more `token create` flags (`--access read-only`).
pub fn operator_with(
    state: &Path,
    server: &str,
    dir: &Path,
    token_args: &[&str],
) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("op-{}-{n}", std::process::id());
    let mut args = vec!["--role", "operator"];
    args.extend_from_slice(token_args);
    let t = token(state, &args);
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            server,
            "--token",
            &t,
            "--name",
            &name,
            "--no-default-sans",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "operator enroll: {}", text(&out));
    dir.to_path_buf()
}

/// A shell running a command line as a tool printed it (`ca-server serve ...`), with
/// the workspace binaries first on `PATH`: the test of "runs as printed".
pub fn printed(line: &str, envs: &[(&str, &str)]) -> Command {
    let dir = bin("ca-server").parent().expect("binary dir").to_path_buf();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("exec {line}")).env("PATH", path);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// The line of `text` after `prefix` (a hint like `Next: `), trimmed.
///
/// # Panics
/// When no line starts with `prefix`.
pub fn line_after(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
        .trim()
        .to_string()
}
