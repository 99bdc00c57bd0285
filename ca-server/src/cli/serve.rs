//! `ca-server init` and `ca-server serve` (on the embedded store, or with `--database` on
//! a PostgreSQL database shared by several replicas).

use std::sync::Arc;

use dtca_common::Reason;
use dtca_common::config::Problems;
use dtca_pki::authority::hierarchy::Lifetimes;
use dtca_pki::identity::check_cluster;
use dtca_pki::inspect;
use dtca_pki::key::KeyType;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use super::hint::Hint;
use super::settings::{self, FileConfig, PASSPHRASE_ENV};
use super::{CliError, InitArgs, ServeArgs};
use crate::lifecycle::{self, CaState, Custody};
use crate::metrics::Metrics;
use crate::registrar::Refusal;
use crate::registrar::{Registrar, Rules};
use crate::restart::{MIN_RESTART_LEASE, RestartLimits};
use crate::server::{self, ServerOptions};
use crate::state::{ServerRecord, StateDir, StateError};
use crate::store::postgres::{PostgresStore, redact};
use crate::store::sqlite::{DEFAULT_RESERVE, SqliteOptions, SqliteStore};
use crate::store::{Store, StoreError};

pub(super) async fn init(args: InitArgs, file: &FileConfig) -> Result<(), CliError> {
    let mut problems = Problems::default();
    let dir = StateDir::new(settings::state_dir(&args.state, file));
    let cluster = args
        .cluster
        .or_else(|| file.cluster.clone())
        .unwrap_or_else(|| "default".into());
    problems.check(check_cluster(&cluster));
    let key_type = args
        .key_type
        .or_else(|| file.key_type.clone())
        .map(|k| k.parse::<KeyType>())
        .transpose();
    let key_type = problems.check(key_type).flatten().unwrap_or_default();
    let mut lifetimes = Lifetimes::default();
    if let Some(text) = args.root_ttl.or_else(|| file.root_ttl.clone())
        && let Some(d) = settings::duration_of("root-ttl", &text, &mut problems)
    {
        lifetimes.root = d;
    }
    if let Some(text) = args
        .intermediate_ttl
        .or_else(|| file.intermediate_ttl.clone())
        && let Some(d) = settings::duration_of("intermediate-ttl", &text, &mut problems)
    {
        lifetimes.intermediate = d;
    }
    problems.check(lifetimes.check());
    let passphrase = settings::passphrase(&args.passphrase, file, &mut problems);
    settings::finish(problems)?;
    let Some(passphrase) = passphrase else {
        return Err(CliError::new(Reason::Config, "no passphrase"));
    };
    let report = dir
        .init_with(
            &cluster,
            key_type,
            lifetimes,
            &passphrase,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(state_error)?;
    println!(
        "Initialised CA for cluster {:?} in {}",
        report.cluster,
        dir.path().display()
    );
    println!(
        "  root CA:         {} (expires {})",
        dir.ca_pem().display(),
        report.root_not_after.date()
    );
    println!(
        "  intermediate CA: expires {} (renewed by the CA itself; leaves live at most {})",
        report.intermediate_not_after.date(),
        dtca_pki::duration::format(std::time::Duration::from_secs(
            lifetimes.intermediate.as_secs() / u64::from(dtca_pki::authority::schedule::LEAF_SHARE)
        ))
    );
    println!("  root digest:     {}", report.root_digest);
    println!("  admin bundle:    {}", report.admin_dir.display());
    if matches!(passphrase, crate::state::Passphrase::InsecureNone) {
        println!("  WARNING: CA keys are NOT encrypted (--insecure-no-passphrase)");
    }
    let (next, needs_env) = Hint::new(&["ca-server", "serve"])
        .config(file)
        .path("--state-dir", dir.path())
        .passphrase(&args.passphrase, file);
    if needs_env {
        println!("Next (with {PASSPHRASE_ENV} set, as for init): {next}");
    } else {
        println!("Next: {next}");
    }
    Ok(())
}

pub(super) async fn serve(args: ServeArgs, file: &FileConfig) -> Result<(), CliError> {
    let mut problems = Problems::default();
    let dir = StateDir::new(settings::state_dir(&args.state, file));
    let passphrase = settings::passphrase(&args.passphrase, file, &mut problems);
    let listen_text = args
        .listen
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| settings::DEFAULT_LISTEN.into());
    let listen = settings::socket_addr("listen", &listen_text, &mut problems);
    let advertise = args.advertise.or_else(|| file.advertise.clone());
    if let Some(a) = &advertise
        && let Err(e) = dtca_common::tls::ServerAddr::parse(a)
    {
        problems.push(format!("--advertise: {e}"));
    }
    let metrics_listen = args
        .metrics_listen
        .or_else(|| file.metrics_listen.clone())
        .and_then(|m| settings::socket_addr("metrics", &m, &mut problems));
    let ui_listen = args
        .ui_listen
        .or_else(|| file.ui_listen.clone())
        .and_then(|m| settings::socket_addr("ui", &m, &mut problems));
    let stale_after = match args.stale_after.or_else(|| file.stale_after.clone()) {
        Some(text) => settings::duration_of("stale-after", &text, &mut problems),
        None => Some(crate::fleet::DEFAULT_STALE_AFTER),
    };
    let store_reserve = match args.store_reserve.or_else(|| file.store_reserve.clone()) {
        Some(text) => settings::size_of("--store-reserve", &text, &mut problems),
        None => Some(DEFAULT_RESERVE),
    };
    let renew_grace = match args.renew_grace.or_else(|| file.renew_grace.clone()) {
        Some(text) if text.trim() == "0" || text.trim() == "0s" => Some(std::time::Duration::ZERO),
        Some(text) => settings::duration_of("renew-grace", &text, &mut problems),
        None => Some(std::time::Duration::ZERO),
    };
    let mut sans = if args.sans.is_empty() {
        file.san.clone().unwrap_or_default()
    } else {
        args.sans
    };
    // Clients check the name they dial against the server's certificate.
    if let Some(addr) = advertise
        .as_deref()
        .and_then(|a| dtca_common::tls::ServerAddr::parse(a).ok())
        && !sans.contains(&addr.host)
    {
        sans.push(addr.host);
    }
    for san in &sans {
        if san.parse::<std::net::IpAddr>().is_err()
            && dtca_pki::policy::check_dns_name(san).is_err()
        {
            problems.push(format!(
                "--san {san:?} is neither a DNS name nor an IP address"
            ));
        }
    }
    let mut options = ServerOptions::for_this_host(&sans);
    let count = |what: &str, value: Option<usize>, problems: &mut Problems| match value {
        Some(0) => {
            problems.push(format!("--{what} must be at least 1"));
            None
        }
        other => other,
    };
    if let Some(n) = count(
        "max-connections",
        args.max_connections.or(file.max_connections),
        &mut problems,
    ) {
        options.max_connections = n;
    }
    if let Some(n) = count(
        "max-unauthenticated-per-address",
        args.max_unauthenticated_per_address
            .or(file.max_unauthenticated_per_address),
        &mut problems,
    ) {
        options.max_unauthenticated_per_address = n;
    }
    if let Some(text) = args
        .handshake_timeout
        .or_else(|| file.handshake_timeout.clone())
        && let Some(d) = settings::duration_of("handshake-timeout", &text, &mut problems)
    {
        options.handshake_timeout = d;
        options.first_request_timeout = d;
    }
    if let Some(text) = args.idle_timeout.or_else(|| file.idle_timeout.clone())
        && let Some(d) = settings::duration_of("idle-timeout", &text, &mut problems)
    {
        options.idle_timeout = d;
    }
    let mut restarts = RestartLimits::default();
    if let Some(n) = count(
        "max-concurrent-restarts",
        args.max_concurrent_restarts
            .or(file.max_concurrent_restarts)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        &mut problems,
    ) {
        restarts.max_concurrent = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(text) = args.restart_lease.or_else(|| file.restart_lease.clone())
        && let Some(d) = settings::duration_of("restart-lease", &text, &mut problems)
    {
        if d < MIN_RESTART_LEASE {
            problems.push(format!(
                "--restart-lease {text} is shorter than {}s: an agent could not renew it in time",
                MIN_RESTART_LEASE.as_secs()
            ));
        }
        restarts.lease = d;
    }
    let database = args.database.or_else(|| file.database.clone());
    let postgres = database
        .as_deref()
        .and_then(|url| problems.check(PostgresStore::parse_url(url)));
    settings::finish(problems)?;
    let (Some(passphrase), Some(listen), Some(renew_grace), Some(store_reserve), Some(stale_after)) =
        (passphrase, listen, renew_grace, store_reserve, stale_after)
    else {
        return Err(CliError::new(Reason::Config, "invalid configuration"));
    };

    for what in dir.secure().map_err(state_error)? {
        tracing::warn!(%what, "tightened the permissions of the CA's state");
    }
    raise_open_files();
    // Checks the passphrase against the state dir's files before anything else.
    let (_, cluster) = dir.load_authority(&passphrase).map_err(state_error)?;
    if !cluster.encrypted {
        tracing::warn!(
            "the CA keys are not encrypted at rest (initialised with --insecure-no-passphrase)"
        );
    }
    let store: Arc<dyn Store> = match (database, postgres) {
        (Some(url), Some(config)) => Arc::new(open_postgres(&url, config, &dir).await?),
        _ => Arc::new(open_embedded(&dir, store_reserve)?),
    };
    let now = OffsetDateTime::now_utc();
    // A CA made before the store kept its certificates: they come from the files, once.
    let files = dir.ca_files().map_err(state_error)?;
    if lifecycle::ops::import(store.as_ref(), files, now)
        .await
        .map_err(lifecycle_error)?
    {
        tracing::info!("stored the CA's root and intermediate from the state directory");
    }
    let material = store
        .ca_material()
        .await
        .map_err(|e| CliError::new(Reason::StoreUnavailable, e.to_string()))?;
    let state =
        CaState::load(&cluster.cluster, &material, &passphrase, now).map_err(lifecycle_error)?;
    let custody = Custody {
        root_keys: Box::new(dir.clone()),
        passphrase,
        lifetimes: cluster.lifetimes(),
        poll: server::lifecycle::POLL,
        warnings: std::sync::Mutex::default(),
    };
    let metrics = Arc::new(Metrics::default());
    let registrar = Arc::new(
        Registrar::with_state(
            state,
            Some(Arc::new(custody)),
            store.clone(),
            Rules {
                renew_grace,
                restarts,
            },
            metrics.clone(),
        )
        .with_fleet(crate::fleet::Fleet::new(stale_after)),
    );
    // The agents' reports are read for the fleet view now, in the background: each report
    // is then kept as it arrives, and the first view reads only what changed.
    let reader = registrar.clone();
    tokio::spawn(async move {
        if let Err(e) = reader.refresh_reports(OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %e, "cannot read the agents' reports yet (the first fleet view will)");
        }
    });

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::new(Reason::LocalIo, format!("cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::new(Reason::LocalIo, e.to_string()))?;
    let recorded = dir.record_server_addr(local).map_err(state_error)?;
    dir.record_server(&ServerRecord {
        listen: local.to_string(),
        advertise,
    })
    .map_err(state_error)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = metrics_listen {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            CliError::new(
                Reason::LocalIo,
                format!("cannot listen on {addr} for metrics: {e}"),
            )
        })?;
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics listening");
        let mut stop = stop_rx.clone();
        let fleet = crate::fleet::metrics::FleetFamilies::register(registrar.clone(), &metrics);
        tokio::spawn(crate::metrics::serve(
            l,
            metrics,
            store.clone(),
            Some(dir.admin_dir().join("cert.pem")),
            vec![Arc::new(fleet)],
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
    }
    if let Some(addr) = ui_listen {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            CliError::new(
                Reason::LocalIo,
                format!("cannot listen on {addr} for the web page: {e}"),
            )
        })?;
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "web page listening");
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::ui::serve(l, registrar.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    tracing::info!(addr = %local, cluster = %cluster.cluster, "ca-server listening");
    let shutdown = async move {
        dtca_common::cli::wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    let result = server::run(listener, registrar, options, shutdown)
        .await
        .map_err(|e| {
            // The server's own certificate is stored like any other: a full disk or a
            // damaged store at start keeps the reason it has.
            let reason = match &e {
                server::ServeError::Certificate(refusal) => refusal.reason(),
                _ => Reason::Internal,
            };
            CliError::new(reason, e.to_string())
        });
    dir.forget_server_addr(recorded);
    store.close().await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the embedded store, checked (SQLite's quick check), keeping `reserve` bytes free
/// for it; the check's cost is logged.
fn open_embedded(dir: &StateDir, reserve: u64) -> Result<SqliteStore, CliError> {
    let started = tokio::time::Instant::now();
    let options = SqliteOptions {
        reserve: Some(reserve),
        check: true,
    };
    let store = SqliteStore::open_with(&dir.store_path(), &options).map_err(store_error)?;
    tracing::info!(
        path = %dir.store_path().display(),
        checked_ms = started.elapsed().as_millis(),
        "store opened and checked"
    );
    Ok(store)
}

/// A store that would not open: damage and a full disk are reasons of their own.
pub(super) fn store_error(e: StoreError) -> CliError {
    match e {
        // It names the file and says what to do.
        StoreError::Corrupt(what) => CliError::new(Reason::StoreCorrupt, what),
        StoreError::Full(_) => CliError::new(Reason::StoreFull, e.to_string()),
        _ => CliError::new(Reason::StoreUnavailable, e.to_string()),
    }
}

/// Every client connection is a file descriptor: take all the hard limit allows (the
/// soft limit is often 1024, about 500 idle clients' worth).
fn raise_open_files() {
    match server::fd_limit::raise() {
        Ok(limits) if limits.soft > limits.before => tracing::info!(
            from = limits.before,
            to = limits.soft,
            "raised the open-file limit"
        ),
        Ok(limits) => tracing::info!(open_files = limits.soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Connects to the shared database and checks that it holds this CA's records: a replica
/// started on an empty or foreign database would refuse every admin and renewal call (the
/// certificates are unknown there), and would record its own certificate in it.
async fn open_postgres(
    url: &str,
    config: tokio_postgres::Config,
    dir: &StateDir,
) -> Result<PostgresStore, CliError> {
    let name = redact(url);
    let store = PostgresStore::connect(config)
        .await
        .map_err(|e| CliError::new(Reason::StoreUnavailable, format!("{name}: {e}")))?;
    let admin_cert = dir.admin_dir().join("cert.pem");
    let serial = std::fs::read_to_string(&admin_cert)
        .ok()
        .and_then(|pem| inspect::certs_from_pem(&pem).ok())
        .and_then(|certs| certs.into_iter().next())
        .and_then(|der| inspect::CertInfo::from_der(&der).ok())
        .map(|info| info.serial);
    if let Some(serial) = serial {
        let known = store
            .certificate(&serial)
            .await
            .map_err(|e| CliError::new(Reason::StoreUnavailable, format!("{name}: {e}")))?;
        if known.is_none() {
            return Err(CliError::new(
                Reason::NotInitialized,
                format!(
                    "{name} holds no records of this CA (the admin certificate in {} is unknown to it): copy the embedded store into it first with `ca-server store migrate --state-dir {} --database <URL>`",
                    admin_cert.display(),
                    dir.path().display()
                ),
            ));
        }
    }
    Ok(store)
}

/// A lifecycle step that failed, as the refusal it is.
pub(super) fn lifecycle_error(e: lifecycle::LifecycleError) -> CliError {
    let refusal = Refusal::from(e);
    CliError::new(refusal.reason(), refusal.to_string())
}

pub(super) fn state_error(e: StateError) -> CliError {
    let reason = match &e {
        StateError::AlreadyInitialized(_) => Reason::AlreadyInitialized,
        StateError::NotInitialized(_) => Reason::NotInitialized,
        StateError::PassphraseRequired => Reason::Config,
        StateError::WrongPassphrase => Reason::WrongPassphrase,
        StateError::Io(_) => Reason::LocalIo,
        StateError::Invalid(_) => Reason::Config,
        StateError::Store(_) => Reason::StoreUnavailable,
    };
    CliError::new(reason, e.to_string())
}
