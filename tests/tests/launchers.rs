//! How the engine is started is asked of the running engine: its socket's peer pid,
//! /proc, the init system's traces. Real dockerd engines, started the ways init systems
//! start them (emulated under `DTCA_HOST_ROOT` where the real init system cannot run
//! here), real `ca-server` and `ca-client`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Timings of real processes are printed, measured on the wall clock.
#![allow(clippy::disallowed_types)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::cli::{expect_exit, operator, run, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::serve::{ServeProcess, init_insecure};

struct Ca {
    _tmp: tempfile::TempDir,
    state: PathBuf,
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

    fn uses(&self) -> String {
        text(&run(
            "ca-server",
            &["token", "list", "--state-dir", self.state.to_str().unwrap()],
        ))
    }
}

/// `ca-client enroll --docker` against `engine` (found through `DOCKER_HOST`), listening
/// on `listen`, with only `extra` flags beyond the server, token and credentials, and
/// `envs`.
fn enroll(
    ca: &Ca,
    engine: &Engine,
    out: &Path,
    listen: &str,
    extra: &[OsString],
    envs: &[(&str, OsString)],
) -> Output {
    let t = token(&ca.state, &["--role", "node"]);
    enroll_with(ca, engine, out, listen, &t, extra, envs)
}

/// The same with the token `t`.
fn enroll_with(
    ca: &Ca,
    engine: &Engine,
    out: &Path,
    listen: &str,
    t: &str,
    extra: &[OsString],
    envs: &[(&str, OsString)],
) -> Output {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args([
        "enroll",
        "--docker",
        "--server",
        &ca.serve.addr,
        "--token",
        t,
    ])
    .arg("--out")
    .arg(out)
    .args(["--san", &engine.ip, "--docker-listen", listen])
    .arg("--docker-tls-dir")
    .arg(engine.dir.join("tls"))
    .args(extra)
    .env("DOCKER_HOST", format!("unix://{}", engine.socket.display()))
    .env_remove("DTCA_HOST_ROOT");
    if !extra.iter().any(|a| a == "--docker-timeout") {
        cmd.args(["--docker-timeout", "20s"]);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn listen(engine: &Engine) -> String {
    format!("tcp://{}:{}", engine.ip, free_port(&engine.ip))
}

fn answers_operator(ca: &Ca, engine: &Engine, listen: &str) -> bool {
    let creds = operator(&ca.state, &ca.serve.addr, &engine.dir.join("operator"));
    let out = engine.docker_tls(listen, &creds, &["version"]);
    out.status.success()
}

fn hosts_of(config: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    v["hosts"]
        .as_array()
        .map(|a| a.iter().map(|h| h.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The report's case: systemd is not running here, Debian's docker.io unit (with
/// `-H fd://`) is installed, and dockerd runs from its own daemon.json. No
/// `--systemd-dir`, no `--docker-config`: the engine says which file it reads, and the
/// unit is left alone.
#[test]
fn without_systemd_the_installed_unit_is_ignored_and_the_engines_own_config_is_edited() {
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "this test needs a host where systemd is not running"
    );
    let unit = Path::new("/lib/systemd/system/docker.service");
    assert!(
        std::fs::read_to_string(unit).is_ok_and(|t| t.contains("fd://")),
        "this test needs docker.io's unit installed"
    );
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let l = listen(&engine);
    let out = enroll(
        &ca,
        &engine,
        &tmp.path().join("creds"),
        &l,
        &["--docker-restart".into(), engine.restart.clone().into()],
        &[],
    );
    assert!(out.status.success(), "switch: {}", text(&out));
    assert!(text(&out).contains("started by unknown"), "{}", text(&out));
    let hosts = hosts_of(&engine.config);
    assert!(!hosts.iter().any(|h| h.starts_with("fd://")), "{hosts:?}");
    assert!(hosts.contains(&l), "{hosts:?}");
    assert!(answers_operator(&ca, &engine, &l));
}

/// An engine nothing recognisable started, and no `--docker-restart`: refused before
/// the token is spent, naming the flag; nothing changed. The default restart command
/// (systemctl) is refused too where systemd does not run.
#[test]
fn an_unknown_launcher_is_refused_before_the_token_naming_the_flag() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let before = std::fs::read(&engine.config).unwrap();
    let uses = ca.uses();
    let creds = tmp.path().join("creds");
    let out = enroll(&ca, &engine, &creds, &listen(&engine), &[], &[]);
    expect_exit(&out, Reason::DockerLauncher);
    assert_eq!(out.status.code(), Some(46));
    assert!(
        text(&out).contains("--docker-restart") && text(&out).contains("nothing was spent"),
        "{}",
        text(&out)
    );
    let out = enroll(
        &ca,
        &engine,
        &creds,
        &listen(&engine),
        &[
            "--docker-restart".into(),
            "systemctl daemon-reload && systemctl restart docker".into(),
        ],
        &[],
    );
    expect_exit(&out, Reason::DockerLauncher);
    assert!(
        text(&out).contains("systemd is not running"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&engine.config).unwrap(), before);
    assert!(!creds.exists());
    assert_eq!(
        ca.uses().matches("0/1").count(),
        uses.matches("0/1").count() + 2,
        "a token was spent: {}",
        ca.uses()
    );
}

/// An init system emulated under a host root: its traces, its init script, its
/// environment file passing `-H` to dockerd, and a fake service command (logging how it
/// was called) that runs the engine's restart script.
struct Emulated {
    root: PathBuf,
    bin: PathBuf,
    env_file: PathBuf,
    calls: PathBuf,
}

fn emulate(
    engine: &Engine,
    traces: &[&str],
    env_file: &str,
    pidfile: &str,
    tool: &str,
) -> Emulated {
    let root = engine.dir.join("root");
    for dir in traces {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/init.d")).unwrap();
    std::fs::write(root.join("etc/init.d/docker"), "#!/bin/sh\n").unwrap();
    let pid_link = root.join(pidfile.trim_start_matches('/'));
    std::fs::create_dir_all(pid_link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&engine.pidfile, &pid_link).unwrap();
    let bin = engine.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = engine.dir.join("calls");
    std::fs::write(
        bin.join(tool),
        format!(
            "#!/bin/sh\necho \"{tool} $*\" >> {}\nexec {}\n",
            calls.display(),
            engine.restart.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join(tool))
        .status()
        .unwrap();
    Emulated {
        env_file: root.join(env_file.trim_start_matches('/')),
        root,
        bin,
        calls,
    }
}

/// Starts an engine the way an init script does: `dockerd --config-file X $DOCKER_OPTS`
/// with `DOCKER_OPTS` from `env_file` (under the engine's own host root).
fn engine_from_env_file(env_file: &str) -> Engine {
    let env_file = env_file.to_string();
    Engine::start_custom("127.0.0.1", serde_json::json!({}), move |e| {
        let file = e.dir.join("root").join(env_file.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            format!(
                "# emulated\nDOCKER_OPTS=\"-H unix://{} -H {} --shutdown-timeout 5\"\n",
                e.socket.display(),
                e.plain
            ),
        )
        .unwrap();
        format!(
            ". {} && exec dockerd --config-file {} $DOCKER_OPTS",
            file.display(),
            e.config.display()
        )
    })
}

fn switch_emulated(
    kind: &str,
    traces: &[&str],
    env_file: &str,
    pidfile: &str,
    tool: &str,
    expect_call: &str,
) {
    let ca = Ca::start();
    let engine = engine_from_env_file(env_file);
    let emu = emulate(&engine, traces, env_file, pidfile, tool);
    let tmp = tempfile::tempdir().unwrap();
    let l = listen(&engine);
    let path = format!(
        "{}:{}",
        emu.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let envs = [
        ("DTCA_HOST_ROOT", emu.root.clone().into_os_string()),
        ("PATH", path.into()),
    ];
    // The plan names the environment file's edit and the launcher's restart command.
    let env_before = std::fs::read(&emu.env_file).unwrap();
    let dry = enroll(
        &ca,
        &engine,
        &tmp.path().join("creds"),
        &l,
        &["--dry-run".into()],
        &envs,
    );
    assert!(dry.status.success(), "{kind} dry run: {}", text(&dry));
    let plan = text(&dry);
    assert!(
        plan.contains(&format!("edit {}:", emu.env_file.display()))
            && plan.contains(&format!("restart:    `{}`", expect_call)),
        "{kind}: {plan}"
    );
    assert_eq!(std::fs::read(&emu.env_file).unwrap(), env_before);
    let out = enroll(&ca, &engine, &tmp.path().join("creds"), &l, &[], &envs);
    assert!(out.status.success(), "{kind}: {}", text(&out));
    assert!(
        text(&out).contains(&format!("started by {kind}")),
        "{}",
        text(&out)
    );
    let calls = std::fs::read_to_string(&emu.calls).unwrap_or_default();
    assert!(
        calls.contains(expect_call),
        "{kind}: restart calls {calls:?}"
    );
    let env = std::fs::read_to_string(&emu.env_file).unwrap();
    assert!(!env.contains("-H"), "{kind}: {env}");
    assert!(env.contains("--shutdown-timeout 5"), "{kind}: {env}");
    let hosts = hosts_of(&engine.config);
    assert!(hosts.contains(&l), "{hosts:?}");
    assert!(
        !emu.root.join("etc/systemd").exists(),
        "{kind}: a systemd drop-in was written"
    );
    assert!(answers_operator(&ca, &engine, &l), "{kind}");
}

#[test]
fn an_openrc_engine_has_its_conf_d_file_edited_and_is_restarted_with_rc_service() {
    switch_emulated(
        "OpenRC",
        &["run/openrc"],
        "/etc/conf.d/docker",
        "/run/docker.pid",
        "rc-service",
        "rc-service docker restart",
    );
}

#[test]
fn a_sysvinit_engine_has_its_default_file_edited_and_is_restarted_with_service() {
    switch_emulated(
        "sysvinit",
        &[],
        "/etc/default/docker",
        "/var/run/docker-ssd.pid",
        "service",
        "service docker restart",
    );
}

/// `-H` on the command line of an engine nothing recognisable started: where the flag
/// is set cannot be told, so the switch is refused before the token.
#[test]
fn h_flags_of_an_unknown_launcher_are_refused_before_the_token() {
    let ca = Ca::start();
    let engine = engine_from_env_file("/etc/elsewhere");
    let tmp = tempfile::tempdir().unwrap();
    let out = enroll(
        &ca,
        &engine,
        &tmp.path().join("creds"),
        &listen(&engine),
        &["--docker-restart".into(), engine.restart.clone().into()],
        &[],
    );
    expect_exit(&out, Reason::DockerLauncher);
    assert!(text(&out).contains("-H unix://"), "{}", text(&out));
    assert!(ca.uses().contains("0/1"), "{}", ca.uses());
}

/// A dockerd that exits at start (its new port is taken by another program, which the
/// switch cannot see in advance for a host name) is noticed by its missing process and
/// socket, not at the 60 s verify timeout; the rollback message quotes what dockerd
/// printed. The time it took is printed (see BENCHMARKS.md), not asserted tightly.
#[test]
fn a_dockerd_that_dies_at_start_is_rolled_back_long_before_the_timeout() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let before = std::fs::read(&engine.config).unwrap();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = enroll(
        &ca,
        &engine,
        &tmp.path().join("creds"),
        &format!("tcp://localhost:{port}"),
        &[
            "--docker-restart".into(),
            engine.restart.clone().into(),
            "--docker-timeout".into(),
            "60s".into(),
        ],
        &[],
    );
    let took = started.elapsed();
    println!(
        "BENCH dies-at-start rollback: whole enroll --docker took {:.2} s (timeout 60 s)",
        took.as_secs_f64()
    );
    expect_exit(&out, Reason::DockerSwitch);
    let message = text(&out);
    assert!(
        message.contains("dockerd is not running after the restart"),
        "{message}"
    );
    assert!(
        message.contains("address already in use"),
        "dockerd's own line is not quoted: {message}"
    );
    assert!(
        message.contains("restored the previous configuration"),
        "{message}"
    );
    assert!(
        took < std::time::Duration::from_secs(60),
        "waited for the timeout: {took:?}"
    );
    assert_eq!(std::fs::read(&engine.config).unwrap(), before);
    assert!(engine.docker(&["version"]).status.success());
    drop(squatter);
}

/// `--dry-run` prints the plan and changes nothing: daemon.json byte-identical, no
/// credential or TLS directory made, the engine not restarted, the token unspent. The
/// real switch with the same token then writes exactly the daemon.json the plan showed.
#[test]
fn a_dry_run_changes_nothing_spends_nothing_and_plans_what_the_switch_does() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let before = std::fs::read(&engine.config).unwrap();
    let pid = engine.pid();
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    let l = listen(&engine);
    let t = token(&ca.state, &["--role", "node"]);
    let flags: Vec<OsString> = vec!["--docker-restart".into(), engine.restart.clone().into()];
    let mut dry_flags = flags.clone();
    dry_flags.push("--dry-run".into());
    let dry = enroll_with(&ca, &engine, &creds, &l, &t, &dry_flags, &[]);
    assert!(dry.status.success(), "dry run: {}", text(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout).to_string();
    println!("{plan}");
    for want in [
        "nothing was changed and no token was spent",
        "launcher:   unknown",
        "names:",
        &format!("edit {}:", engine.config.display()),
        "restart:",
        "then check:",
    ] {
        assert!(
            plan.contains(want),
            "{want:?} missing from the plan: {plan}"
        );
    }
    assert_eq!(std::fs::read(&engine.config).unwrap(), before);
    assert!(!creds.exists(), "the dry run made the credential directory");
    assert!(
        !engine.dir.join("tls").exists(),
        "the dry run made the TLS directory"
    );
    assert_eq!(engine.pid(), pid, "the dry run restarted the engine");
    assert!(ca.uses().contains("0/1"), "{}", ca.uses());

    // The daemon.json the plan shows: its kept and added lines.
    let header = format!("edit {}:", engine.config.display());
    let planned: Vec<String> = plan
        .lines()
        .skip_while(|line| !line.ends_with(&header))
        .skip(1)
        .take_while(|line| line.starts_with("    "))
        .filter_map(|line| {
            line.strip_prefix("      ")
                .or_else(|| line.strip_prefix("    + "))
                .map(str::to_string)
        })
        .collect();
    assert!(!planned.is_empty(), "{plan}");
    let real = enroll_with(&ca, &engine, &creds, &l, &t, &flags, &[]);
    assert!(real.status.success(), "switch: {}", text(&real));
    let written: Vec<String> = std::fs::read_to_string(&engine.config)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        written, planned,
        "the switch wrote another daemon.json than planned"
    );
    assert!(answers_operator(&ca, &engine, &l));
}

/// A cgroup named `docker.service` in the `name=systemd` hierarchy (as systemd tracks its
/// services), removed when dropped (after the engine in it has stopped).
struct SystemdCgroup(PathBuf);

impl SystemdCgroup {
    fn with(pids: &[i32]) -> Option<SystemdCgroup> {
        let base = Path::new("/sys/fs/cgroup/systemd");
        if !base.is_dir() {
            return None;
        }
        let dir = base.join(format!("dtca-test-{}", std::process::id()));
        let service = dir.join("docker.service");
        std::fs::create_dir_all(&service).ok()?;
        for pid in pids {
            std::fs::write(service.join("cgroup.procs"), pid.to_string()).ok()?;
        }
        Some(SystemdCgroup(dir))
    }
}

impl Drop for SystemdCgroup {
    fn drop(&mut self) {
        let service = self.0.join("docker.service");
        let _ = dtca_tests::process::wait_until(std::time::Duration::from_secs(20), || {
            std::fs::read_to_string(service.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
        });
        let _ = std::fs::remove_dir(&service);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// systemd runs the engine (emulated: `/run/systemd/system` under the host root, the
/// unit with `-H` flags in its unit directory, dockerd in a `docker.service` cgroup, a
/// `systemctl` that runs the unit's effective ExecStart): with no `--systemd-dir` and
/// no `--docker-restart`, the unit is read, a drop-in clears `-H`, and the default
/// systemctl restart is used.
#[test]
fn a_systemd_engine_is_found_by_its_cgroup_and_switched_with_a_drop_in_and_systemctl() {
    let ca = Ca::start();
    let engine = Engine::start_with_unit("127.0.0.1");
    let Some(_cgroup) = SystemdCgroup::with(&[engine.pid().unwrap()]) else {
        eprintln!("skipped: no writable name=systemd cgroup hierarchy here");
        return;
    };
    let root = engine.dir.join("root");
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd")).unwrap();
    std::os::unix::fs::symlink(
        engine.systemd.as_ref().unwrap(),
        root.join("etc/systemd/system"),
    )
    .unwrap();
    let bin = engine.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = engine.dir.join("calls");
    std::fs::write(
        bin.join("systemctl"),
        format!(
            "#!/bin/sh\necho \"systemctl $*\" >> {}\n[ \"$1\" = restart ] && exec {}\nexit 0\n",
            calls.display(),
            engine.restart.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("systemctl"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = tempfile::tempdir().unwrap();
    let l = listen(&engine);
    let out = enroll(
        &ca,
        &engine,
        &tmp.path().join("creds"),
        &l,
        &[],
        &[
            ("DTCA_HOST_ROOT", root.clone().into()),
            ("PATH", path.into()),
        ],
    );
    assert!(out.status.success(), "systemd: {}", text(&out));
    assert!(text(&out).contains("started by systemd"), "{}", text(&out));
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        calls.contains("systemctl daemon-reload") && calls.contains("systemctl restart docker"),
        "{calls:?}"
    );
    let dropin = engine
        .systemd
        .as_ref()
        .unwrap()
        .join("docker.service.d/zz-dtca-tls.conf");
    let dropin = std::fs::read_to_string(&dropin).unwrap();
    let exec = dropin.lines().last().unwrap();
    assert!(
        exec.starts_with("ExecStart=/") && !exec.contains("-H"),
        "{dropin}"
    );
    assert!(hosts_of(&engine.config).contains(&l));
    assert!(answers_operator(&ca, &engine, &l));
}
