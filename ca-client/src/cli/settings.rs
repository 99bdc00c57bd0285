//! The config file layer and checked settings: flag > env > file > default.

use std::path::{Path, PathBuf};

use dtca_common::config::{self, Problems};
use serde::Deserialize;

use super::{EnrollArgs, LogFormat, OutArgs};
use crate::enroll::EnrollOptions;
use crate::error::ClientError;

/// Default config file, read when it exists.
pub const DEFAULT_CONFIG: &str = "/etc/dtca/ca-client.toml";
/// Default credential directory.
pub const DEFAULT_OUT: &str = "/var/lib/dtca-client";

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
}

/// Reads the config file named by `--config`, or the default one when it exists.
///
/// # Errors
/// [`ClientError::Config`].
pub fn load_file(path: Option<&Path>) -> Result<FileConfig, ClientError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    config::load(&path, required).map_err(|e| ClientError::Config(e.to_string()))
}

/// The credential directory.
pub fn out_dir(args: &OutArgs, file: &FileConfig) -> PathBuf {
    args.out
        .clone()
        .or_else(|| file.out.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT))
}

/// Checks `enroll` settings, reporting every problem at once.
///
/// # Errors
/// [`ClientError::Config`] listing the problems.
pub fn enroll_options(args: &EnrollArgs, file: &FileConfig) -> Result<EnrollOptions, ClientError> {
    let mut problems = Problems::default();
    let server = args.server.clone().or_else(|| file.server.clone());
    if server.is_none() {
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
    problems
        .finish()
        .map_err(|e| ClientError::Config(e.to_string()))?;
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
