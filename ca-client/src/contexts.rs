//! Docker contexts, written the way the docker CLI stores them:
//!
//! ```text
//! $DOCKER_CONFIG/contexts/meta/<sha256(name)>/meta.json
//! $DOCKER_CONFIG/contexts/tls/<sha256(name)>/docker/{ca,cert,key}.pem   (0600)
//! ```
//!
//! Contexts dtca manages carry `"dtca": "<cluster>"` in their metadata; any other context
//! with the same name is left alone, and `config.json` is never touched. Each context keeps
//! its own copy of the TLS files (that is how the CLI works), so a renewal rewrites them in
//! every dtca context of the cluster.

use std::path::{Path, PathBuf};

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::fs::{self as files, FileError};
use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

use crate::error::{ClientError, Invalid};

/// What happened to one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made now.
    Created,
    /// Ours already; endpoint and TLS files refreshed.
    Updated,
    /// A context of that name exists and is not this cluster's: not touched. Holds the
    /// dtca cluster it belongs to, if it is another cluster's.
    SkippedForeign(Option<String>),
}

/// The docker CLI's configuration directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".docker")
        })
}

fn id(name: &str) -> String {
    data_encoding::HEXLOWER.encode(digest(&SHA256, name.as_bytes()).as_ref())
}

fn meta_path(config: &Path, name: &str) -> PathBuf {
    config
        .join("contexts/meta")
        .join(id(name))
        .join("meta.json")
}

fn tls_dir(config: &Path, name: &str) -> PathBuf {
    config.join("contexts/tls").join(id(name)).join("docker")
}

fn read_meta(config: &Path, name: &str) -> Option<Value> {
    std::fs::read_to_string(meta_path(config, name))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// Creates or refreshes the context `name` -> `endpoint` with `bundle`'s credentials,
/// unless a context of that name exists that dtca did not make.
///
/// # Errors
/// [`ClientError`] when a file cannot be written.
pub fn upsert(
    config: &Path,
    name: &str,
    endpoint: &str,
    bundle: &Bundle,
    cluster: &str,
) -> Result<Outcome, ClientError> {
    let outcome = match read_meta(config, name) {
        Some(meta) if meta["Metadata"]["dtca"].as_str() != Some(cluster) => {
            let owner = meta["Metadata"]["dtca"].as_str().map(str::to_string);
            return Ok(Outcome::SkippedForeign(owner));
        }
        Some(_) => Outcome::Updated,
        None => Outcome::Created,
    };
    write_tls(config, name, bundle)?;
    let meta = json!({
        "Name": name,
        "Metadata": {
            "Description": format!("dtca cluster {cluster}: {endpoint}"),
            "dtca": cluster,
        },
        "Endpoints": {"docker": {"Host": endpoint, "SkipTLSVerify": false}},
    });
    let path = meta_path(config, name);
    if let Some(dir) = path.parent() {
        files::ensure_dir(dir, 0o755)?;
    }
    let text = serde_json::to_string(&meta).map_err(|e| Invalid::Encode {
        what: "the docker context",
        detail: e.to_string(),
    })?;
    files::write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(outcome)
}

fn write_tls(config: &Path, name: &str, bundle: &Bundle) -> Result<(), FileError> {
    let dir = tls_dir(config, name);
    files::ensure_dir(&dir, 0o700)?;
    // The CLI lists this directory and reads every file in it: a staged `.cert.pem.next`
    // beside the real files fails a `docker` command that runs during a renewal ("unknown
    // file in context TLS bundle", then "does not exist"). Stage outside it.
    let staging = config.join("dtca").join(".staging").join(id(name));
    bundle
        .save_staged(&dir, Layout::CLIENT, Some(&staging))
        .map_err(|e| match e {
            dtca_common::bundle::BundleError::Io(f) => f,
            other => FileError::new(&dir, "write", std::io::Error::other(other.to_string())),
        })?;
    // The CLI writes its copies 0600; keep ca.pem and cert.pem that way too.
    for f in ["ca.pem", "cert.pem"] {
        let path = dir.join(f);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| FileError::new(&path, "set permissions of", e))?;
    }
    Ok(())
}

/// Names and endpoints of the contexts dtca made for `cluster`.
pub fn ours(config: &Path, cluster: &str) -> Vec<(String, String)> {
    all(config)
        .into_iter()
        .filter(|c| c.cluster == cluster)
        .map(|c| (c.name, c.host))
        .collect()
}

/// A context dtca made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ours {
    /// The context's (and node's) name.
    pub name: String,
    /// The dtca cluster it belongs to.
    pub cluster: String,
    /// The engine address, `tcp://HOST:PORT`.
    pub host: String,
}

/// Every context dtca made, of every cluster, by name.
pub fn all(config: &Path) -> Vec<Ours> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(config.join("contexts/meta"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path().join("meta.json")) else {
            continue;
        };
        let Ok(meta) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let (Some(cluster), Some(name), Some(host)) = (
            meta["Metadata"]["dtca"].as_str(),
            meta["Name"].as_str(),
            meta["Endpoints"]["docker"]["Host"].as_str(),
        ) {
            out.push(Ours {
                name: name.to_string(),
                cluster: cluster.to_string(),
                host: host.to_string(),
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.cluster).cmp(&(&b.name, &b.cluster)));
    out
}

/// The endpoint of a dtca context, if `name` is one.
pub fn endpoint(config: &Path, name: &str) -> Option<(String, String)> {
    let meta = read_meta(config, name)?;
    let cluster = meta["Metadata"]["dtca"].as_str()?.to_string();
    let host = meta["Endpoints"]["docker"]["Host"].as_str()?.to_string();
    Some((cluster, host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtca_common::bundle::sample;
    use dtca_pki::Role;

    fn bundle() -> Bundle {
        sample("c", Role::Operator, "alice", &[])
    }

    #[test]
    fn writes_the_cli_layout_and_leaves_foreign_contexts_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let b = bundle();
        assert_eq!(
            upsert(tmp.path(), "node-1", "tcp://10.0.0.1:2376", &b, "c").unwrap(),
            Outcome::Created
        );
        let meta = read_meta(tmp.path(), "node-1").unwrap();
        assert_eq!(meta["Endpoints"]["docker"]["Host"], "tcp://10.0.0.1:2376");
        assert_eq!(
            id("probe"),
            "ba9c736f19e7f60b7f6764adb0b7908c0a2b394e09b6c09863528c7f2bc86095",
            "the CLI names context directories by the SHA-256 of the name"
        );
        Bundle::load(&tls_dir(tmp.path(), "node-1"), Layout::CLIENT).unwrap();
        assert_eq!(
            upsert(tmp.path(), "node-1", "tcp://10.0.0.2:2376", &b, "c").unwrap(),
            Outcome::Updated
        );
        assert_eq!(
            ours(tmp.path(), "c"),
            vec![("node-1".to_string(), "tcp://10.0.0.2:2376".to_string())]
        );

        // Someone else's context of the same name.
        let foreign = meta_path(tmp.path(), "prod");
        std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
        let original =
            r#"{"Name":"prod","Metadata":{},"Endpoints":{"docker":{"Host":"ssh://me@prod"}}}"#;
        std::fs::write(&foreign, original).unwrap();
        assert_eq!(
            upsert(tmp.path(), "prod", "tcp://x:2376", &b, "c").unwrap(),
            Outcome::SkippedForeign(None)
        );
        assert_eq!(std::fs::read_to_string(&foreign).unwrap(), original);
        // Another dtca cluster's context of the same name: left alone, and named.
        assert_eq!(
            upsert(tmp.path(), "node-1", "tcp://10.9.9.9:2376", &b, "other").unwrap(),
            Outcome::SkippedForeign(Some("c".into()))
        );
        assert!(!tls_dir(tmp.path(), "prod").exists());
    }
}
