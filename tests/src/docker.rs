//! Real Docker engines for the tests: Debian's dockerd, each with its own data-root,
//! exec-root, pidfile, unix socket and config, started plain on a loopback TCP port (as
//! the fleets we switch run them), restarted by a script the switch calls, and always
//! stopped by pid. The real docker CLI talks to them.

use std::ffi::{OsStr, OsString};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::wait_until;

/// Tag of the tiny image made from Debian's busybox-static.
pub const IMAGE: &str = "dtca-test/busybox:1";

/// A dockerd under test.
#[derive(Debug)]
pub struct Engine {
    _tmp: tempfile::TempDir,
    /// Its private directory.
    pub dir: PathBuf,
    /// daemon.json.
    pub config: PathBuf,
    /// Unix socket.
    pub socket: PathBuf,
    /// Pidfile dockerd writes.
    pub pidfile: PathBuf,
    /// dockerd's log.
    pub log: PathBuf,
    /// The restart script to give `--docker-restart`.
    pub restart: PathBuf,
    /// The plain address it starts on, `tcp://IP:PORT`.
    pub plain: String,
    /// Loopback IP it listens on.
    pub ip: String,
    /// Systemd unit dir (for the `-H` scenario), when used.
    pub systemd: Option<PathBuf>,
}

/// A free TCP port on `ip` (bound and released).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Engine {
    /// Starts an engine whose daemon.json lists the unix socket and plain TCP on `ip`
    /// (`"tls": false` so dockerd does not wait), as most fleets run it.
    pub fn start_plain(ip: &str) -> Engine {
        let e = Self::prepare(ip);
        e.write_config(serde_json::json!({
            "hosts": [format!("unix://{}", e.socket.display()), e.plain],
            "debug": false,
        }));
        let command = format!("dockerd --config-file {}", e.config.display());
        e.write_restart(&format!("exec {command}"));
        e.run_restart();
        e
    }

    /// Starts an engine the way the seed's systemd set-up does: the hosts are `-H` flags
    /// in `docker.service` (a unix socket standing in for `fd://`, which needs systemd's
    /// socket activation), the rest in daemon.json via `--config-file`. The restart script
    /// runs the effective `ExecStart` of the unit and its drop-ins, as systemd would.
    pub fn start_with_unit(ip: &str) -> Engine {
        let mut e = Self::prepare(ip);
        e.write_config(serde_json::json!({ "labels": ["seed=yes"] }));
        let systemd = e.dir.join("systemd");
        std::fs::create_dir_all(&systemd).unwrap();
        std::fs::write(
            systemd.join("docker.service"),
            format!(
                "[Unit]\nDescription=Docker Application Container Engine\n\n[Service]\nType=notify\n\
                 ExecStart=/usr/sbin/dockerd -H unix://{} -H {} --config-file {}\nExecReload=/bin/kill -s HUP $MAINPID\n\n[Install]\nWantedBy=multi-user.target\n",
                e.socket.display(),
                e.plain,
                e.config.display()
            ),
        )
        .unwrap();
        let effective = format!(
            "cmd=$(cat {unit} {dir}/docker.service.d/*.conf 2>/dev/null | grep '^ExecStart=' | tail -n1 | cut -d= -f2-)\n\
             [ -n \"$cmd\" ] || {{ echo 'no ExecStart' >&2; exit 1; }}\n\
             eval \"exec $cmd\"",
            unit = systemd.join("docker.service").display(),
            dir = systemd.display()
        );
        e.write_restart(&effective);
        e.systemd = Some(systemd);
        e.run_restart();
        e
    }

    /// Starts an engine whose daemon.json holds its own paths plus `extra`, started by its
    /// restart script with the shell line `start(&engine)` (which may read an environment
    /// file, as an init script does), and waits until it answers on its socket.
    pub fn start_custom(
        ip: &str,
        extra: serde_json::Value,
        start: impl Fn(&Engine) -> String,
    ) -> Engine {
        let e = Self::prepare(ip);
        e.write_config(extra);
        e.write_restart(&start(&e));
        e.run_restart();
        e
    }

    /// Writes daemon.json: this engine's own paths, no networking of its own, plain (no
    /// TLS), plus `extra`'s keys.
    fn write_config(&self, extra: serde_json::Value) {
        let mut config = serde_json::json!({
            "data-root": self.dir.join("data"),
            "exec-root": self.dir.join("exec"),
            "pidfile": self.pidfile,
            "iptables": false,
            "ip-masq": false,
            "bridge": "none",
            "log-level": "warn",
            "tls": false,
            "deprecated-key-path": self.dir.join("key.json"),
        });
        if let (Some(base), serde_json::Value::Object(more)) = (config.as_object_mut(), extra) {
            base.extend(more);
        }
        std::fs::write(&self.config, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    }

    fn prepare(ip: &str) -> Engine {
        let tmp = tempfile::Builder::new()
            .prefix("dtca-dk")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let port = free_port(ip);
        Engine {
            config: dir.join("daemon.json"),
            socket: dir.join("docker.sock"),
            pidfile: dir.join("docker.pid"),
            log: dir.join("dockerd.log"),
            restart: dir.join("restart.sh"),
            plain: format!("tcp://{ip}:{port}"),
            ip: ip.to_string(),
            systemd: None,
            dir,
            _tmp: tmp,
        }
    }

    /// The restart script: stops the running dockerd by its pidfile, waits for it to go,
    /// and starts `start` in the background (dockerd writes the new pidfile).
    fn write_restart(&self, start: &str) {
        // One restart at a time (a restart run by a killed agent may still be going when
        // the next one starts), and each returns only once the new dockerd has written
        // its pid, so the next one finds it and stops it first (or once the new one has
        // exited: a zombie child counts as gone).
        let script = format!(
            "#!/bin/sh\n\
             pidfile={pidfile}\n\
             exec 9>{lock}\n\
             flock 9\n\
             echo restart >>{count}\n\
             if [ -f \"$pidfile\" ]; then\n\
               pid=$(cat \"$pidfile\")\n\
               kill \"$pid\" 2>/dev/null\n\
               i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
               kill -0 \"$pid\" 2>/dev/null || rm -f \"$pidfile\"\n\
             fi\n\
             ( {start} ) 9>&- >>{log} 2>&1 </dev/null &\n\
             child=$!\n\
             alive() {{ s=$(cut -d')' -f2 /proc/$child/stat 2>/dev/null | cut -d' ' -f2); [ -n \"$s\" ] && [ \"$s\" != Z ]; }}\n\
             i=0; while [ ! -s \"$pidfile\" ] && alive && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
             exit 0\n",
            pidfile = self.pidfile.display(),
            lock = self.dir.join("restart.lock").display(),
            count = self.restarts_file().display(),
            log = self.log.display(),
        );
        std::fs::write(&self.restart, script).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&self.restart)
            .status()
            .unwrap();
    }

    fn run_restart(&self) {
        let status = Command::new(&self.restart).status().unwrap();
        assert!(status.success());
        assert!(
            wait_until(Duration::from_secs(30), || self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()),
            "dockerd did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// `ca-client enroll --docker` of this engine with `token` from the CA at `server`,
    /// into `creds`, with 127.0.0.1 as its only name, `listen` as the mutual-TLS address and
    /// `restart` as the restart command (the other [`Engine::switch_flags`]); to run, or to
    /// add flags to.
    pub fn enroll_command(
        &self,
        server: &str,
        token: &str,
        creds: &Path,
        listen: &str,
        restart: impl AsRef<OsStr>,
    ) -> Command {
        let mut cmd = enroll_docker();
        cmd.args(["--server", server, "--token", token, "--state-dir"])
            .arg(creds)
            .args(self.switch_flags(listen, restart));
        cmd
    }

    /// `ca-client enroll --docker` of this engine with `token` at `server`: `san` as a
    /// name too, its credentials in `client/` of its directory, TLS on `listen`, restarted
    /// by its own restart script.
    pub fn enroll(&self, server: &str, token: &str, san: &str, listen: &str) -> Output {
        let creds = self.dir.join("client");
        let mut cmd = self.enroll_command(server, token, &creds, listen, &self.restart);
        if san != "127.0.0.1" {
            cmd.args(["--san", san]);
        }
        cmd.output().unwrap()
    }

    /// What `--agent-start` is given to start `ca-client agent --out OUT` (with `extra`
    /// flags) in the background: its output appended to `agent.log` in this engine's
    /// directory, its pid written to `pid_file` (for the caller to stop it by).
    pub fn agent_start(&self, out: &Path, extra: &str, pid_file: &Path) -> String {
        format!(
            "{} agent --out {} {extra} >>{} 2>&1 & echo $! >{}",
            crate::bins::bin("ca-client").display(),
            out.display(),
            self.dir.join("agent.log").display(),
            pid_file.display()
        )
    }

    /// `ca-client enroll --docker --docker-mode MODE` of this engine into `out`, with
    /// 127.0.0.1 as its only name, `listen` as its address and `agent_start` to start the
    /// agent (an [`Engine::agent_start`]); a first switch adds `--server` and `--token`.
    pub fn mode_switch(&self, out: &Path, listen: &str, mode: &str, agent_start: &str) -> Command {
        let mut cmd = enroll_docker();
        cmd.args(["--docker-mode", mode, "--agent-start", agent_start])
            .arg("--out")
            .arg(out)
            .args(self.switch_flags(listen, &self.restart));
        cmd
    }

    /// The `ca-client enroll --docker` flags that point at this engine: its daemon.json,
    /// `tls/` in its directory, `listen`, `restart` as the restart command, and no systemd
    /// unit.
    pub fn switch_flags(&self, listen: &str, restart: impl AsRef<OsStr>) -> Vec<OsString> {
        vec![
            "--daemon-json".into(),
            self.config.clone().into(),
            "--docker-tls-dir".into(),
            self.dir.join("tls").into(),
            "--docker-listen".into(),
            listen.into(),
            "--docker-restart".into(),
            restart.as_ref().to_owned(),
            "--systemd-dir".into(),
            self.dir.join("none").into(),
        ]
    }

    /// `docker -H unix://<socket> <args>`.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .output()
            .unwrap()
    }

    /// `docker` over mutual TLS at `host` with the credentials in `certs`
    /// (ca.pem, cert.pem, key.pem).
    pub fn docker_tls(&self, host: &str, certs: &Path, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("--tlsverify")
            .arg("-H")
            .arg(host)
            .arg("--tlscacert")
            .arg(certs.join("ca.pem"))
            .arg("--tlscert")
            .arg(certs.join("cert.pem"))
            .arg("--tlskey")
            .arg(certs.join("key.pem"))
            .args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .output()
            .unwrap()
    }

    /// Makes a docker context `name` for `host` with the client bundle in `certs`, in this
    /// engine's CLI config.
    pub fn context(&self, name: &str, host: &str, certs: &Path) {
        let spec = format!(
            "host={host},ca={},cert={},key={}",
            certs.join("ca.pem").display(),
            certs.join("cert.pem").display(),
            certs.join("key.pem").display()
        );
        let out = self
            .cli("")
            .args(["context", "create", name, "--docker", &spec])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker context create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker --context <context>` as a command to finish (arguments, stdin) and run.
    pub fn cli(&self, context: &str) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            // No buildx here: the classic builder, said explicitly.
            .env("DOCKER_BUILDKIT", "0");
        if !context.is_empty() {
            cmd.arg("--context").arg(context);
        }
        cmd
    }

    /// Imports the busybox image (no registry is reachable: never pull).
    pub fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is installed");
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "cat", "echo", "ls"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        assert!(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap()
                .success()
        );
        let out = self.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn restarts_file(&self) -> PathBuf {
        self.dir.join("restarts")
    }

    /// How many times the restart script has run (every restart, by anyone).
    pub fn restarts(&self) -> usize {
        std::fs::read_to_string(self.restarts_file())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The running dockerd's pid.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops every dockerd (and its containerd) started for this engine, by pid, and
    /// unmounts what a failed start may have left mounted.
    pub fn stop(&self) {
        // Containers first, while the engine still answers (their processes would
        // outlive a killed shim).
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // Swarm mode leaves a docker_gwbridge interface in the host's namespace.
        let swarm = self.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if String::from_utf8_lossy(&swarm.stdout).trim() == "active" {
            let _ = self.docker(&["swarm", "leave", "--force"]);
            let _ = self.docker(&["network", "rm", "docker_gwbridge"]);
        }
        for pid in self.pids() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let gone = wait_until(Duration::from_secs(20), || self.pids().is_empty());
        if !gone {
            for pid in self.pids() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            wait_until(Duration::from_secs(5), || self.pids().is_empty());
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let dir = self.dir.display().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }

    /// Pids of processes started for this engine: its dockerd (found by pidfile and by
    /// its config path on the command line) and the containerd it runs.
    fn pids(&self) -> Vec<i32> {
        let dir = self.dir.display().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours = (cmdline.contains("dockerd") || cmdline.contains("containerd"))
                && cmdline.contains(&dir);
            if ours {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `ca-client enroll --docker` with 127.0.0.1 as the only name: what every switch of a
/// test engine starts from.
fn enroll_docker() -> Command {
    let mut cmd = Command::new(crate::bins::bin("ca-client"));
    cmd.args([
        "enroll",
        "--docker",
        "--no-default-sans",
        "--san",
        "127.0.0.1",
    ]);
    cmd
}
