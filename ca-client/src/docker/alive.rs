//! Whether the engine is still alive after a restart: a dockerd that exits at start is
//! noticed within about two seconds (no live pid in its pidfile and no answer on its
//! socket), not when the verify timeout runs out, and the last lines it printed are
//! quoted (from its log file, the file its stderr went to, or systemd's journal).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::launcher::{self, Kind, Launcher};

/// How long the engine may show no sign of life before it is taken for dead.
pub const GRACE: Duration = Duration::from_secs(2);
/// At most this many of dockerd's last lines are quoted.
const LINES: usize = 6;

/// Where dockerd's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// A file, read from where it ended before the restart.
    File(PathBuf),
    /// systemd's journal of docker.service.
    Journal,
}

/// What to watch after a restart.
#[derive(Debug, Clone)]
pub struct Watch {
    pidfile: PathBuf,
    socket: PathBuf,
    log: Option<(LogSource, u64)>,
    since: std::time::SystemTime,
}

impl Watch {
    /// Taken just before the restart: the log's current end is remembered, so that only
    /// what the new dockerd prints is quoted.
    pub fn before_restart(pidfile: PathBuf, socket: PathBuf, log: Option<LogSource>) -> Watch {
        let log = log.map(|source| {
            let end = match &source {
                LogSource::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
                LogSource::Journal => 0,
            };
            (source, end)
        });
        Watch {
            pidfile,
            socket,
            log,
            since: std::time::SystemTime::now(),
        }
    }

    /// Whether a dockerd runs (its pidfile names a live process) or its socket accepts.
    async fn signs_of_life(&self) -> bool {
        let pid_alive = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(is_running);
        pid_alive || tokio::net::UnixStream::connect(&self.socket).await.is_ok()
    }

    /// The last lines dockerd printed since the restart, when they can be read.
    pub fn last_lines(&self) -> Option<(String, String)> {
        let (source, start) = self.log.as_ref()?;
        let (text, from) = match source {
            LogSource::File(path) => {
                let mut f = std::fs::File::open(path).ok()?;
                let len = f.metadata().ok()?.len();
                let start = if *start <= len { *start } else { 0 };
                // Only the end matters.
                let start = start.max(len.saturating_sub(16 * 1024));
                f.seek(SeekFrom::Start(start)).ok()?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).ok()?;
                (
                    String::from_utf8_lossy(&buf).to_string(),
                    path.display().to_string(),
                )
            }
            LogSource::Journal => {
                let since = time::OffsetDateTime::from(self.since);
                let out = std::process::Command::new("journalctl")
                    .args(["-u", "docker.service", "--no-pager", "-o", "cat", "--since"])
                    .arg(format!("@{}", since.unix_timestamp()))
                    .output()
                    .ok()?;
                (
                    String::from_utf8_lossy(&out.stdout).to_string(),
                    "journalctl -u docker.service".to_string(),
                )
            }
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(LINES)..].join(" | ");
        (!tail.is_empty()).then_some((from, tail))
    }
}

/// Follows the engine after a restart: [`Liveness::dead`] says so once it has shown no
/// sign of life for [`GRACE`].
#[derive(Debug)]
pub struct Liveness<'a> {
    watch: &'a Watch,
    last_alive: Instant,
}

impl<'a> Liveness<'a> {
    /// Starts following now (after the restart command returned).
    pub fn new(watch: &'a Watch) -> Liveness<'a> {
        Liveness {
            watch,
            last_alive: Instant::now(),
        }
    }

    /// Waits until the engine is taken for dead, and says why.
    pub async fn until_dead(&mut self) -> String {
        loop {
            if let Some(why) = self.dead().await {
                return why;
            }
            tokio::time::sleep(alive_poll()).await;
        }
    }

    /// `Some(why)` once the engine has been gone for [`GRACE`], quoting its last lines.
    pub async fn dead(&mut self) -> Option<String> {
        if self.watch.signs_of_life().await {
            self.last_alive = Instant::now();
            return None;
        }
        if self.last_alive.elapsed() < GRACE {
            return None;
        }
        let mut why = format!(
            "dockerd is not running after the restart (no live process in {}, nothing answers on unix://{})",
            self.watch.pidfile.display(),
            self.watch.socket.display()
        );
        if let Some((from, lines)) = self.watch.last_lines() {
            why.push_str(&format!("; its last lines ({from}): {lines}"));
        }
        Some(why)
    }
}

fn alive_poll() -> Duration {
    Duration::from_millis(250)
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The pidfile dockerd writes: daemon.json's `pidfile` (`config` is its text), else
/// `flag` (its `--pidfile`), else dockerd's default.
pub fn pidfile_in(config: &str, flag: Option<&Path>) -> PathBuf {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|v| v.get("pidfile").and_then(|p| p.as_str()).map(PathBuf::from))
        .or_else(|| flag.map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.pid"))
}

/// What to watch when a switched engine (its daemon.json at `config`, its socket) is
/// restarted for a rotation: found from the running engine, just before the restart.
pub async fn watch_switched(config: &Path, socket: &Path) -> Watch {
    let l = launcher::detect(&[socket.to_path_buf()], false).await;
    let text = std::fs::read_to_string(config).unwrap_or_default();
    Watch::before_restart(
        pidfile_in(&text, l.as_ref().and_then(|l| l.pidfile.as_deref())),
        socket.to_path_buf(),
        l.as_ref().and_then(log_source),
    )
}

/// Where the engine's output can be read: the launcher's log file, else the regular
/// file the running dockerd's stderr goes to, else systemd's journal when systemd runs
/// it.
pub fn log_source(l: &Launcher) -> Option<LogSource> {
    if let Some(file) = l.log.as_ref().filter(|f| f.is_file()) {
        return Some(LogSource::File(file.clone()));
    }
    let stderr = l
        .pid
        .and_then(|p| std::fs::read_link(format!("/proc/{p}/fd/2")).ok())
        .filter(|p| p.is_absolute() && Path::new(p).is_file());
    if let Some(file) = stderr {
        return Some(LogSource::File(file));
    }
    (l.kind == Kind::Systemd && launcher::systemd_running()).then_some(LogSource::Journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_made_up_one_does_not() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX - 1));
    }

    #[test]
    fn only_lines_written_after_the_restart_are_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dockerd.log");
        std::fs::write(&log, "old line\n").unwrap();
        let watch = Watch::before_restart(
            dir.path().join("pid"),
            dir.path().join("sock"),
            Some(LogSource::File(log.clone())),
        );
        assert_eq!(watch.last_lines(), None);
        std::fs::write(&log, "old line\nfailed to start: address in use\n").unwrap();
        let (_, lines) = watch.last_lines().unwrap();
        assert_eq!(lines, "failed to start: address in use");
    }
}
