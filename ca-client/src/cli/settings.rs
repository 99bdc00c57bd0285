//! The config file layer and checked settings: flag > env > file > default.

use std::path::{Path, PathBuf};

use dtca_common::config::{self, Problems};
use dtca_common::endpoint::EngineAddr;
use serde::Deserialize;

use super::{DockerArgs, EnrollArgs, LogFormat, LoginArgs, OutArgs};
use crate::docker::{self, DockerOptions, systemd};
use crate::enroll::EnrollOptions;
use crate::error::{ClientError, ConfigProblem, Invalid};
use crate::state::SwitchFlags;

/// Default config file, read when it exists.
pub(super) const DEFAULT_CONFIG: &str = "/etc/dtca/ca-client.toml";
pub(super) use crate::state::DEFAULT_OUT;

/// `ca-client.toml`: the same settings as the long flags (with `_` for `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub log_format: Option<LogFormat>,
    pub server: Option<String>,
    pub token_file: Option<PathBuf>,
    pub name: Option<String>,
    pub san: Option<Vec<String>>,
    pub no_default_sans: Option<bool>,
    pub key_type: Option<String>,
    pub out: Option<PathBuf>,
    pub docker: Option<bool>,
    pub docker_config: Option<PathBuf>,
    pub docker_tls_dir: Option<PathBuf>,
    pub docker_listen: Option<String>,
    pub docker_restart: Option<String>,
    pub docker_advertise: Option<String>,
    pub docker_timeout: Option<String>,
    pub systemd_dir: Option<Vec<PathBuf>>,
    pub docker_mode: Option<crate::state::EngineMode>,
    pub agent_start: Option<String>,
    pub force: Option<bool>,
    pub retry_base: Option<String>,
    pub retry_cap: Option<String>,
    pub warn_within: Option<String>,
    pub host: Option<Vec<String>>,
    pub renew: Option<bool>,
    pub cluster: Option<String>,
    pub renew_now: Option<bool>,
    pub json: Option<bool>,
}

/// Reads the config file named by `--config`, or the default one when it exists.
///
/// # Errors
/// [`ClientError::Config`].
pub(super) fn load_file(path: Option<&Path>) -> Result<FileConfig, ClientError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    Ok(config::load(&path, required).map_err(ConfigProblem::Settings)?)
}

/// The credential directory.
pub(super) fn out_dir(args: &OutArgs, file: &FileConfig) -> PathBuf {
    args.out
        .clone()
        .or_else(|| file.out.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT))
}

/// Checks `enroll` settings, reporting every problem at once.
///
/// # Errors
/// [`ClientError::Config`] listing the problems.
pub(super) fn enroll_options(
    args: &EnrollArgs,
    file: &FileConfig,
) -> Result<EnrollOptions, ClientError> {
    let mut problems = Problems::default();
    // `enroll --docker` on a node that is already enrolled needs no token: it switches
    // with its current certificate (see `node::enroll_docker`).
    let enrolled = (args.docker.docker || file.docker == Some(true))
        && crate::node::current_enrollment(&out_dir(&args.out, file)).is_some();
    let server = args.server.clone().or_else(|| file.server.clone());
    if server.is_none() && !enrolled {
        problems.push("--server is required (the CA's HOST:PORT)");
    }
    let token = match (
        &args.token,
        args.token_file.as_ref().or(file.token_file.as_ref()),
    ) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => problems.check(
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display())),
        ),
        (None, None) if enrolled => None,
        (None, None) => {
            problems.push("a join token is required: --token, --token-file or DTCA_TOKEN");
            None
        }
    };
    let key_type = args
        .key_type
        .clone()
        .or_else(|| file.key_type.clone())
        .map(|k| k.parse())
        .transpose();
    let key_type = problems.check(key_type).flatten().unwrap_or_default();
    let extra_sans = if args.sans.is_empty() {
        file.san.clone().unwrap_or_default()
    } else {
        args.sans.clone()
    };
    let name = args
        .name
        .clone()
        .or_else(|| file.name.clone())
        .unwrap_or_else(dtca_common::net::hostname);
    problems.finish().map_err(ConfigProblem::Settings)?;
    Ok(EnrollOptions {
        server: server.unwrap_or_default(),
        token: token.unwrap_or_default(),
        name,
        extra_sans,
        default_sans: !(args.no_default_sans || file.no_default_sans.unwrap_or(false)),
        key_type,
        out: out_dir(&args.out, file),
    })
}

/// A duration setting: flag/env, else file, else `default`.
///
/// # Errors
/// [`ClientError::Config`] naming the setting.
pub(super) fn duration_or(
    arg: Option<&str>,
    file: Option<&str>,
    default: &str,
    setting: &'static str,
) -> Result<std::time::Duration, ClientError> {
    let text = arg.or(file).unwrap_or(default);
    Ok(dtca_pki::duration::parse(text)
        .map_err(|source| ConfigProblem::Duration { setting, source })?)
}

/// The docker switch settings, when `--docker` is on: flag or environment, else the
/// config file, else what the failed switch being retried was given (`remembered`), else
/// the default.
///
/// # Errors
/// [`ClientError::Config`] for a bad setting.
pub(super) fn docker_options(
    args: &DockerArgs,
    file: &FileConfig,
    remembered: Option<&SwitchFlags>,
    current: Option<&crate::state::ClientState>,
) -> Result<Option<DockerOptions>, ClientError> {
    if !(args.docker || file.docker.unwrap_or(false)) {
        return Ok(None);
    }
    let given = SwitchFlags {
        config: args
            .docker_config
            .clone()
            .or_else(|| file.docker_config.clone()),
        tls_dir: args
            .docker_tls_dir
            .clone()
            .or_else(|| file.docker_tls_dir.clone()),
        listen: args
            .docker_listen
            .clone()
            .or_else(|| file.docker_listen.clone()),
        restart: args
            .docker_restart
            .clone()
            .or_else(|| file.docker_restart.clone()),
        advertise: args
            .docker_advertise
            .clone()
            .or_else(|| file.docker_advertise.clone()),
        timeout: args
            .docker_timeout
            .clone()
            .or_else(|| file.docker_timeout.clone()),
        systemd_dirs: if args.systemd_dirs.is_empty() {
            file.systemd_dir.clone().unwrap_or_default()
        } else {
            args.systemd_dirs.clone()
        },
        mode: args.docker_mode.or(file.docker_mode),
        agent_start: args
            .agent_start
            .clone()
            .or_else(|| file.agent_start.clone()),
    }
    .or(remembered);
    // A switched node keeps its mode and agent start unless told otherwise.
    let current = current.and_then(|s| s.docker.as_ref());
    Ok(Some(DockerOptions {
        config: given.config.clone(),
        tls_dir: given
            .tls_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(docker::DEFAULT_TLS_DIR)),
        listen: EngineAddr::parse(given.listen.as_deref().unwrap_or(docker::DEFAULT_LISTEN))
            .map_err(Invalid::Listen)?,
        systemd_dirs: if given.systemd_dirs.is_empty() {
            systemd::DEFAULT_DIRS
                .iter()
                .map(|d| docker::launcher::host_path(d))
                .collect()
        } else {
            given.systemd_dirs.clone()
        },
        advertise: given
            .advertise
            .as_deref()
            .map(EngineAddr::parse)
            .transpose()
            .map_err(Invalid::Advertise)?,
        timeout: duration_or(given.timeout.as_deref(), None, "60s", "--docker-timeout")?,
        force: args.force || file.force == Some(true),
        dry_run: args.dry_run,
        mode: given.mode.or(current.map(|d| d.mode)).unwrap_or_default(),
        agent_start: given
            .agent_start
            .clone()
            .or_else(|| current.and_then(|d| d.agent_start.clone())),
        held_by_guard: current.is_some_and(|d| d.mode == crate::state::EngineMode::Guard),
        given,
    }))
}

/// Checks `login` settings.
///
/// # Errors
/// [`ClientError::Config`] listing the problems.
pub(super) fn login_options(
    args: &LoginArgs,
    file: &FileConfig,
    docker_config: PathBuf,
) -> Result<crate::operator::LoginOptions, ClientError> {
    let mut problems = Problems::default();
    let server = args.server.clone().or_else(|| file.server.clone());
    if server.is_none() {
        problems.push("--server is required (the CA's HOST:PORT)");
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => problems.check(
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display())),
        ),
        (None, None) => {
            problems
                .push("a join token is required: --token, --token-file or DTCA_TOKEN (or --renew)");
            None
        }
    };
    let key_type = args
        .key_type
        .clone()
        .or_else(|| file.key_type.clone())
        .map(|k| k.parse())
        .transpose();
    let key_type = problems.check(key_type).flatten().unwrap_or_default();
    let name = args
        .name
        .clone()
        .or_else(|| file.name.clone())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "operator".into());
    problems.finish().map_err(ConfigProblem::Settings)?;
    Ok(crate::operator::LoginOptions {
        server: server.unwrap_or_default(),
        token: token.unwrap_or_default(),
        name,
        hosts: if args.hosts.is_empty() {
            file.host.clone().unwrap_or_default()
        } else {
            args.hosts.clone()
        },
        docker_config,
        key_type,
    })
}
