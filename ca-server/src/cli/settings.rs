//! The config file layer and checked settings: flag > env > file > default, with every
//! problem reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::config::{self, Problems};
use dtca_pki::duration;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{CliError, LogFormat, PassphraseArgs, StateArgs};
use crate::state::Passphrase;

/// Default config file, read when it exists.
pub(super) const DEFAULT_CONFIG: &str = "/etc/dtca/ca-server.toml";
/// Default state directory.
pub(super) const DEFAULT_STATE_DIR: &str = "/var/lib/dtca";
/// Default listen address.
pub(super) const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Environment variable holding the passphrase itself.
pub(super) const PASSPHRASE_ENV: &str = "DTCA_PASSPHRASE";

/// `ca-server.toml`: the same settings as the long flags (with `_` for `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file these settings came from when one was named (`--config`, `DTCA_CONFIG`),
    /// so the commands a hint prints name it too.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub cluster: Option<String>,
    pub key_type: Option<String>,
    pub root_ttl: Option<String>,
    pub intermediate_ttl: Option<String>,
    pub passphrase_file: Option<PathBuf>,
    pub insecure_no_passphrase: Option<bool>,
    pub insecure_passphrase_file_permissions: Option<bool>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub quiet: Option<bool>,
    pub database: Option<String>,
    pub metrics_listen: Option<String>,
    pub san: Option<Vec<String>>,
    pub renew_grace: Option<String>,
    pub max_connections: Option<usize>,
    pub max_unauthenticated_per_address: Option<usize>,
    pub handshake_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub store_reserve: Option<String>,
    pub max_concurrent_restarts: Option<u32>,
    pub restart_lease: Option<String>,
    pub ui_listen: Option<String>,
    pub stale_after: Option<String>,
    pub server: Option<String>,
    pub admin_dir: Option<PathBuf>,
    pub json: Option<bool>,
    // token create
    pub role: Option<String>,
    pub ttl: Option<String>,
    pub uses: Option<u32>,
    pub name: Option<String>,
    pub allow_dns: Option<Vec<String>>,
    pub allow_ip: Option<Vec<String>>,
    pub cert_ttl: Option<String>,
    pub access: Option<String>,
    // cert list, audit
    pub expiring_within: Option<String>,
    pub all: Option<bool>,
    pub limit: Option<u32>,
    // fleet
    pub state: Option<Vec<String>>,
}

/// Reads the config file named by `--config`, or the default one when it exists.
///
/// # Errors
/// [`CliError`] with [`Reason::Config`].
pub(super) fn load_file(path: Option<&Path>) -> Result<FileConfig, CliError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut file: FileConfig =
        config::load(&path, required).map_err(|e| CliError::new(Reason::Config, e.to_string()))?;
    file.source = required.then_some(path);
    Ok(file)
}

/// The state directory from flag, env, file or default.
pub(super) fn state_dir(args: &StateArgs, file: &FileConfig) -> PathBuf {
    args.state_dir
        .clone()
        .or_else(|| file.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// Reads the passphrase from `--passphrase-file`, `DTCA_PASSPHRASE`, or accepts none with
/// `--insecure-no-passphrase`.
pub(super) fn passphrase(
    args: &PassphraseArgs,
    file: &FileConfig,
    problems: &mut Problems,
) -> Option<Passphrase> {
    let insecure = args.insecure_no_passphrase || file.insecure_no_passphrase.unwrap_or(false);
    let loose_ok = args.insecure_passphrase_file_permissions
        || file.insecure_passphrase_file_permissions.unwrap_or(false);
    let from_file = args
        .passphrase_file
        .clone()
        .or_else(|| file.passphrase_file.clone());
    let secret = match from_file {
        Some(path) => match std::fs::read(&path) {
            Ok(mut bytes) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map_or(0, |m| m.permissions().mode() & 0o777);
                if mode & 0o077 != 0 {
                    if !loose_ok {
                        problems.push(format!(
                            "the passphrase file {} is open to group or others (mode {mode:04o}): chmod 600 it (or pass --insecure-passphrase-file-permissions)",
                            path.display()
                        ));
                        return None;
                    }
                    eprintln!(
                        "warning: {} can be read by other users (mode {mode:04o}); chmod 600 it",
                        path.display()
                    );
                }
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Some(Zeroizing::new(bytes))
            }
            Err(e) => {
                problems.push(format!(
                    "cannot read the passphrase file {}: {e}",
                    path.display()
                ));
                return None;
            }
        },
        None => std::env::var(PASSPHRASE_ENV)
            .ok()
            .map(|s| Zeroizing::new(s.into_bytes())),
    };
    match (secret, insecure) {
        (Some(s), false) if s.is_empty() => {
            problems.push("the passphrase is empty");
            None
        }
        (Some(s), false) => Some(Passphrase::Secret(s)),
        (Some(_), true) => {
            problems.push("give either a passphrase or --insecure-no-passphrase, not both");
            None
        }
        (None, true) => Some(Passphrase::InsecureNone),
        (None, false) => {
            problems.push(format!(
                "no passphrase for the CA keys: give --passphrase-file FILE or set {PASSPHRASE_ENV} (or --insecure-no-passphrase for a throwaway CA)"
            ));
            None
        }
    }
}

/// Parses a socket address setting.
pub(super) fn socket_addr(what: &str, text: &str, problems: &mut Problems) -> Option<SocketAddr> {
    problems.check(
        text.parse::<SocketAddr>().map_err(|_| {
            format!("invalid {what} address {text:?}: use IP:PORT, like 0.0.0.0:8443")
        }),
    )
}

/// Parses a duration setting.
pub(super) fn duration_of(what: &str, text: &str, problems: &mut Problems) -> Option<Duration> {
    problems.check(duration::parse(text).map_err(|e| format!("{what}: {e}")))
}

/// Parses a size setting: a whole number of bytes, or with a unit (`K`, `M`, `G`, with
/// or without `iB`, all powers of 1024), like `64M` or `512MiB`.
pub(super) fn size_of(what: &str, text: &str, problems: &mut Problems) -> Option<u64> {
    problems.check(parse_size(text).ok_or_else(|| {
        format!("{what} {text:?}: write a size like 64M, 512MiB or 1G (0 for none)")
    }))
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// Turns collected problems into a config error.
///
/// # Errors
/// [`CliError`] listing every problem: [`Reason::Usage`] when they are all required
/// settings not given, else [`Reason::Config`].
pub(super) fn finish(problems: Problems) -> Result<(), CliError> {
    let reason = if problems.only_missing() {
        Reason::Usage
    } else {
        Reason::Config
    };
    problems
        .finish()
        .map_err(|e| CliError::new(reason, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sizes_in_powers_of_1024() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size(" 1g "), Some(1 << 30));
        assert_eq!(parse_size("8k"), Some(8 << 10));
        for bad in [
            "",
            "M",
            "-1M",
            "1.5G",
            "12 parsecs",
            "99999999999999999999G",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
