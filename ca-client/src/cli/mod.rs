//! The `ca-client` command line: flags (each with an environment variable), the config
//! file, and the commands. `main.rs` only parses and calls [`run`].

mod enroll_cmd;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
pub use dtca_common::cli::LogFormat;
use dtca_pki::duration;

use crate::enroll;
use crate::error::ClientError;
pub use settings::FileConfig;

/// `ca-client`: enroll this machine with a dtca CA and keep its certificates fresh.
#[derive(Debug, Parser)]
#[command(name = "ca-client", version, about = "Node agent and operator CLI for the dtca certificate authority", after_help = dtca_common::cli::exit_codes())]
pub struct Cli {
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    /// [default: /etc/dtca/ca-client.toml when it exists]
    #[arg(long, env = "DTCA_CLIENT_CONFIG", global = true)]
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
    /// Print DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH exports for a node.
    Env(EnvArgs),
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
}

/// `env` flags.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Node (docker context) name, as `login` made it.
    pub node: String,
}

/// Where the credentials live.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// Credential directory (ca.pem, cert.pem, key.pem, client.toml). [default: /var/lib/dtca-client]
    #[arg(long, env = "DTCA_OUT")]
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
    /// daemon.json to edit. [default: the unit's --config-file, else /etc/docker/daemon.json]
    #[arg(long, env = "DTCA_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
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
    #[command(flatten)]
    pub out: OutArgs,
}

/// `check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Warn (exit 1) when a certificate expires within this. [default: 7d]
    #[arg(long, env = "DTCA_WARN_WITHIN")]
    pub warn_within: Option<String>,
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
    #[arg(long, env = "DTCA_WARN_WITHIN")]
    pub warn_within: Option<String>,
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
    #[command(flatten)]
    pub out: OutArgs,
}

/// Runs a parsed command line; returns the exit code for commands that report a state.
///
/// # Errors
/// [`ClientError`], whose reason decides the exit code.
pub async fn run(cli: Cli) -> Result<ExitCode, ClientError> {
    let file = settings::load_file(cli.config.as_deref())?;
    dtca_common::cli::init_logging(
        cli.log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
    );
    match cli.command {
        Command::Enroll(args) => enroll_cmd::enroll_command(*args, &file).await,
        Command::Renew(args) => renew_command(args, &file).await,
        Command::Agent(args) => agent_command(args, &file).await,
        Command::Check(args) => {
            let out = settings::out_dir(&args.out, &file);
            let warn = settings::duration_or(
                args.warn_within.as_deref(),
                file.warn_within.as_deref(),
                "7d",
                "--warn-within",
            )?;
            Ok(crate::status::check(&out, warn, time::OffsetDateTime::now_utc()).exit_code())
        }
        Command::Login(args) => login_command(args, &file).await,
        Command::Doctor(args) => {
            let out = settings::out_dir(&args.out, &file);
            let warn = settings::duration_or(
                args.warn_within.as_deref(),
                file.warn_within.as_deref(),
                "7d",
                "--warn-within",
            )?;
            let server = args.server.or_else(|| file.server.clone());
            let report = crate::doctor::doctor(&out, server.as_deref(), warn).await;
            if args.json || file.json == Some(true) {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.text());
            }
            Ok(report.exit_code())
        }
        Command::Env(args) => {
            print!(
                "{}",
                crate::operator::env(&crate::contexts::docker_config_dir(), &args.node)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => {
            let json = args.json || file.json == Some(true);
            let out = settings::out_dir(&args.out, &file);
            crate::guard::audit::reader::print(&out, args.follow, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let json = args.json || file.json == Some(true);
            crate::status::status(&settings::out_dir(&args.out, &file), json).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn login_command(args: LoginArgs, file: &FileConfig) -> Result<ExitCode, ClientError> {
    let docker_config = crate::contexts::docker_config_dir();
    let renew = args.renew || file.renew == Some(true);
    let report = if renew {
        crate::operator::renew(
            &docker_config,
            args.cluster.as_deref().or(file.cluster.as_deref()),
            args.server.as_deref().or(file.server.as_deref()),
        )
        .await?
    } else {
        let opts = settings::login_options(&args, file, docker_config)?;
        crate::operator::login(&opts).await?
    };
    let info = &report.info;
    let now = time::OffsetDateTime::now_utc();
    println!(
        "{} as {} until {} ({} left)",
        if renew { "renewed login" } else { "logged in" },
        info.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
        duration::timestamp(info.not_after),
        duration::human(info.seconds_left(now))
    );
    if info
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Operator)
    {
        println!("  access: {}", access_note(info.access));
    }
    println!(
        "  credentials: {}/{{ca.pem,cert.pem,key.pem}}",
        report.dir.display()
    );
    for (name, endpoint, outcome) in &report.contexts {
        let what = match outcome {
            crate::contexts::Outcome::Created => "created".to_string(),
            crate::contexts::Outcome::Updated => "updated".to_string(),
            crate::contexts::Outcome::SkippedForeign(None) => {
                "SKIPPED (a context of that name exists and is not dtca's)".to_string()
            }
            crate::contexts::Outcome::SkippedForeign(Some(other)) => {
                format!("SKIPPED (a context of that name belongs to dtca cluster {other:?})")
            }
        };
        println!("  context {name:<24} {endpoint:<32} {what}");
    }
    for name in &report.unreachable {
        println!(
            "  node {name}: no engine address reported yet (is it switched with `enroll --docker`?)"
        );
    }
    if let Some((name, _, _)) = report
        .contexts
        .iter()
        .find(|(_, _, o)| !matches!(o, crate::contexts::Outcome::SkippedForeign(_)))
    {
        println!("Try: docker --context {name} ps");
    }
    if info
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Admin)
    {
        println!(
            "Admin: ca-server cert list --admin-dir {} --server <ca>",
            report.dir.display()
        );
    }
    println!("Renew before it expires: ca-client login --renew");
    Ok(ExitCode::SUCCESS)
}

/// An operator's access level, and what it means where.
pub(crate) fn access_note(access: dtca_pki::access::Access) -> String {
    match access {
        dtca_pki::access::Access::Full => "full".to_string(),
        level => format!(
            "{level} (guard engines allow reads only: lists, inspect, logs, events; native engines refuse this certificate)"
        ),
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
    crate::agent::run(opts, dtca_common::cli::wait_for_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn renew_command(args: RenewArgs, file: &FileConfig) -> Result<ExitCode, ClientError> {
    let out = settings::out_dir(&args.out, file);
    let server = args.server.or_else(|| file.server.clone());
    let obtained = enroll::renew(&out, server.as_deref()).await?;
    enroll_cmd::report("renewed", &out, &obtained);
    Ok(ExitCode::SUCCESS)
}
