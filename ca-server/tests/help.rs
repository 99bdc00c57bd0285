//! The command-line contract as `--help` shows it: the commands of DESIGN.md and the
//! exit-code table. (Also makes `cargo test --workspace` build the binary that the
//! end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ca-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "init",
        "serve",
        "token",
        "cert",
        "audit",
        "Exit codes:",
        "31 ",
        "the state directory already holds a CA",
    ] {
        assert!(text.contains(want), "{want:?} missing from --help:\n{text}");
    }
}

#[test]
fn unknown_flags_exit_with_the_usage_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_ca-server"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
