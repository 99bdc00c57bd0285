//! The system under test: a real `ca-server` process (release binary, embedded store, a
//! temp state dir, keys encrypted with a passphrase file), and gRPC workers that enroll or
//! renew over persistent TLS connections.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dtca_common::tls::{self, ClientIdentity, ServerAddr, Trust};
use dtca_pki::token::JoinToken;
use dtca_proto::v1::{self, ca_client::CaClient};
use tonic::transport::Channel;

use crate::proc::{Child, output, wait_until};

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `ca-server`.
    pub server: PathBuf,
    /// `ca-client`.
    pub client: PathBuf,
}

impl Bins {
    /// The binaries next to this one (`target/release/`).
    ///
    /// # Errors
    /// When they are not there (build them with `cargo build --release`).
    pub fn beside_me() -> anyhow::Result<Bins> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("no directory for this executable")?;
        let bins = Bins {
            server: dir.join("ca-server"),
            client: dir.join("ca-client"),
        };
        for b in [&bins.server, &bins.client] {
            if !b.exists() {
                bail!(
                    "{} is missing: run cargo build --release -p ca-server -p ca-client",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A state directory made by `ca-server init`.
#[derive(Debug, Clone)]
pub struct State {
    /// The directory.
    pub dir: PathBuf,
    /// Its passphrase file.
    pub passphrase: PathBuf,
}

impl State {
    /// Runs `ca-server init` in `dir` (cluster `bench`, P-256, keys encrypted).
    ///
    /// # Errors
    /// When init fails.
    pub fn init(bins: &Bins, dir: &Path) -> anyhow::Result<State> {
        std::fs::create_dir_all(dir)?;
        let passphrase = dir.with_extension("passphrase");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // ca-server refuses a passphrase file others may read.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&passphrase)?
                .write_all(b"bench passphrase, not a secret\n")?;
        }
        output(
            Command::new(&bins.server)
                .args(["init", "--cluster", "bench", "--state-dir"])
                .arg(dir)
                .arg("--passphrase-file")
                .arg(&passphrase),
        )?;
        Ok(State {
            dir: dir.to_path_buf(),
            passphrase,
        })
    }

    /// The embedded database.
    pub fn store_db(&self) -> PathBuf {
        self.dir.join("store.db")
    }
}

/// A running `ca-server serve`.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its state.
    pub state: State,
}

impl Server {
    /// Starts `ca-server serve` on a free loopback port with default settings and waits
    /// until it listens.
    ///
    /// # Errors
    /// When it does not come up within 30 s.
    pub async fn start(bins: &Bins, state: &State) -> anyhow::Result<Server> {
        Server::start_with(bins, state, &[]).await
    }

    /// [`Server::start`] with extra `serve` flags (e.g. `--database URL`).
    ///
    /// # Errors
    /// When it does not come up within 30 s.
    pub async fn start_with(bins: &Bins, state: &State, extra: &[&str]) -> anyhow::Result<Server> {
        let addr_file = state.dir.join("server.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = state.dir.join("serve.log");
        let mut child = Child::spawn(
            "ca-server serve",
            Command::new(&bins.server)
                .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
                .arg(&state.dir)
                .arg("--passphrase-file")
                .arg(&state.passphrase)
                .args(extra),
            &log,
        )?;
        let up = wait_until(Duration::from_secs(30), || {
            child.exited().is_some()
                || (addr_file.exists() && child.log_text().contains("ca-server listening"))
        })
        .await;
        if !up || child.exited().is_some() {
            bail!("ca-server serve did not start: {}", child.log_text());
        }
        let addr = std::fs::read_to_string(&addr_file)?.trim().to_string();
        Ok(Server {
            child,
            addr,
            state: state.clone(),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `ca-server token create --role node --uses N --ttl 24h`, through the real CLI.
    ///
    /// # Errors
    /// When the CLI fails.
    pub fn token(&self, bins: &Bins, uses: u32) -> anyhow::Result<String> {
        let out = output(
            Command::new(&bins.server)
                .args([
                    "token", "create", "--quiet", "--role", "node", "--ttl", "24h", "--uses",
                ])
                .arg(uses.to_string())
                .arg("--state-dir")
                .arg(&self.state.dir),
        )?;
        Ok(out.trim().to_string())
    }

    /// Stops the server (SIGTERM).
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// TLS client config for enrollment: the server is trusted by the root digest in the
/// token, as `ca-client enroll` does; no client certificate; no session resumption
/// (every simulated node is a different machine).
///
/// # Errors
/// When the token is malformed.
pub fn enroll_config(token: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let token: JoinToken = token.parse().context("parse the join token")?;
    let mut config = (*tls::client_config(Trust::Pinned(token.root), None)?).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Mutual-TLS client config with a node certificate, for renewal.
///
/// # Errors
/// When the key is unusable.
pub fn renew_config(node: &Node) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    Ok(tls::client_config(
        Trust::Root(node.root_der.clone()),
        Some(ClientIdentity {
            chain: vec![node.leaf_der.clone(), node.intermediate_der.clone()],
            key_pkcs8: node.key_pkcs8.clone(),
        }),
    )?)
}

/// A persistent TLS connection for enrollment through tonic, as `ca-client enroll` makes
/// it (see [`enroll_config`]).
///
/// # Errors
/// When the token is malformed or the connection fails.
pub async fn enroll_channel(addr: &str, token: &str) -> anyhow::Result<Channel> {
    Ok(tls::connect(&ServerAddr::parse(addr)?, enroll_config(token)?).await?)
}

/// An enrolled node: its certificate and key.
#[derive(Debug, Clone)]
pub struct Node {
    /// Leaf, DER.
    pub leaf_der: Vec<u8>,
    /// Issuing intermediate, DER.
    pub intermediate_der: Vec<u8>,
    /// Root, DER.
    pub root_der: Vec<u8>,
    /// The leaf's key, PKCS#8.
    pub key_pkcs8: Vec<u8>,
}

/// Enrolls one node with a fresh key, in process.
///
/// # Errors
/// When the CA refuses.
pub async fn enroll_node(channel: Channel, token: &str, name: &str) -> anyhow::Result<Node> {
    let key = dtca_pki::PrivateKey::generate(dtca_pki::KeyType::P256)?;
    let csr = dtca_pki::csr::build(&key, name, &[format!("{name}.bench.internal")], &[])?;
    let issued = CaClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.to_string(),
            csr_der: csr,
            name: name.to_string(),
        })
        .await?
        .into_inner();
    let info = dtca_pki::CertInfo::from_der(&issued.leaf_der)?;
    if info.public_key_der != key.public_key_der() {
        bail!("the enrolled certificate is not for the key sent");
    }
    Ok(Node {
        leaf_der: issued.leaf_der,
        intermediate_der: issued.intermediate_der,
        root_der: issued.root_der,
        key_pkcs8: key.pkcs8_der().to_vec(),
    })
}

/// How many connections carry `in_flight` requests: a fleet has many connections, and
/// HTTP/2 multiplexes a few requests on each (four per connection, at least one).
pub fn connections_for(in_flight: usize) -> usize {
    in_flight.div_ceil(4).max(1)
}
