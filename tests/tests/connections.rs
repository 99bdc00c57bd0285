//! Connection exhaustion (issue 11): TLS connections that finish the handshake and then
//! say nothing must not starve everyone else. Idle strangers are capped per source
//! address and closed at deadlines; agents with their certificate are never capped and a
//! call in flight is never cut. Sources are loopback addresses (127.0.0.2, 127.0.0.3)
//! bound as the clients' local address; the CA listens on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Timing the enrollment and the deadlines needs the wall clock of the test process.
#![allow(clippy::disallowed_types)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_client::enroll::{self, EnrollOptions};
use ca_server::registrar::Rules;
use dtca_common::bundle::Bundle;
use dtca_common::tls::{self, ClientIdentity, Trust};
use dtca_pki::key::KeyType;
use dtca_proto::v1::{self, ca_client::CaClient};
use dtca_tests::ca::TestCa;
use dtca_tests::serve::{ServeProcess, init_insecure};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const NEIGHBOUR: [u8; 4] = [127, 0, 0, 3];

fn ip(octets: [u8; 4]) -> IpAddr {
    IpAddr::from(octets)
}

/// A TCP connection to `server` from `source`.
async fn dial(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(server).await
}

/// A TLS connection from `source` that finished its handshake (no client certificate
/// unless `identity`) and then sends nothing: no HTTP/2 preface, no request.
async fn idle_tls(
    source: IpAddr,
    server: SocketAddr,
    root: &[u8],
    identity: Option<ClientIdentity>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let config = tls::client_config(Trust::Root(root.to_vec()), identity).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = dial(source, server).await?;
    let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// A gRPC channel over one TLS connection from `source` (it does not reconnect).
async fn channel_from(source: IpAddr, ca: &TestCa, identity: Option<ClientIdentity>) -> Channel {
    let root = ca.registrar.ca().active_root().der.clone();
    let tls = idle_tls(source, ca.addr, &root, identity).await.unwrap();
    let once = Arc::new(Mutex::new(Some(tls)));
    Endpoint::from_static("http://127.0.0.1")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = once.lock().unwrap().take();
            async move {
                stream
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("this channel's connection is gone"))
            }
        }))
        .await
        .unwrap()
}

/// Whether the server closed `stream` within `wait` (end of stream or reset).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// A node certificate of `ca`, for agent-like connections.
async fn node_identity(ca: &TestCa) -> ClientIdentity {
    let out = tempfile::tempdir().unwrap();
    let token = ca.node_token(1).await;
    let obtained = enroll::enroll(&EnrollOptions {
        server: ca.server(),
        token,
        name: "agent-1".into(),
        extra_sans: vec!["agent-1.example.com".into()],
        default_sans: false,
        key_type: KeyType::P256,
        out: out.path().to_path_buf(),
    })
    .await
    .unwrap();
    obtained.bundle.client_identity()
}

/// Waits until the CA's counter `series` (name and labels) reaches at least `at_least`.
async fn wait_for_metric(ca: &TestCa, series: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = ca.registrar.metrics().render();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scenario, on the real binary with a real open-file limit: with the old
/// accept loop, 260 idle TLS connections from one address used up the 256 descriptors
/// and every other client hung.
#[test]
fn twice_the_per_address_limit_of_idle_connections_leaves_an_enrollment_from_another_address_working()
 {
    const OPEN_FILES: u64 = 256;
    const PER_ADDRESS: usize = 130;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    // By environment, so that the same test also runs against a server without the flag.
    let serve = ServeProcess::start_under_ulimit(
        &state,
        &format!("-n {OPEN_FILES}"),
        &["--insecure-no-passphrase"],
        &[(
            "DTCA_MAX_UNAUTHENTICATED_PER_ADDRESS",
            &PER_ADDRESS.to_string(),
        )],
    );
    let server: SocketAddr = serve.addr.parse().unwrap();
    let token = dtca_tests::cli::token(&state, &["--role", "node", "--uses", "2"]);
    let root = std::fs::read_to_string(state.join("ca.pem")).unwrap();
    let root = dtca_pki::inspect::certs_from_pem(&root).unwrap().remove(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let enroll_once = |name: &str| {
        let out = dir.path().join(name);
        let options = EnrollOptions {
            server: serve.addr.clone(),
            token: token.clone(),
            name: name.into(),
            extra_sans: vec![format!("{name}.example.com")],
            default_sans: false,
            key_type: KeyType::P256,
            out,
        };
        runtime.block_on(async {
            let started = Instant::now();
            let result =
                tokio::time::timeout(Duration::from_secs(15), enroll::enroll(&options)).await;
            (result, started.elapsed())
        })
    };

    // How long an enrollment takes on this machine right now, with no one else around.
    let (quiet, quiet_time) = enroll_once("before");
    quiet.expect("enrollment timed out").unwrap();

    let attack = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..2 * PER_ADDRESS {
            let root = root.clone();
            tasks.push(tokio::spawn(async move {
                idle_tls(ip(ATTACKER), server, &root, None).await
            }));
        }
        let mut held = Vec::new();
        for task in tasks {
            if let Ok(stream) = task.await.unwrap() {
                held.push(stream);
            }
        }
        held
    });

    let (under_attack, attacked_time) = enroll_once("during");
    let log = serve.log_text();
    under_attack
        .unwrap_or_else(|_| panic!("enrollment hung behind idle connections; log:\n{log}"))
        .unwrap();
    // The enrollment is judged against the same one on the same machine a moment before:
    // within a second, or within four times the quiet one when the machine is so busy
    // that the quiet one already took a quarter of a second.
    let allowed = Duration::from_secs(1).max(quiet_time * 4);
    assert!(
        attacked_time < allowed,
        "enrollment took {attacked_time:?} under attack ({quiet_time:?} without)"
    );

    // Exactly the limit was served; the rest were closed at once.
    let mut attack = attack;
    assert_eq!(attack.len(), PER_ADDRESS, "handshakes served; log:\n{log}");
    let still_open = runtime.block_on(async {
        let mut open = 0;
        for stream in &mut attack {
            if !closed_within(stream, Duration::from_millis(1)).await {
                open += 1;
            }
        }
        open
    });
    assert_eq!(still_open, PER_ADDRESS, "log:\n{log}");
    assert!(!log.contains("accept failed"), "accept errors:\n{log}");
    let refusal_lines = log.matches("refused").count();
    assert!(
        (1..=5).contains(&refusal_lines),
        "{refusal_lines} refusal lines for {PER_ADDRESS} refusals:\n{log}"
    );
    eprintln!(
        "enrollment: {quiet_time:?} alone, {attacked_time:?} with {} idle connections held and {} refused",
        still_open,
        2 * PER_ADDRESS - still_open
    );
    drop(attack);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_at_its_limit_has_further_connections_closed_while_other_sources_are_served() {
    let ca = TestCa::start_configured(Rules::default(), |o| {
        o.max_unauthenticated_per_address = 3;
    })
    .await;
    let root = ca.registrar.ca().active_root().der.clone();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_tls(ip(ATTACKER), ca.addr, &root, None).await.unwrap());
    }
    // The fourth is accepted by the kernel, then closed by the server before any TLS.
    assert!(idle_tls(ip(ATTACKER), ca.addr, &root, None).await.is_err());
    wait_for_metric(
        &ca,
        "dtca_connections_ended_total{reason=\"address-limit\"}",
        1,
    )
    .await;
    // Another address is served as usual.
    let neighbour = channel_from(ip(NEIGHBOUR), &ca, None).await;
    assert!(health(neighbour).await.is_ok());
    // A slot given back is free again.
    held.pop();
    let mut fresh = None;
    for _ in 0..100 {
        if let Ok(s) = idle_tls(ip(ATTACKER), ca.addr, &root, None).await {
            fresh = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fresh.is_some(), "the freed slot never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_certificates_behind_one_address_never_count_against_its_limit() {
    let ca = TestCa::start_configured(Rules::default(), |o| {
        o.max_unauthenticated_per_address = 2;
    })
    .await;
    let identity = node_identity(&ca).await;
    let clone = |i: &ClientIdentity| ClientIdentity {
        chain: i.chain.clone(),
        key_pkcs8: i.key_pkcs8.clone(),
    };
    // Eight agents share 127.0.0.2, each with its channel open after a first call.
    let mut agents = Vec::new();
    for _ in 0..8 {
        let channel = channel_from(ip(ATTACKER), &ca, Some(clone(&identity))).await;
        health(channel.clone()).await.unwrap();
        agents.push(channel);
    }
    // The address still has its whole budget for newcomers.
    let root = ca.registrar.ca().active_root().der.clone();
    let _a = idle_tls(ip(ATTACKER), ca.addr, &root, None).await.unwrap();
    let _b = idle_tls(ip(ATTACKER), ca.addr, &root, None).await.unwrap();
    assert!(idle_tls(ip(ATTACKER), ca.addr, &root, None).await.is_err());
    for channel in agents {
        health(channel).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_certificate_of_this_ca_count_even_after_requests() {
    let ca = TestCa::start_configured(Rules::default(), |o| {
        o.max_unauthenticated_per_address = 2;
    })
    .await;
    // A certificate of another CA is no certificate here.
    let other = TestCa::start().await;
    let foreign = node_identity(&other).await;
    let anonymous = channel_from(ip(ATTACKER), &ca, None).await;
    CaClient::new(anonymous.clone())
        .trust_bundle(v1::TrustBundleRequest {})
        .await
        .unwrap();
    let foreign_channel = channel_from(ip(ATTACKER), &ca, Some(foreign)).await;
    let _ = health(foreign_channel.clone()).await;
    let root = ca.registrar.ca().active_root().der.clone();
    assert!(idle_tls(ip(ATTACKER), ca.addr, &root, None).await.is_err());
    drop((anonymous, foreign_channel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_closed_at_its_deadline() {
    let ca = TestCa::start_configured(Rules::default(), |o| {
        o.handshake_timeout = Duration::from_millis(500);
        o.first_request_timeout = Duration::from_millis(500);
    })
    .await;
    let root = ca.registrar.ca().active_root().der.clone();
    let started = Instant::now();
    let mut silent_tls = idle_tls(ip(ATTACKER), ca.addr, &root, None).await.unwrap();
    assert!(closed_within(&mut silent_tls, Duration::from_secs(20)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed early"
    );
    wait_for_metric(
        &ca,
        "dtca_connections_ended_total{reason=\"no-request\"}",
        1,
    )
    .await;

    // Nothing at all, not even a ClientHello: the handshake deadline.
    let mut silent_tcp = dial(ip(ATTACKER), ca.addr).await.unwrap();
    assert!(closed_within(&mut silent_tcp, Duration::from_secs(20)).await);
    wait_for_metric(
        &ca,
        "dtca_connections_ended_total{reason=\"handshake-timeout\"}",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_keeps_its_connection_open_past_the_idle_timeout() {
    let ca = TestCa::start_configured(Rules::default(), |o| {
        o.idle_timeout = Duration::from_millis(300);
        o.first_request_timeout = Duration::from_millis(300);
    })
    .await;
    let identity = node_identity(&ca).await;
    let channel = channel_from(ip(ATTACKER), &ca, Some(identity)).await;
    // A server-streaming call, as the agents' long-lived channel will be.
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    // Five idle timeouts go by: the stream stays open and the connection with it.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), watch.message()).await;
    assert!(quiet.is_err(), "the stream ended: {quiet:?}");
    // The channel cannot reconnect: this call proves its one connection is still there.
    health(channel).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_nothing_in_flight_is_closed_after_the_idle_timeout_and_clients_reconnect()
 {
    let ca = TestCa::start_configured(Rules::default(), |o| {
        o.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let token = ca.node_token(1).await;
    let obtained = enroll::enroll(&EnrollOptions {
        server: ca.server(),
        token,
        name: "agent-2".into(),
        extra_sans: vec!["agent-2.example.com".into()],
        default_sans: false,
        key_type: KeyType::P256,
        out: out.path().to_path_buf(),
    })
    .await
    .unwrap();
    let bundle: Bundle = obtained.bundle;
    let channel = ca.channel_as(&bundle).await;
    health(channel.clone()).await.unwrap();
    wait_for_metric(&ca, "dtca_connections_ended_total{reason=\"idle\"}", 1).await;
    // The close was a GOAWAY: the client's channel dials again for the next call.
    health(channel).await.unwrap();
}

#[test]
fn serve_raises_its_soft_open_file_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let serve =
        ServeProcess::start_under_ulimit(&state, "-S -n 300", &["--insecure-no-passphrase"], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", serve.proc.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {line}");
    assert!(
        serve.log_text().contains("raised the open-file limit"),
        "{}",
        serve.log_text()
    );
}

#[test]
fn serve_refuses_zero_limits_and_malformed_timeouts_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let out = dtca_tests::cli::run(
        "ca-server",
        &[
            "serve",
            "--insecure-no-passphrase",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
            "--max-connections",
            "0",
            "--max-unauthenticated-per-address",
            "0",
            "--handshake-timeout",
            "5x",
            "--idle-timeout",
            "0s",
        ],
    );
    dtca_tests::cli::expect_exit(&out, dtca_common::Reason::Config);
    let text = dtca_tests::cli::text(&out);
    for name in [
        "--max-connections",
        "--max-unauthenticated-per-address",
        "handshake-timeout",
        "idle-timeout",
    ] {
        assert!(text.contains(name), "{name} not named: {text}");
    }
}

#[test]
fn serve_accepts_the_connection_limits_as_flags() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let serve = ServeProcess::start(
        &state,
        &[
            "--insecure-no-passphrase",
            "--max-connections",
            "500",
            "--max-unauthenticated-per-address",
            "50",
            "--handshake-timeout",
            "5s",
            "--idle-timeout",
            "10m",
        ],
        &[],
    );
    // A client gets its answer through the limits.
    let token = dtca_tests::cli::token(&state, &["--role", "node"]);
    assert!(token.starts_with("DTCA-1-"), "{}", serve.log_text());
}

#[test]
fn the_shipped_units_set_an_open_file_limit_with_room_for_the_default_connections() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("dist/systemd");
    for unit in [
        "ca-server.service",
        "dtca-agent.service",
        "dtca-enroll.service",
    ] {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        let limit: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .unwrap_or_else(|| panic!("{unit} sets no LimitNOFILE="))
            .trim()
            .parse()
            .unwrap();
        if unit == "ca-server.service" {
            let default = ca_server::server::ServerOptions::default().max_connections;
            assert!(
                ca_server::server::fd_limit::room_for_connections(limit) >= default,
                "LimitNOFILE={limit} leaves no room for {default} connections"
            );
        }
    }
}
