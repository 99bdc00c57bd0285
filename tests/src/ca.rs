//! A CA served in-process through the same entry point the binary uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ca_server::metrics::Metrics;
use ca_server::registrar::{Registrar, Rules};
use ca_server::server::{self, ServerOptions};
use ca_server::state::{Passphrase, StateDir};
use ca_server::store::Store;
use ca_server::store::sqlite::SqliteStore;
use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::{self, ClientIdentity, ServerAddr, Trust};
use dtca_pki::key::KeyType;
use dtca_pki::token::RootDigest;
use dtca_proto::v1::{self, admin_client::AdminClient, ca_client::CaClient};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A running CA.
#[derive(Debug)]
pub struct TestCa {
    /// Holds the state directory.
    pub dir: tempfile::TempDir,
    /// The state directory.
    pub state: StateDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The registrar behind the server.
    pub registrar: Arc<Registrar>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestCa {
    /// Initialises a CA for cluster `test` and serves it on 127.0.0.1:0.
    pub async fn start() -> TestCa {
        Self::start_with(Rules::default()).await
    }

    /// The same with operator rules (renewal grace).
    pub async fn start_with(rules: Rules) -> TestCa {
        Self::start_configured(rules, |_| {}).await
    }

    /// The same with server options changed by `configure` (connection limits).
    pub async fn start_configured(
        rules: Rules,
        configure: impl FnOnce(&mut ServerOptions),
    ) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("ca"));
        state
            .init(
                "test",
                KeyType::P256,
                &Passphrase::InsecureNone,
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        let (authority, _) = state.load_authority(&Passphrase::InsecureNone).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&state.store_path()).unwrap());
        let registrar = Arc::new(Registrar::new(
            authority,
            store,
            rules,
            Arc::new(Metrics::default()),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        state.record_server_addr(addr).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServerOptions {
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            name: "test-ca".into(),
            handshake_timeout: Duration::from_secs(5),
            health_interval: Duration::from_millis(200),
            ..ServerOptions::default()
        };
        let mut options = options;
        configure(&mut options);
        let r = registrar.clone();
        let task = tokio::spawn(async move {
            server::run(listener, r, options, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let ca = TestCa {
            dir,
            state,
            addr,
            registrar,
            stop: Some(stop),
            task: Some(task),
        };
        ca.wait_healthy().await;
        ca
    }

    /// `HOST:PORT` for clients.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// Parsed address.
    pub fn server_addr(&self) -> ServerAddr {
        ServerAddr::parse(&self.server()).unwrap()
    }

    /// The root's digest, as in tokens.
    pub fn root_digest(&self) -> RootDigest {
        self.registrar.ca().active_root().digest()
    }

    /// The admin bundle made at init.
    pub fn admin_bundle(&self) -> Bundle {
        Bundle::load(&self.state.admin_dir(), Layout::CLIENT).unwrap()
    }

    /// Where the admin bundle is.
    pub fn admin_dir(&self) -> PathBuf {
        self.state.admin_dir()
    }

    /// A channel authenticated with `bundle`'s certificate, trusting this CA's root.
    pub async fn channel_as(&self, bundle: &Bundle) -> Channel {
        self.channel_with(Some(bundle.client_identity())).await
    }

    /// A channel trusting this CA's root with an optional client identity.
    pub async fn channel_with(&self, identity: Option<ClientIdentity>) -> Channel {
        let config =
            tls::client_config(Trust::Roots(self.registrar.ca().roots()), identity).unwrap();
        tls::connect(&self.server_addr(), config).await.unwrap()
    }

    /// An admin API client with the init admin bundle.
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel_as(&self.admin_bundle()).await)
    }

    /// A `Ca` API client without a client certificate.
    pub async fn anonymous(&self) -> CaClient<Channel> {
        CaClient::new(self.channel_with(None).await)
    }

    /// Creates a token through the admin API.
    pub async fn token(&self, request: v1::CreateTokenRequest) -> String {
        self.admin()
            .await
            .create_token(request)
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// A node token with `uses` uses and no limits.
    pub async fn node_token(&self, uses: u32) -> String {
        self.token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            uses,
            ..Default::default()
        })
        .await
    }

    async fn wait_healthy(&self) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut health = HealthClient::new(self.channel_with(None).await);
        // The health loop reports the server first, then each service: wait for all.
        for _ in 0..250 {
            let mut serving = true;
            for service in ["", "dtca.v1.Ca", "dtca.v1.Admin"] {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                serving &= status.ok() == Some(ServingStatus::Serving as i32);
            }
            if serving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the CA never became healthy");
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
