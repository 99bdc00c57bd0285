//! A private PostgreSQL server for one test, from Debian's packages.
//!
//! `initdb` and `pg_ctl` run as the `postgres` user (when the test runs as root) in a temp
//! dir; the server listens on a free loopback port with its unix socket in that dir, and
//! is stopped by pid when dropped (`pg_ctl stop -m fast`, then SIGKILL). When PostgreSQL
//! cannot start, [`Postgres::start`] panics with the reason: no test is skipped silently.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User, chown};

use crate::process::wait_until;

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Loopback port it listens on.
    pub port: u16,
    owner: Option<(Uid, Gid)>,
}

impl Postgres {
    /// Initialises a cluster in a temp dir and starts it on a free loopback port.
    ///
    /// # Panics
    /// With the reason (and the server's log) when PostgreSQL cannot be started.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("dtca-pg-")
            .tempdir()
            .expect("temp dir");
        let owner = if Uid::effective().is_root() {
            let user = User::from_name("postgres")
                .ok()
                .flatten()
                .expect("running as root, PostgreSQL needs the `postgres` user (install Debian's postgresql package)");
            chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown the temp dir");
            Some((user.uid, user.gid))
        } else {
            None
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod the temp dir");
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            owner,
        };
        let init = pg
            .as_owner(&pg.bin.join("initdb"))
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb from {}: {e}", pg.bin.display()));
        assert!(
            init.status.success(),
            "initdb failed: {}",
            crate::cli::text(&init)
        );
        let mut last = String::new();
        for _ in 0..3 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => return pg,
                Err(why) => last = why,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// Starts the server again after [`Postgres::stop`], on the same port.
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&self) {
        if let Err(why) = self.try_start() {
            panic!("PostgreSQL did not start again: {why}");
        }
    }

    /// Stops the server: `pg_ctl stop -m fast` (open sessions are ended), then SIGKILL of
    /// the postmaster by pid if it is still there.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "20", "stop"])
            .output();
        if alive(pid) {
            let _ = kill(pid, Signal::SIGKILL);
            wait_until(Duration::from_secs(10), || !alive(pid));
        }
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(alive)
    }

    /// Creates a database and returns its URL.
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            crate::cli::text(&out)
        );
        self.url(name)
    }

    /// The URL of a database on this server (trust authentication, loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL statement with psql and returns its unaligned output.
    ///
    /// # Panics
    /// When psql fails.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            crate::cli::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -h 127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() && self.is_running() {
            Ok(())
        } else {
            self.stop();
            Err(format!(
                "pg_ctl start: {}\nserver log:\n{}",
                crate::cli::text(&out),
                self.log()
            ))
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The postmaster's pid, from `postmaster.pid`.
    fn pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok().map(Pid::from_raw)
    }

    fn as_owner(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
            cmd.env("HOME", self.dir.path());
        }
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian's PostgreSQL server binaries: `$DTCA_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` holding `initdb`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DTCA_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server in /usr/lib/postgresql/*/bin: install Debian's postgresql package (scripts/install-deps.sh does)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}
