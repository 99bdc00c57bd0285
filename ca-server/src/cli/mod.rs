//! The `ca-server` command line: flags (each with an environment variable), the config
//! file, and the commands. `main.rs` only parses and calls [`run`].

mod admin;
mod admin_bundle;
mod ca;
mod fleet;
mod hint;
mod offline;
mod serve;
mod settings;
mod store;
mod target;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dtca_common::Reason;
pub use dtca_common::cli::LogFormat;

pub use settings::FileConfig;

/// `ca-server`: the dtca certificate authority.
#[derive(Debug, Parser)]
#[command(name = "ca-server", version, about = "Certificate authority and TLS provisioning for Docker engines", after_help = dtca_common::cli::exit_codes())]
pub struct Cli {
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    /// [default: /etc/dtca/ca-server.toml when it exists]
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
    /// Create the root and intermediate CA and an admin client bundle in the state dir.
    Init(InitArgs),
    /// Run the CA's gRPC server.
    Serve(ServeArgs),
    /// Join tokens (create prints the token on stdout).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Issued certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Show the newest audit log entries.
    Audit(AuditArgs),
    /// The CA's database.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The CA's own certificates: status, intermediate renewal, root rotation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Every enrolled node in one view: engine address, state, mode, expiry, last agent
    /// report (stale ones flagged), last error; then a summary line.
    Fleet(FleetArgs),
}

/// `fleet` flags.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Only nodes in this state: mtls, plain, failed, unhealthy, stale, unreported,
    /// expired, or expiring (within 7 days). Repeatable; the summary still counts every node.
    #[arg(long, env = "DTCA_STATE", value_delimiter = ',')]
    pub state: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Roots (digests, expiry), intermediates (active, prepared), the next switch,
    /// warnings, and during a root rotation where every node and operator stands.
    Status(AdminArgs),
    /// Prepare the next intermediate now, on the root's host, reading and writing the
    /// store directly (running servers pick it up within seconds). Only needed where no
    /// running server holds the root key: `serve` does it by itself otherwise.
    RotateIntermediate(RotateIntermediateArgs),
    /// Start a root rotation (a new root, cross-signed by the old one), or finish it.
    RotateRoot(RotateRootArgs),
}

/// `ca rotate-intermediate` flags.
#[derive(Debug, Args)]
pub struct RotateIntermediateArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// PostgreSQL URL of the replicas' shared database; the state dir's embedded store
    /// when absent.
    #[arg(long, env = "DTCA_DATABASE")]
    pub database: Option<String>,
}

/// `ca rotate-root` flags.
#[derive(Debug, Args)]
pub struct RotateRootArgs {
    /// Key algorithm of the new root: p256 or ed25519. [default: the old root's]
    #[arg(long, env = "DTCA_ROOT_KEY_TYPE", conflicts_with = "finish")]
    pub key_type: Option<String>,
    /// End the rotation under way: the old root leaves the trust bundle and certificates
    /// that chain only to it are refused. Refused while a node or operator lags.
    #[arg(long)]
    pub finish: bool,
    /// With --finish: even while nodes or operators lag (names them; they must re-enroll).
    #[arg(long, requires = "finish")]
    pub force: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where the CA keeps its files.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// State directory. [default: /var/lib/dtca]
    #[arg(long, env = "DTCA_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// How CA keys are protected.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// File holding the passphrase of the CA keys (or set DTCA_PASSPHRASE to the passphrase).
    #[arg(long, env = "DTCA_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Keep the CA keys unencrypted. Only for tests and throwaway CAs.
    #[arg(long, env = "DTCA_INSECURE_NO_PASSPHRASE")]
    pub insecure_no_passphrase: bool,
    /// Accept a passphrase file that group or others can read or write (refused
    /// otherwise, as ssh refuses a loose key).
    #[arg(long, env = "DTCA_INSECURE_PASSPHRASE_FILE_PERMISSIONS")]
    pub insecure_passphrase_file_permissions: bool,
}

/// `init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Cluster name, part of every identity (dtca://<cluster>/...). [default: default]
    #[arg(long, env = "DTCA_CLUSTER")]
    pub cluster: Option<String>,
    /// Key algorithm of the CA: p256 or ed25519. [default: p256]
    #[arg(long, env = "DTCA_KEY_TYPE")]
    pub key_type: Option<String>,
    /// Lifetime of the root CA (and of each root a rotation makes); at least twice the
    /// intermediate's. [default: 10y]
    #[arg(long, env = "DTCA_ROOT_TTL")]
    pub root_ttl: Option<String>,
    /// Lifetime of each intermediate CA; a leaf lives at most a third of it, and the CA
    /// makes the next one itself. Short values (10m) are legal. [default: 1y]
    #[arg(long, env = "DTCA_INTERMEDIATE_TTL")]
    pub intermediate_ttl: Option<String>,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Address to listen on. [default: 0.0.0.0:8443]
    #[arg(long, env = "DTCA_LISTEN")]
    pub listen: Option<String>,
    /// The address clients use to reach this CA, HOST:PORT (a load balancer's or DNS
    /// name); recorded in the state dir, printed in the commands `token create` shows.
    /// [default: the listen address; this host's name for a wildcard one]
    #[arg(long, env = "DTCA_ADVERTISE")]
    pub advertise: Option<String>,
    /// PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DBNAME) shared by every replica;
    /// the embedded database in the state dir when absent. Fill it with `store migrate`.
    #[arg(long, env = "DTCA_DATABASE")]
    pub database: Option<String>,
    /// Address for Prometheus metrics (GET /metrics); off when absent.
    #[arg(long, env = "DTCA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Extra DNS name or IP for the server certificate (a load balancer's name). Repeatable.
    #[arg(long = "san", env = "DTCA_SAN", value_delimiter = ',')]
    pub sans: Vec<String>,
    /// How long after expiry a node may still renew with its old certificate. [default: 0s, never]
    #[arg(long, env = "DTCA_RENEW_GRACE")]
    pub renew_grace: Option<String>,
    /// Most client connections open at once; more wait in the kernel's backlog. Lowered at
    /// start to what the open-file limit leaves room for. [default: 20000]
    #[arg(long, env = "DTCA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one address (an IPv6 /64) that have not authenticated yet:
    /// in the TLS handshake, without a client certificate of this CA, or before their
    /// first request; more are closed at once. Agents holding their channel do not count.
    /// [default: 256]
    #[arg(long, env = "DTCA_MAX_UNAUTHENTICATED_PER_ADDRESS")]
    pub max_unauthenticated_per_address: Option<usize>,
    /// How long a client may take for the TLS handshake, and again from there to its
    /// first request. [default: 10s]
    #[arg(long, env = "DTCA_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<String>,
    /// How long a connection with a client certificate may stay with no call in flight
    /// before it is closed (clients reconnect when they need to). [default: 5m]
    #[arg(long, env = "DTCA_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Space the embedded store keeps for itself on its file system: a file of this size
    /// (DIR/store.db.reserve) it gives back to finish a checkpoint when the disk fills;
    /// writes are refused ("store-full") while less than a quarter of it is free, and
    /// resume by themselves once there is room. 0 keeps none. [default: 64MiB]
    #[arg(long, env = "DTCA_STORE_RESERVE")]
    pub store_reserve: Option<String>,
    /// Most native-mode engines restarting at once for a certificate rotation (each
    /// agent asks for a slot first); managers of one swarm restart one at a time
    /// whatever this says. [default: 2]
    #[arg(long, env = "DTCA_MAX_CONCURRENT_RESTARTS")]
    pub max_concurrent_restarts: Option<u32>,
    /// How long a restart slot lasts unless its agent renews it (it does, every third
    /// of it, while it restarts): an agent that vanished holds its slot no longer.
    /// [default: 90s]
    #[arg(long, env = "DTCA_RESTART_LEASE")]
    pub restart_lease: Option<String>,
    /// Address for the read-only fleet web page (e.g. 127.0.0.1:8080); off when absent.
    /// It has no login: keep it on loopback or a trusted network (README, "Fleet").
    #[arg(long, env = "DTCA_UI_LISTEN")]
    pub ui_listen: Option<String>,
    /// How long an agent may stay silent before its node shows as stale (agents report
    /// every 5 minutes). [default: 15m]
    #[arg(long, env = "DTCA_STALE_AFTER", hide = true)]
    pub stale_after: Option<String>,
}

/// `store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the embedded store to a new file while `serve` keeps running: one consistent
    /// snapshot, checked with SQLite's integrity check, 0600, written under a temporary
    /// name and renamed into place only when complete. To restore: stop `serve`, remove
    /// DIR/store.db-wal and DIR/store.db-shm, copy the backup to DIR/store.db (0600),
    /// start `serve` (it checks the file before serving).
    Backup(BackupArgs),
    /// Copy the embedded store of a state dir (tokens, certificates with their revocations
    /// and renewals, node engines, audit log) into an empty PostgreSQL database, in one
    /// transaction, and print what was copied. Stop `serve` on that state dir first.
    Migrate(MigrateArgs),
}

/// `store backup` flags.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The backup file to write; it must not exist. Required.
    #[arg(long, env = "DTCA_BACKUP_OUT")]
    pub out: Option<PathBuf>,
}

/// `store migrate` flags.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The empty PostgreSQL database to copy into: postgres://USER:PASSWORD@HOST:PORT/DBNAME.
    #[arg(long, env = "DTCA_DATABASE")]
    pub database: Option<String>,
}

/// How admin subcommands reach the server.
#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// CA server address. [default: the address `serve` recorded in the state dir, else 127.0.0.1:8443]
    #[arg(long, env = "DTCA_SERVER")]
    pub server: Option<String>,
    /// Admin bundle (ca.pem, cert.pem, key.pem). [default: <state-dir>/admin]
    #[arg(long, env = "DTCA_ADMIN_DIR")]
    pub admin_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, env = "DTCA_JSON")]
    pub json: bool,
}

impl AdminArgs {
    /// `--json`, `DTCA_JSON` or `json = true` in the config file.
    pub fn wants_json(&self, file: &settings::FileConfig) -> bool {
        self.json || file.json == Some(true)
    }
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print the command that uses it (`--quiet`: the token only).
    Create(TokenCreateArgs),
    /// List tokens.
    List(AdminArgs),
    /// Revoke a token by id.
    Revoke {
        /// Token id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `token create` flags.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Role of the certificates it enrolls: node, operator or admin. Required.
    #[arg(long, env = "DTCA_ROLE")]
    pub role: Option<String>,
    /// How long the token stays valid. [default: 24h]
    #[arg(long, env = "DTCA_TTL")]
    pub ttl: Option<String>,
    /// How many enrollments it allows. [default: 1]
    #[arg(long, env = "DTCA_USES")]
    pub uses: Option<u32>,
    /// Identity name every certificate from it gets (else the client's host or user name).
    #[arg(long, env = "DTCA_NAME")]
    pub name: Option<String>,
    /// DNS names allowed in node certificates: host.example.com or *.example.com. Repeatable.
    #[arg(long, env = "DTCA_ALLOW_DNS", value_delimiter = ',')]
    pub allow_dns: Vec<String>,
    /// IP networks allowed in node certificates: 10.0.0.0/8 or 192.0.2.7. Repeatable.
    #[arg(long, env = "DTCA_ALLOW_IP", value_delimiter = ',')]
    pub allow_ip: Vec<String>,
    /// Lifetime of the certificates it enrolls. [default: the role's: node 30d, operator and admin 12h]
    #[arg(long, env = "DTCA_CERT_TTL")]
    pub cert_ttl: Option<String>,
    /// With --name: enrolling takes the name from the identity that holds it and revokes
    /// every certificate of that identity (a node that lost its disk, a stolen key).
    /// Without it, a name held by a live certificate is refused. Command line only: it
    /// revokes.
    #[arg(long)]
    pub replace: bool,
    /// Print the token alone (for scripts: `TOKEN=$(ca-server token create --quiet ...)`).
    #[arg(long, short, env = "DTCA_QUIET")]
    pub quiet: bool,
    /// Operator tokens: what the certificates may do on guard engines, read-only or full.
    /// A read-only certificate carries dtca's read-only EKU instead of clientAuth, so
    /// native engines refuse it. Refused for other roles. [default: full]
    #[arg(long, env = "DTCA_ACCESS")]
    pub access: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// List certificates (valid ones by default).
    List {
        /// Only current certificates expiring within this duration (e.g. 7d); exits 52
        /// when any does, 0 when none does.
        #[arg(long, env = "DTCA_EXPIRING_WITHIN")]
        expiring_within: Option<String>,
        /// Also list expired and revoked certificates.
        #[arg(long, env = "DTCA_ALL")]
        all: bool,
        /// At most this many.
        #[arg(long, env = "DTCA_LIMIT")]
        limit: Option<u32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one certificate with its PEM.
    Show {
        /// Serial, as `openssl x509 -noout -serial` prints it.
        serial: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a certificate by serial, or every current certificate of a name. What to
    /// revoke is read from the command line only, never from the environment or a file.
    Revoke {
        /// Serial, as `openssl x509 -noout -serial` prints it.
        #[arg(required_unless_present = "name", conflicts_with = "name")]
        serial: Option<String>,
        /// Identity name whose certificates to revoke.
        #[arg(long)]
        name: Option<String>,
        /// With --name: only certificates of this role (node, operator or admin); needed
        /// when the name is held by more than one role.
        #[arg(long, requires = "name")]
        role: Option<String>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `audit` flags.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries. [default: 50]
    #[arg(long, env = "DTCA_LIMIT")]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// A command that failed: one line for the user and a distinct exit code.
#[derive(Debug)]
pub struct CliError {
    /// Decides the exit code.
    pub reason: Reason,
    /// What went wrong and what to do.
    pub message: String,
}

impl CliError {
    /// An error with a reason.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        CliError {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// [`CliError`] with the exit code to use.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let file = settings::load_file(cli.config.as_deref())?;
    let log_format = cli
        .log_format
        .or(file.log_format)
        .unwrap_or(LogFormat::Text);
    dtca_common::cli::init_logging(log_format);
    let done = match cli.command {
        Command::Init(args) => serve::init(args, &file).await,
        Command::Serve(args) => serve::serve(args, &file).await,
        Command::Token(cmd) => token::run(cmd, &file).await,
        Command::Cert(cmd) => return admin::cert(cmd, &file).await,
        Command::Audit(args) => admin::audit(args, &file).await,
        Command::Ca(cmd) => ca::run(cmd, &file).await,
        Command::Fleet(args) => fleet::run(args, &file).await,
        Command::Store(StoreCommand::Migrate(args)) => store::migrate(args, &file).await,
        Command::Store(StoreCommand::Backup(args)) => store::backup(args, &file),
    };
    done.map(|()| ExitCode::SUCCESS)
}
