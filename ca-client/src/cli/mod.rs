//! The `ca-client` command line: flags (each with an environment variable), the config
//! file, and the commands. `main.rs` only parses and calls [`run`].

mod enroll_cmd;
mod node_cmd;
mod operator_cmd;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
pub use dtca_common::cli::LogFormat;

use crate::error::ClientError;
pub use settings::FileConfig;

/// `ca-client`: enroll this machine with a dtca CA and keep its certificates fresh.
#[derive(Debug, Parser)]
#[command(name = "ca-client", version, about = "Node agent and operator CLI for the dtca certificate authority", after_help = dtca_common::cli::exit_codes())]
pub struct Cli {
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    /// [default: /etc/dtca/ca-client.toml when it exists]
    #[arg(long, env = "DTCA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "DTCA_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll with a join token: key generated here, certificate from the CA.
    Enroll(Box<EnrollArgs>),
    /// Renew the current certificate once (new key, same identity).
    Renew(RenewArgs),
    /// Keep the certificate fresh: renew at 50-70 % of its life, rotate it in the engine.
    Agent(AgentArgs),
    /// Exit 0 when local certificates are fine, 1 expiring, 2 expired or broken, 3 missing.
    Check(CheckArgs),
    /// Show local certificates, expiry, engine mode, last and next renewal.
    Status(StatusArgs),
    /// Check this node read-only: engine, launcher and mode, plain TCP left, names, expiry,
    /// CA, clock, revocation, agent. Each OK/WARN/FAIL with its fix; exit 0 OK, 1 a
    /// warning, 2 a failure, 3 no enrollment.
    Doctor(DoctorArgs),
    /// Operators: get a short-lived client certificate and a docker context per node.
    Login(LoginArgs),
    /// Print DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH exports for a node (no
    /// node: list them; --unset: the lines that undo them).
    Env(EnvArgs),
    /// Operators: the CA's node inventory (name, engine address, mode, serial, expiry).
    Nodes(NodesArgs),
    /// Show the guard's per-request audit log on this node, oldest first.
    Audit(AuditArgs),
}

/// `audit` flags.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Keep printing requests as they come (across the log's rotations).
    #[arg(long, short = 'f', env = "DTCA_FOLLOW")]
    pub follow: bool,
    /// Print each record as its JSON line.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `login` flags.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// CA address, HOST:PORT. [default with --renew: the one logged in with]
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    /// Operator or admin join token.
    #[arg(long, env = "DTCA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "DTCA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Identity name to ask for. [default: $USER]
    #[arg(long, env = "DTCA_NAME")]
    pub name: Option<String>,
    /// Also make a context for this engine: tcp://HOST:PORT, named after the host (and
    /// the port, unless 2376), or NAME=tcp://HOST:PORT. Repeatable.
    #[arg(long = "host", env = "DTCA_HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Renew the current login with its certificate instead of a token.
    #[arg(long, env = "DTCA_RENEW")]
    pub renew: bool,
    /// Which cluster to renew, when logged in to several.
    #[arg(long, env = "DTCA_CLUSTER")]
    pub cluster: Option<String>,
    /// Key algorithm: p256 or ed25519. [default: p256]
    #[arg(long, env = "DTCA_KEY_TYPE")]
    pub key_type: Option<String>,
    /// Stay in the foreground and keep the login fresh: renew at the usual point of its
    /// life (50-70 %), retry with backoff, until SIGINT or SIGTERM. With a token, log in
    /// first; without one, renew the current login.
    #[arg(long, env = "DTCA_WATCH")]
    pub watch: bool,
    /// Longest wait between retries under --watch. [default: 5m]
    #[arg(long, env = "DTCA_RETRY_CAP")]
    pub retry_cap: Option<String>,
    /// Print the result as JSON (under --watch: one line per renewal).
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
}

/// `env` flags.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Node (docker context) name, as `login` made it. [default: list them]
    pub node: Option<String>,
    /// Print the shell lines that unset what `env NODE` sets.
    #[arg(long, conflicts_with = "node")]
    pub unset: bool,
    /// Print JSON.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
}

/// `nodes` flags.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// CA address. [default: the one logged in with]
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    /// Which cluster's login to ask with, when logged in to several.
    #[arg(long, env = "DTCA_CLUSTER")]
    pub cluster: Option<String>,
    /// Print JSON.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
}

/// Where the credentials live.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// The client's state directory: its credentials (ca.pem, cert.pem, key.pem) and
    /// client.toml. [default: /var/lib/dtca-client]
    #[arg(long = "state-dir", alias = "out", env = "DTCA_STATE_DIR")]
    pub out: Option<PathBuf>,
}

/// `enroll` flags.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// CA address, HOST:PORT.
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    /// Join token (DTCA-1-...). Prefer --token-file or DTCA_TOKEN: arguments are visible in `ps`.
    #[arg(long, env = "DTCA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "DTCA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Identity name to ask for. [default: this host's name]
    #[arg(long, env = "DTCA_NAME")]
    pub name: Option<String>,
    /// Extra DNS name or IP address for the certificate. Repeatable.
    #[arg(long = "san", env = "DTCA_SAN", value_delimiter = ',')]
    pub sans: Vec<String>,
    /// Do not add this host's detected names and addresses; only --san.
    #[arg(long, env = "DTCA_NO_DEFAULT_SANS")]
    pub no_default_sans: bool,
    /// Key algorithm: p256 or ed25519. [default: p256]
    #[arg(long, env = "DTCA_KEY_TYPE")]
    pub key_type: Option<String>,
    /// Print the result as JSON (progress and notes go to stderr).
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
    #[command(flatten)]
    pub out: OutArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// The docker switch (`enroll --docker`).
#[derive(Debug, Args)]
pub struct DockerArgs {
    /// Also install the certificate into dockerd and switch it from plain TCP to mutual TLS.
    #[arg(long, env = "DTCA_DOCKER")]
    pub docker: bool,
    /// The engine's daemon.json to edit. [default: the running dockerd's --config-file,
    /// else /etc/docker/daemon.json]
    #[arg(
        long = "daemon-json",
        alias = "docker-config",
        env = "DTCA_DAEMON_JSON"
    )]
    pub daemon_json: Option<PathBuf>,
    /// Where dockerd's TLS files go. [default: /etc/docker/tls]
    #[arg(long, env = "DTCA_DOCKER_TLS_DIR")]
    pub docker_tls_dir: Option<PathBuf>,
    /// The mutual-TLS address. [default: tcp://0.0.0.0:2376]
    #[arg(long, env = "DTCA_DOCKER_LISTEN")]
    pub docker_listen: Option<String>,
    /// Command that restarts the engine. [default: the launcher's own, found from the running
    /// engine: systemd `systemctl daemon-reload && systemctl restart docker`, OpenRC
    /// `rc-service docker restart`, sysvinit `service docker restart`, snap `snap restart
    /// docker`, rootless `systemctl --user restart docker`; required when the launcher is
    /// unknown]
    #[arg(long, env = "DTCA_DOCKER_RESTART")]
    pub docker_restart: Option<String>,
    /// Address published for operators (tcp://HOST:PORT). [default: from --docker-listen and the certificate]
    #[arg(long, env = "DTCA_DOCKER_ADVERTISE")]
    pub docker_advertise: Option<String>,
    /// How long to wait for the engine after a restart. [default: 60s]
    #[arg(long, env = "DTCA_DOCKER_TIMEOUT")]
    pub docker_timeout: Option<String>,
    /// Systemd unit directory to read docker.service from (repeatable; the first is where
    /// the drop-in goes). Unit files are read only when systemd runs the engine; given
    /// explicitly with a docker.service in it, the engine is taken as systemd's.
    /// [default: /etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system]
    #[arg(long = "systemd-dir", env = "DTCA_SYSTEMD_DIR", value_delimiter = ',')]
    pub systemd_dirs: Vec<PathBuf>,
    /// Who serves mutual TLS on --docker-listen: `native`, dockerd itself (a new
    /// certificate restarts it), or `guard`, the agent in front of dockerd's unix socket
    /// (rotation never restarts dockerd, revocations apply in seconds, access levels are
    /// enforced). On a switched node, moves it to that mode. [default: native, or the
    /// node's current mode]
    #[arg(long, env = "DTCA_DOCKER_MODE", value_enum)]
    pub docker_mode: Option<crate::state::EngineMode>,
    /// Guard mode: command that starts `ca-client agent` where systemd does not run it
    /// (it must return once the agent runs in the background). [default: systemctl
    /// enable + restart dtca-agent.service]
    #[arg(long, env = "DTCA_AGENT_START")]
    pub agent_start: Option<String>,
    /// Switch again even when already switched: renew (or, with a token, enroll afresh)
    /// and redo every step.
    #[arg(long, env = "DTCA_FORCE")]
    pub force: bool,
    /// Print the plan of the switch (launcher, names, each file's diff, restart command,
    /// checks) and change nothing: no token is spent, the CA is only asked what it allows.
    #[arg(long, env = "DTCA_DRY_RUN")]
    pub dry_run: bool,
}

/// `agent` flags.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// CA address. [default: the one this client enrolled with]
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    /// Renew once right away, then on schedule.
    #[arg(long, env = "DTCA_RENEW_NOW")]
    pub renew_now: bool,
    /// Longest wait between retries while the CA is unreachable. [default: 10m]
    #[arg(long, env = "DTCA_RETRY_CAP")]
    pub retry_cap: Option<String>,
    /// First wait after a failed renewal. [default: 5s]
    #[arg(long, env = "DTCA_RETRY_BASE")]
    pub retry_base: Option<String>,
    /// How long to wait for the engine after a restart. [default: 60s]
    #[arg(long, env = "DTCA_DOCKER_TIMEOUT")]
    pub docker_timeout: Option<String>,
    /// How long a rotation waits for a restart slot while the CA cannot be reached; then
    /// it is retried later. Never past the point where the certificate in service would
    /// expire: there the engine restarts without a slot (logged and reported). [default: 30m]
    #[arg(long, env = "DTCA_RESTART_SLOT_WAIT")]
    pub restart_slot_wait: Option<String>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Warn (exit 1) when a certificate expires within this. [default: 7d]
    #[arg(
        long = "expiring-within",
        alias = "warn-within",
        env = "DTCA_EXPIRING_WITHIN"
    )]
    pub expiring_within: Option<String>,
    /// Print JSON.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `doctor` flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
    /// Warn when a certificate expires within this. [default: 7d]
    #[arg(
        long = "expiring-within",
        alias = "warn-within",
        env = "DTCA_EXPIRING_WITHIN"
    )]
    pub expiring_within: Option<String>,
    /// CA address. [default: the one this client enrolled with]
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `renew` flags.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// CA address. [default: the one this client enrolled with]
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    /// How long to wait for the engine after a restart (a switched node), or for the
    /// running agent to finish the renewal it is asked for. [default: 60s]
    #[arg(long, env = "DTCA_DOCKER_TIMEOUT")]
    pub docker_timeout: Option<String>,
    /// Print JSON.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Runs a parsed command line; returns the exit code for commands that report a state.
///
/// # Errors
/// [`ClientError`], whose reason decides the exit code.
pub async fn run(cli: Cli) -> Result<ExitCode, ClientError> {
    // DTCA_CLIENT_CONFIG is the variable's old name (DTCA_CONFIG in both binaries now).
    let config = cli
        .config
        .or_else(|| std::env::var_os("DTCA_CLIENT_CONFIG").map(PathBuf::from));
    let file = settings::load_file(config.as_deref())?;
    dtca_common::cli::init_logging(
        cli.log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
    );
    let json = |flag: bool| flag || file.json == Some(true);
    match cli.command {
        Command::Enroll(args) => enroll_cmd::enroll_command(*args, &file).await,
        Command::Renew(args) => node_cmd::renew_command(args, &file).await,
        Command::Agent(args) => agent_command(args, &file).await,
        Command::Check(args) => {
            let out = settings::out_dir(&args.out, &file);
            let within = settings::expiring_within(args.expiring_within.as_deref(), &file)?;
            let now = time::OffsetDateTime::now_utc();
            Ok(crate::status::check(&out, within, now, json(args.json)).exit_code())
        }
        Command::Login(args) => operator_cmd::login_command(args, &file).await,
        Command::Doctor(args) => {
            let out = settings::out_dir(&args.out, &file);
            let within = settings::expiring_within(args.expiring_within.as_deref(), &file)?;
            let server = args.server.or_else(|| file.server.clone());
            let report = crate::doctor::doctor(&out, server.as_deref(), within).await;
            if json(args.json) {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.text());
            }
            Ok(report.exit_code())
        }
        Command::Env(args) => operator_cmd::env_command(&args, json(args.json)),
        Command::Nodes(args) => operator_cmd::nodes_command(&args, &file, json(args.json)).await,
        Command::Audit(args) => {
            let out = settings::out_dir(&args.out, &file);
            crate::guard::audit::reader::print(&out, args.follow, json(args.json)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            crate::status::status(&settings::out_dir(&args.out, &file), json(args.json)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn agent_command(args: AgentArgs, file: &FileConfig) -> Result<ExitCode, ClientError> {
    let mut opts = crate::agent::AgentOptions::new(settings::out_dir(&args.out, file));
    opts.server = args.server.or_else(|| file.server.clone());
    opts.renew_now = args.renew_now || file.renew_now == Some(true);
    opts.retry_base = settings::duration_or(
        args.retry_base.as_deref(),
        file.retry_base.as_deref(),
        "5s",
        "--retry-base",
    )?;
    opts.retry_cap = settings::duration_or(
        args.retry_cap.as_deref(),
        file.retry_cap.as_deref(),
        "10m",
        "--retry-cap",
    )?;
    opts.docker_timeout = settings::duration_or(
        args.docker_timeout.as_deref(),
        file.docker_timeout.as_deref(),
        "60s",
        "--docker-timeout",
    )?;
    opts.restart_slot_wait = settings::duration_or(
        args.restart_slot_wait.as_deref(),
        file.restart_slot_wait.as_deref(),
        "30m",
        "--restart-slot-wait",
    )?;
    crate::agent::run(opts, dtca_common::cli::wait_for_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
