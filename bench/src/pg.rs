//! A private PostgreSQL server for the PostgreSQL row: Debian's binaries, `initdb` in a
//! temp dir, `postgres` in the foreground on a free loopback port with durable defaults
//! (fsync on, synchronous_commit on), run as the `postgres` user when the bench runs as
//! root, and stopped by pid (SIGINT: fast shutdown) when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use nix::unistd::{Uid, User, chown};

use crate::proc::{Child, output};

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    /// Loopback port.
    pub port: u16,
    bin: PathBuf,
    /// `postgres --version`.
    pub version: String,
}

impl Postgres {
    /// Initialises a cluster in `dir` and starts it.
    ///
    /// # Errors
    /// When PostgreSQL is not installed or does not start.
    pub async fn start(dir: &Path) -> anyhow::Result<Postgres> {
        let bin = bin_dir().context("PostgreSQL is not installed (apt-get install postgresql)")?;
        std::fs::create_dir_all(dir)?;
        let owner = if Uid::effective().is_root() {
            let user = User::from_name("postgres")?
                .context("running as root, PostgreSQL needs the `postgres` user")?;
            chown(dir, Some(user.uid), Some(user.gid))?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let as_owner = |program: &Path| {
            let mut cmd = Command::new(program);
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let data = dir.join("data");
        output(
            as_owner(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
                .arg("--no-instructions"),
        )?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut cmd = as_owner(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir)
            .args(["-c", "max_connections=200"]);
        let log = dir.join("postgres.log");
        let mut child = Child::spawn("postgres", &mut cmd, &log)?;
        child.stop_signal = Signal::SIGINT;
        let version = output(Command::new(bin.join("postgres")).arg("--version"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut pg = Postgres {
            child,
            port,
            bin,
            version,
        };
        for _ in 0..300 {
            if pg.child.exited().is_some() {
                break;
            }
            let ready = Command::new(pg.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(pg);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("PostgreSQL did not start: {}", pg.child.log_text());
    }

    /// Creates a database and returns its URL.
    ///
    /// # Errors
    /// When `createdb` fails.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        output(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", name]),
        )?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}
