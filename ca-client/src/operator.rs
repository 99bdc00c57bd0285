//! `ca-client login` and `ca-client env`: an operator's short-lived client certificate
//! and docker contexts for every enrolled node.
//!
//! The credentials live in `$DOCKER_CONFIG/dtca/<cluster>/{ca,cert,key}.pem` (with
//! `client.toml`), so `ca-server` admin subcommands can use an admin login directly as
//! `--admin-dir`.

use std::path::{Path, PathBuf};

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::endpoint::EngineAddr;
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::identity::Role;
use dtca_pki::inspect::CertInfo;
use dtca_pki::key::KeyType;
use dtca_pki::token::JoinToken;
use dtca_proto::v1;
use time::OffsetDateTime;

use crate::ca;
use crate::contexts::{self, Outcome};
use crate::enroll::{self, renew_with};
use crate::error::{BadAnswer, ClientError, ConfigProblem, Invalid, NotEnrolled};
use crate::sans::Sans;
use crate::state::ClientState;

/// What `login` needs.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// CA address.
    pub server: String,
    /// Operator or admin join token.
    pub token: String,
    /// Identity name to ask for (the token may fix it).
    pub name: String,
    /// Extra engines (`tcp://HOST:PORT`) to make contexts for.
    pub hosts: Vec<String>,
    /// The docker CLI's configuration directory.
    pub docker_config: PathBuf,
    /// Key algorithm.
    pub key_type: KeyType,
}

/// What `login` or `login --renew` did.
#[derive(Debug)]
pub struct LoginReport {
    /// The new certificate.
    pub info: CertInfo,
    /// Where the credentials are.
    pub dir: PathBuf,
    /// The cluster logged in to.
    pub cluster: String,
    /// Contexts and what happened to each.
    pub contexts: Vec<(String, String, Outcome)>,
    /// Nodes without a reported engine address (no context made).
    pub unreachable: Vec<String>,
}

/// Where a cluster's operator credentials live.
pub fn credentials_dir(docker_config: &Path, cluster: &str) -> PathBuf {
    docker_config.join("dtca").join(cluster)
}

/// Logs in with a token: key made here, certificate from the CA, contexts for every
/// enrolled node with a known engine and for every `--host`.
///
/// # Errors
/// [`ClientError`]; the docker configuration is not touched before the certificate is in.
pub async fn login(opts: &LoginOptions) -> Result<LoginReport, ClientError> {
    let token: JoinToken = opts.token.parse()?;
    let addr = ServerAddr::parse(&opts.server)?;
    let hosts = host_contexts(&opts.hosts)?;
    let (mut client, trusted) = ca::first_contact(&addr, token.root).await?;
    // Before the token is spent: somewhere to keep what it buys.
    let dir = credentials_dir(&opts.docker_config, &trusted.cluster);
    dtca_common::fs::ensure_writable_dir(&dir, 0o700)?;
    let bundle = ca::enroll(
        &mut client,
        &trusted,
        &token,
        &opts.name,
        &Sans::default(),
        opts.key_type,
    )
    .await?;
    let info = bundle.leaf()?;
    let identity = info.identity.clone().ok_or(BadAnswer::NoIdentity)?;
    if identity.role == Role::Node {
        return Err(Invalid::NodeTokenForLogin.into());
    }
    let now = OffsetDateTime::now_utc();
    let state = ClientState {
        server: addr.to_string(),
        cluster: trusted.cluster.clone(),
        identity: identity.uri(),
        key_type: opts.key_type,
        enrolled_at: duration::timestamp(now),
        extra_sans: opts.hosts.clone(),
        default_sans: false,
        last_renewal: None,
        last_error: None,
        next_renewal: None,
        docker: None,
        failed_switch: None,
        token_policy: None,
        restart_without_slot: None,
        access: Some(info.access),
    };
    enroll::write(&dir, &bundle, &state)?;
    let (contexts, unreachable) = refresh_contexts(
        &opts.docker_config,
        &addr,
        &bundle,
        &trusted.cluster,
        &hosts,
    )
    .await?;
    Ok(LoginReport {
        info,
        dir,
        cluster: trusted.cluster,
        contexts,
        unreachable,
    })
}

/// Renews the login of `cluster` (the only one when `None`) before it expires: new key,
/// files and every dtca context of the cluster updated, new nodes added.
///
/// # Errors
/// [`ClientError`]: a refusal (expired, revoked) says to log in again with a token.
pub async fn renew(
    docker_config: &Path,
    cluster: Option<&str>,
    server: Option<&str>,
) -> Result<LoginReport, ClientError> {
    let cluster = match cluster {
        Some(c) => c.to_string(),
        None => only_cluster(docker_config)?,
    };
    let dir = credentials_dir(docker_config, &cluster);
    let mut state = ClientState::load(&dir)?;
    let current = Bundle::load(&dir, Layout::CLIENT)?;
    let addr = ServerAddr::parse(server.unwrap_or(&state.server))?;
    let bundle = renew_with(&addr, &current, &Sans::default(), state.key_type)
        .await
        .map_err(|e| match e {
            ClientError::Refused { reason, message } => ClientError::Refused {
                reason,
                message: format!("{message} (log in again: ca-client login --token ...)"),
            },
            other => other,
        })?;
    state.last_renewal = Some(duration::timestamp(OffsetDateTime::now_utc()));
    state.access = Some(bundle.leaf()?.access);
    enroll::write(&dir, &bundle, &state)?;
    let hosts = host_contexts(&state.extra_sans)?;
    let (contexts, unreachable) =
        refresh_contexts(docker_config, &addr, &bundle, &cluster, &hosts).await?;
    Ok(LoginReport {
        info: bundle.leaf()?,
        dir,
        cluster,
        contexts,
        unreachable,
    })
}

/// Creates or updates the contexts of `cluster`: one per enrolled node with a reported
/// engine, one per extra host, and refreshes the credentials of every other dtca context
/// of the cluster (a node that disappeared keeps its context, with fresh files).
async fn refresh_contexts(
    docker_config: &Path,
    addr: &ServerAddr,
    bundle: &Bundle,
    cluster: &str,
    hosts: &[(String, String)],
) -> Result<(Vec<(String, String, Outcome)>, Vec<String>), ClientError> {
    let mut client = ca::authenticated(addr, bundle).await?;
    let nodes = client
        .list_nodes(v1::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut unreachable = Vec::new();
    for node in nodes {
        if node.endpoint.is_empty() {
            unreachable.push(node.name);
        } else {
            wanted.push((node.name, node.endpoint));
        }
    }
    wanted.extend(hosts.iter().cloned());
    for (name, endpoint) in contexts::ours(docker_config, cluster) {
        if !wanted.iter().any(|(n, _)| *n == name) {
            wanted.push((name, endpoint));
        }
    }
    let mut done = Vec::new();
    for (name, endpoint) in wanted {
        let outcome = contexts::upsert(docker_config, &name, &endpoint, bundle, cluster)?;
        done.push((name, endpoint, outcome));
    }
    Ok((done, unreachable))
}

/// What `env NODE` exports: the node's engine and the login's credentials, for the
/// docker CLI without contexts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvExports {
    /// The node (context) name.
    pub name: String,
    /// Whose login's credentials these are.
    pub cluster: String,
    /// The engine's mutual-TLS address, as the context has it.
    pub docker_host: String,
    /// Always `1`: the CLI checks the engine's certificate against `ca.pem`.
    pub docker_tls_verify: String,
    /// The login's credentials (`ca.pem`, `cert.pem`, `key.pem`).
    pub docker_cert_path: PathBuf,
}

/// The variables `env NODE` sets, in the order it sets them.
pub const ENV_VARIABLES: [&str; 3] = ["DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"];

impl EnvExports {
    /// `export` lines for a POSIX shell.
    pub fn shell(&self) -> String {
        format!(
            "export DOCKER_HOST={}\nexport DOCKER_TLS_VERIFY={}\nexport DOCKER_CERT_PATH={}\n",
            shell_quote(&self.docker_host),
            self.docker_tls_verify,
            shell_quote(&self.docker_cert_path.display().to_string())
        )
    }
}

/// The line that unsets what [`EnvExports::shell`] sets.
pub fn env_unset() -> String {
    format!("unset {}\n", ENV_VARIABLES.join(" "))
}

/// What `env NODE` exports for using `node` without contexts.
///
/// # Errors
/// [`NotEnrolled::Context`] when `node` is not a dtca context; it lists the ones there are.
pub fn env(docker_config: &Path, node: &str) -> Result<EnvExports, ClientError> {
    let Some((cluster, host)) = contexts::endpoint(docker_config, node) else {
        return Err(NotEnrolled::Context {
            name: node.to_string(),
            docker_config: docker_config.to_path_buf(),
            known: contexts::all(docker_config)
                .into_iter()
                .map(|c| c.name)
                .collect(),
        }
        .into());
    };
    Ok(EnvExports {
        name: node.to_string(),
        docker_cert_path: credentials_dir(docker_config, &cluster),
        cluster,
        docker_host: host,
        docker_tls_verify: "1".into(),
    })
}

/// A node of the CA's inventory, as `ca-client nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    /// Identity name (and the name of its docker context).
    pub name: String,
    /// Where its engine listens for operators; `None` until its agent reports one.
    pub endpoint: Option<String>,
    /// `native`, `guard` or `none`, as its agent last reported; `None` when it never did.
    pub mode: Option<String>,
    /// Its newest valid certificate.
    pub serial: Option<String>,
    /// That certificate's names.
    pub dns_names: Vec<String>,
    /// That certificate's addresses.
    pub ip_addresses: Vec<String>,
    /// Its validity, RFC 3339.
    pub not_before: Option<String>,
    /// Its end, RFC 3339.
    pub not_after: Option<String>,
    /// When its agent last reported, RFC 3339; `None` when never.
    pub last_report: Option<String>,
}

impl NodeView {
    fn from_wire(node: v1::Node) -> NodeView {
        let time = |unix: i64| {
            (unix != 0)
                .then(|| OffsetDateTime::from_unix_timestamp(unix).ok())
                .flatten()
                .map(duration::rfc3339)
        };
        let text = |s: String| (!s.is_empty()).then_some(s);
        NodeView {
            name: node.name,
            endpoint: text(node.endpoint),
            mode: text(node.mode),
            serial: text(node.serial),
            dns_names: node.dns_names,
            ip_addresses: node.ip_addresses,
            not_before: time(node.not_before_unix),
            not_after: time(node.not_after_unix),
            last_report: time(node.reported_unix),
        }
    }
}

/// The CA's node inventory, asked with the login of `cluster` (the only one when `None`).
///
/// # Errors
/// [`ClientError`]: no login, or the CA's refusal (an expired login says to renew it).
pub async fn nodes(
    docker_config: &Path,
    cluster: Option<&str>,
    server: Option<&str>,
) -> Result<Vec<NodeView>, ClientError> {
    let cluster = match cluster {
        Some(c) => c.to_string(),
        None => only_cluster(docker_config)?,
    };
    let dir = credentials_dir(docker_config, &cluster);
    let state = ClientState::load(&dir)?;
    let bundle = Bundle::load(&dir, Layout::CLIENT)?;
    let addr = ServerAddr::parse(server.unwrap_or(&state.server))?;
    let mut client = ca::authenticated(&addr, &bundle).await?;
    let nodes = client
        .list_nodes(v1::ListNodesRequest {})
        .await
        .map_err(|status| match ClientError::from(status) {
            ClientError::Refused { reason, message } => ClientError::Refused {
                reason,
                message: format!("{message} (renew the login: ca-client login --renew)"),
            },
            other => other,
        })?
        .into_inner()
        .nodes;
    Ok(nodes.into_iter().map(NodeView::from_wire).collect())
}

/// The one cluster logged in to.
///
/// # Errors
/// [`NotEnrolled::Login`] when there is none, [`ConfigProblem::SeveralClusters`] when
/// there are several (`--cluster` chooses).
pub fn only_cluster(docker_config: &Path) -> Result<String, ClientError> {
    let mut clusters: Vec<String> = std::fs::read_dir(docker_config.join("dtca"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(crate::state::FILE).exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    clusters.sort();
    match clusters.len() {
        0 => Err(NotEnrolled::Login {
            dir: docker_config.join("dtca"),
        }
        .into()),
        1 => Ok(clusters.remove(0)),
        _ => Err(ConfigProblem::SeveralClusters { clusters }.into()),
    }
}

/// The contexts `--host [NAME=]tcp://HOST:PORT` asks for, as (name, endpoint).
///
/// # Errors
/// [`Invalid`] for a malformed host or name, or two hosts with one name.
fn host_contexts(args: &[String]) -> Result<Vec<(String, String)>, ClientError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for arg in args {
        let (name, url) = host_context(arg)?;
        if let Some((_, other)) = out.iter().find(|(n, _)| *n == name) {
            return Err(Invalid::SharedContextName {
                name,
                first: other.clone(),
                second: url,
            }
            .into());
        }
        out.push((name, url));
    }
    Ok(out)
}

/// One `--host [NAME=]tcp://HOST:PORT`. Without a name, the context is named after the
/// host, with the port when it is not Docker's TLS port 2376 (`tcp://db-1:2376` ->
/// `db-1`, `tcp://10.0.0.5:12376` -> `10.0.0.5-12376`, `tcp://[fd00::5]:2376` ->
/// `ip6-fd00--5`).
///
/// # Errors
/// [`Invalid`] naming the argument.
pub fn host_context(arg: &str) -> Result<(String, String), ClientError> {
    let (name, url) = match arg.split_once('=') {
        Some((name, url)) if !name.contains("://") => (Some(name.to_string()), url),
        _ => (None, arg),
    };
    let addr = EngineAddr::parse(url).map_err(|_| Invalid::Host {
        arg: arg.to_string(),
    })?;
    let name = name.unwrap_or_else(|| {
        let host = addr.host();
        let mut name = if host.contains(':') {
            format!("ip6-{}", host.replace(':', "-"))
        } else {
            host.to_string()
        };
        if addr.port() != 2376 {
            name = format!("{name}-{}", addr.port());
        }
        name
    });
    // The docker CLI's rule for context names.
    let valid = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if !valid {
        return Err(Invalid::ContextName {
            arg: arg.to_string(),
            name,
        }
        .into());
    }
    Ok((name, addr.to_string()))
}

/// `s` as one word for a POSIX shell (quoted only when it must be).
pub fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// An operator's access level, and what it means where.
pub fn access_note(access: dtca_pki::access::Access) -> String {
    match access {
        dtca_pki::access::Access::Full => "full".to_string(),
        level => format!(
            "{level} (guard engines allow reads only: lists, inspect, logs, events; native engines refuse this certificate)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_contexts_are_named_by_host_and_port_unless_named() {
        let name = |arg: &str| host_context(arg).unwrap().0;
        assert_eq!(name("tcp://db-1.example:2376"), "db-1.example");
        assert_eq!(name("tcp://10.0.0.5:12376"), "10.0.0.5-12376");
        assert_eq!(name("tcp://[fd00::5]:2376"), "ip6-fd00--5");
        assert_eq!(name("tcp://[::1]:19072"), "ip6---1-19072");
        assert_eq!(
            host_context("db=tcp://10.0.0.5:2376").unwrap(),
            ("db".to_string(), "tcp://10.0.0.5:2376".to_string())
        );
        for bad in ["a:1", "tcp://a", "-x=tcp://a:1", "tcp://a:port"] {
            assert!(host_context(bad).is_err(), "{bad}");
        }
        // Two engines on one address get two contexts; one name twice is refused.
        let two = host_contexts(&[
            "tcp://127.0.0.1:19070".into(),
            "tcp://127.0.0.1:19071".into(),
        ])
        .unwrap();
        assert_ne!(two[0].0, two[1].0);
        assert!(host_contexts(&["x=tcp://a:1".into(), "x=tcp://b:1".into()]).is_err());
    }

    #[test]
    fn env_quotes_what_the_shell_would_split() {
        assert_eq!(shell_quote("/home/a b/x"), "'/home/a b/x'");
        assert_eq!(shell_quote("tcp://h:1"), "tcp://h:1");
    }

    #[test]
    fn env_unset_undoes_every_export() {
        let exports = EnvExports {
            name: "n".into(),
            cluster: "c".into(),
            docker_host: "tcp://h:2376".into(),
            docker_tls_verify: "1".into(),
            docker_cert_path: "/x".into(),
        }
        .shell();
        let unset = env_unset();
        for line in exports.lines() {
            let var = line
                .trim_start_matches("export ")
                .split_once('=')
                .unwrap()
                .0;
            assert!(unset.split_whitespace().any(|w| w == var), "{var}");
        }
    }

    #[test]
    fn absent_inventory_values_are_none_and_times_rfc3339() {
        let view = NodeView::from_wire(v1::Node {
            name: "n".into(),
            not_after_unix: 1_796_260_296,
            ..Default::default()
        });
        assert_eq!(view.endpoint, None);
        assert_eq!(view.mode, None);
        assert_eq!(view.last_report, None);
        assert_eq!(view.not_after.as_deref(), Some("2026-12-03T01:11:36Z"));
        let json = serde_json::to_value(&view).unwrap();
        assert!(json["endpoint"].is_null() && json["last_report"].is_null());
    }
}
