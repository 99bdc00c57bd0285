//! The command-line contract as `--help` shows it. (Also makes `cargo test --workspace`
//! build the binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ca-client"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "enroll",
        "renew",
        "Exit codes:",
        "25 ",
        "root CA does not match",
    ] {
        assert!(text.contains(want), "{want:?} missing from --help:\n{text}");
    }
}

#[test]
fn unknown_flags_exit_with_the_usage_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_ca-client"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
