//! The binaries under test.
//!
//! `cargo test --workspace` builds them (ca-server and ca-client have integration tests of
//! their own, so cargo puts their binaries next to the test executables). When they are
//! missing or older than the sources, e.g. with `cargo test -p dtca-tests` after an edit,
//! they are built here first, once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Crates whose sources go into the binaries.
const SOURCES: &[&str] = &["proto", "pki", "common", "ca-server/src", "ca-client/src"];

/// Path of a workspace binary (`ca-server`, `ca-client`), built if stale.
///
/// # Panics
/// When the build fails.
pub fn bin(name: &str) -> PathBuf {
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/<test binary> -> target/<profile>; a binary of the
        // workspace (dtca-bench) is in target/<profile> itself.
        let exe = std::env::current_exe().expect("current exe");
        let parent = exe.parent().expect("target dir");
        let dir = if parent.file_name().is_some_and(|n| n == "deps") {
            parent.parent().expect("target dir")
        } else {
            parent
        }
        .to_path_buf();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace")
            .to_path_buf();
        let newest_source = SOURCES
            .iter()
            .map(|s| newest(&workspace.join(s)))
            .chain([mtime(&workspace.join("Cargo.lock"))])
            .max()
            .flatten();
        let fresh =
            ["ca-server", "ca-client"]
                .iter()
                .all(|b| match (mtime(&dir.join(b)), newest_source) {
                    (Some(built), Some(source)) => built >= source,
                    (Some(_), None) => true,
                    (None, _) => false,
                });
        if !fresh {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(&workspace).args([
                "build",
                "-q",
                "--bins",
                "-p",
                "ca-server",
                "-p",
                "ca-client",
            ]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build of the binaries failed");
        }
        dir
    });
    dir.join(name)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = mtime(dir);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            mtime(&path)
        };
        best = best.max(t);
    }
    best
}
