//! How the running engine was started, asked of the engine itself rather than of whatever
//! files are installed: its pid from the peer credentials of its unix socket, its command
//! line, cgroup and user from /proc, and the init system's own traces (systemd's
//! `/run/systemd/system`, OpenRC's `/run/openrc`, the init script's pidfile, snap's
//! directories). Each launcher has its files and its restart command; an unknown one
//! needs `--docker-restart`.
//!
//! `DTCA_HOST_ROOT` (tests, chroots) prefixes the init system's paths; /proc is always the
//! real one.

use std::fmt;
use std::path::{Path, PathBuf};

use super::systemd;

/// Who starts the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// systemd's docker.service (unit files and drop-ins apply).
    Systemd,
    /// OpenRC's /etc/init.d/docker with /etc/conf.d/docker.
    OpenRc,
    /// A System V init script with /etc/default/docker.
    SysVinit,
    /// The docker snap.
    Snap,
    /// Rootless dockerd (a user's own engine).
    Rootless,
    /// Nothing recognisable: the restart command must be given.
    Unknown,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Systemd => "systemd",
            Kind::OpenRc => "OpenRC",
            Kind::SysVinit => "sysvinit",
            Kind::Snap => "snap",
            Kind::Rootless => "rootless",
            Kind::Unknown => "unknown",
        })
    }
}

/// The running engine and how it was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    /// Who starts it.
    pub kind: Kind,
    /// How that was told, for people.
    pub evidence: String,
    /// The socket it answered on.
    pub socket: PathBuf,
    /// Its pid, when the socket's peer credentials and /proc tell it.
    pub pid: Option<u32>,
    /// Its command line (empty when unknown).
    pub cmdline: Vec<String>,
    /// `-H` values on its command line.
    pub flag_hosts: Vec<String>,
    /// The daemon.json it reads: `--config-file`, else the launcher's default.
    pub config: Option<PathBuf>,
    /// `--pidfile` on its command line.
    pub pidfile: Option<PathBuf>,
    /// The launcher's environment file that may carry dockerd's flags.
    pub env_file: Option<PathBuf>,
    /// The launcher's restart command.
    pub restart: Option<String>,
    /// The log file the launcher writes dockerd's output to, when known.
    pub log: Option<PathBuf>,
}

/// Default restart commands.
pub const SYSTEMD_RESTART: &str = "systemctl daemon-reload && systemctl restart docker";
const OPENRC_RESTART: &str = "rc-service docker restart";
const SYSVINIT_RESTART: &str = "service docker restart";
const SNAP_RESTART: &str = "snap restart docker";
const ROOTLESS_RESTART: &str = "systemctl --user restart docker";

/// The init system's paths, under `DTCA_HOST_ROOT` when set.
pub fn host_path(path: &str) -> PathBuf {
    match std::env::var_os("DTCA_HOST_ROOT").filter(|r| !r.is_empty()) {
        Some(root) => Path::new(&root).join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// Whether systemd is the running init system.
pub fn systemd_running() -> bool {
    host_path("/run/systemd/system").is_dir()
}

/// Finds the engine on the first of `sockets` that accepts a connection and tells how
/// it was started. `systemd_forced`: unit directories were given explicitly, so the
/// engine is taken as systemd's whatever the traces say. `None` when no socket answers.
pub async fn detect(sockets: &[PathBuf], systemd_forced: bool) -> Option<Launcher> {
    let mut found = None;
    for socket in sockets {
        if let Ok(stream) = tokio::net::UnixStream::connect(socket).await {
            let pid = stream
                .peer_cred()
                .ok()
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0);
            found = Some((socket.clone(), pid));
            break;
        }
    }
    let (socket, pid) = found?;
    Some(classify(socket, pid, systemd_forced))
}

/// What /proc says of `pid`, and the launcher that fits.
fn classify(socket: PathBuf, pid: Option<u32>, systemd_forced: bool) -> Launcher {
    let proc_file = |name: &str| {
        pid.and_then(|p| std::fs::read(format!("/proc/{p}/{name}")).ok())
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .unwrap_or_default()
    };
    let cmdline: Vec<String> = proc_file("cmdline")
        .split('\0')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let cgroup = proc_file("cgroup");
    let uid = proc_file("status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .and_then(|v| v.parse::<u32>().ok());
    let exe = pid
        .and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok())
        .unwrap_or_default();
    let (_, flag_hosts) = systemd::strip_hosts(&cmdline, true);
    let flag_config = systemd::config_file(&cmdline);
    let pidfile = flag_value(&cmdline, "--pidfile").map(PathBuf::from);
    let mut l = Launcher {
        kind: Kind::Unknown,
        evidence: String::new(),
        socket,
        pid,
        cmdline,
        flag_hosts,
        config: flag_config.clone(),
        pidfile,
        env_file: None,
        restart: None,
        log: None,
    };
    let pid_text = pid.map_or_else(|| "?".to_string(), |p| p.to_string());
    let in_pidfile = |candidates: &[&str]| {
        pid.and_then(|p| {
            candidates.iter().map(|c| host_path(c)).find(|f| {
                std::fs::read_to_string(f)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    == Some(p)
            })
        })
    };
    let default_config = || {
        flag_config
            .clone()
            .or_else(|| Some(PathBuf::from(super::DEFAULT_CONFIG)))
    };
    if systemd_forced {
        l.kind = Kind::Systemd;
        l.evidence = "unit directories given with --systemd-dir".into();
        l.restart = Some(SYSTEMD_RESTART.into());
    } else if pid.is_none() {
        l.evidence = format!(
            "the engine on {} gave no pid (another pid namespace?)",
            l.socket.display()
        );
    } else if systemd_running() && cgroup.contains("docker.service") {
        l.kind = Kind::Systemd;
        let activated = l.flag_hosts.iter().any(|h| h.starts_with("fd://"));
        l.evidence = format!(
            "pid {pid_text} is in systemd's docker.service{}",
            if activated {
                " (socket-activated: docker.socket)"
            } else {
                ""
            }
        );
        l.restart = Some(SYSTEMD_RESTART.into());
    } else if exe.starts_with("/snap/") || cgroup.contains("snap.docker") {
        l.kind = Kind::Snap;
        l.evidence = format!("pid {pid_text} runs from the docker snap");
        l.config = flag_config
            .clone()
            .or_else(|| Some(host_path("/var/snap/docker/current/config/daemon.json")));
        l.restart = Some(SNAP_RESTART.into());
    } else if uid.is_some_and(|u| u != 0) {
        l.kind = Kind::Rootless;
        let home = proc_file("environ")
            .split('\0')
            .find_map(|kv| kv.strip_prefix("HOME=").map(PathBuf::from));
        l.evidence = format!(
            "pid {pid_text} runs as uid {} (rootless)",
            uid.unwrap_or_default()
        );
        l.config = flag_config
            .clone()
            .or_else(|| home.map(|h| h.join(".config/docker/daemon.json")));
        l.restart = Some(ROOTLESS_RESTART.into());
    } else if host_path("/run/openrc").is_dir()
        && host_path("/etc/init.d/docker").exists()
        && let Some(file) = in_pidfile(&["/run/docker.pid", "/var/run/docker.pid"])
    {
        l.kind = Kind::OpenRc;
        l.evidence = format!("OpenRC runs it (pid {pid_text} in {})", file.display());
        l.env_file = Some(host_path("/etc/conf.d/docker"));
        l.config = default_config();
        l.log = Some(host_path("/var/log/docker.log"));
        l.restart = Some(OPENRC_RESTART.into());
    } else if host_path("/etc/init.d/docker").exists()
        && let Some(file) = in_pidfile(&[
            "/var/run/docker-ssd.pid",
            "/run/docker-ssd.pid",
            "/var/run/docker.pid",
            "/run/docker.pid",
        ])
    {
        l.kind = Kind::SysVinit;
        l.evidence = format!(
            "the init script /etc/init.d/docker runs it (pid {pid_text} in {})",
            file.display()
        );
        l.env_file = Some(host_path("/etc/default/docker"));
        l.config = default_config();
        l.log = Some(host_path("/var/log/docker.log"));
        l.restart = Some(SYSVINIT_RESTART.into());
    } else {
        l.evidence = format!(
            "pid {pid_text} ({}) is not run by systemd, OpenRC, an init script or snap",
            l.cmdline.first().map_or("?", String::as_str)
        );
    }
    // (Without a pid, what the engine reads is not known: nothing is assumed.)
    if l.config.is_none() && l.kind == Kind::Unknown && pid.is_some() {
        l.config = default_config();
    }
    l
}

/// The value of `--flag X` or `--flag=X`.
fn flag_value(words: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    words.iter().enumerate().find_map(|(i, w)| {
        if w == flag {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// The `-H` flags an environment file (`/etc/conf.d/docker`, `/etc/default/docker`)
/// passes to dockerd, and its text with them removed; `None` when it passes none.
pub fn env_without_hosts(text: &str) -> Option<(Vec<String>, String)> {
    let mut hosts = Vec::new();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let trimmed = body.trim_start();
        let assignment = (!trimmed.starts_with('#'))
            .then(|| trimmed.strip_prefix("export ").unwrap_or(trimmed))
            .and_then(|t| t.split_once('='))
            .filter(|(k, _)| k.ends_with("OPTS") || k.ends_with("ARGS"));
        let Some((key, value)) = assignment else {
            out.push_str(line);
            continue;
        };
        // The value as the shell assigns it (quotes removed), then split into words as
        // an unquoted `$DOCKER_OPTS` is (a leading word for split_words to take as the
        // command).
        let assigned = systemd::split_words(&format!("x {value}"))[1..].join(" ");
        let words: Vec<String> = assigned.split_whitespace().map(str::to_string).collect();
        let (rest, found) = systemd::strip_hosts(&words, false);
        if found.is_empty() {
            out.push_str(line);
            continue;
        }
        hosts.extend(found);
        let indent = &body[..body.len() - trimmed.len()];
        let export = if trimmed.starts_with("export ") {
            "export "
        } else {
            ""
        };
        out.push_str(&format!(
            "{indent}{export}{key}=\"{}\"\n",
            rest.join(" ").replace('"', "\\\"")
        ));
        if !line.ends_with('\n') {
            out.pop();
        }
    }
    (!hosts.is_empty()).then_some((hosts, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_lose_their_h_flags_and_keep_the_rest() {
        let text = "# comment\nDOCKER_OPTS=\"-H tcp://0.0.0.0:2375 --log-level warn -H unix:///var/run/docker.sock\"\nOTHER=1\n";
        let (hosts, out) = env_without_hosts(text).unwrap();
        assert_eq!(
            hosts,
            vec!["tcp://0.0.0.0:2375", "unix:///var/run/docker.sock"]
        );
        assert_eq!(
            out,
            "# comment\nDOCKER_OPTS=\"--log-level warn\"\nOTHER=1\n"
        );
        assert!(env_without_hosts("DOCKER_OPTS=\"--debug\"\n").is_none());
        assert!(env_without_hosts("#DOCKER_OPTS=\"-H x\"\n").is_none());
        let (_, out) = env_without_hosts("export DOCKERD_OPTS='-Htcp://1.2.3.4:2375'").unwrap();
        assert_eq!(out, "export DOCKERD_OPTS=\"\"");
    }

    #[test]
    fn flag_values_in_both_spellings() {
        let w: Vec<String> = ["dockerd", "--pidfile", "/a", "--config-file=/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_value(&w, "--pidfile").as_deref(), Some("/a"));
        assert_eq!(flag_value(&w, "--config-file").as_deref(), Some("/b"));
        assert_eq!(flag_value(&w, "--data-root"), None);
    }
}
