//! The fleet view at scale (`dtca-bench fleet`): a release `ca-server` with `--ui-listen`,
//! `nodes` enrolled nodes, and as many simulated agents in this process, each holding its
//! own mutually-authenticated `Watch` channel open from one of `addresses` loopback source
//! addresses (127.0.1.x, many agents behind each, as behind a NAT) and sending a `Report`.
//!
//! Measured: the CA's CPU per report, its memory with every channel open, `ca-server fleet
//! --json` (the real CLI, end to end) and the page's `/data.json`, and how long a
//! revocation takes to reach every channel. Prints Markdown rows for BENCHMARKS.md.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dtca_proto::v1::{self, agent_event::Event, ca_client::CaClient};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::{Mutex, Semaphore};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::dtca::{Bins, Node, Server, State, enroll_channel, enroll_node, renew_config};
use crate::proc::{Usage, output};

/// What one run measured.
#[derive(Debug, Default)]
struct Measured {
    nodes: usize,
    addresses: usize,
    enroll: Duration,
    connect: Duration,
    open: usize,
    report_cpu: Duration,
    reports: usize,
    rss_idle_kib: u64,
    rss_open_kib: u64,
    cli: Vec<Duration>,
    cli_rows: usize,
    page: Vec<Duration>,
    page_bytes: usize,
    /// The load average (1, 5, 15 minutes) as the views were measured.
    load: String,
    fanout: Option<Duration>,
    reached: usize,
}

/// Runs the fleet benchmark and prints its rows.
///
/// # Errors
/// When the server does not start or the fleet cannot be built.
pub async fn run(nodes: usize, addresses: usize) -> anyhow::Result<()> {
    raise_open_files(nodes)?;
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory for this executable")?;
    let bins = Bins {
        server: dir.join("ca-server"),
        client: dir.join("ca-client"),
    };
    if !bins.server.exists() {
        bail!(
            "{} is missing: cargo build --release -p ca-server",
            bins.server.display()
        );
    }
    let work = tempfile::tempdir()?;
    let state = State::init(&bins, &work.path().join("ca"))?;
    let ui = free_port()?;
    let ui_addr = format!("127.0.0.1:{ui}");
    let mut server = Server::start_with(&bins, &state, &["--ui-listen", &ui_addr]).await?;
    let result = measure(&bins, &server, &ui_addr, nodes, addresses).await;
    server.stop();
    let m = result?;
    print(&m);
    Ok(())
}

async fn measure(
    bins: &Bins,
    server: &Server,
    ui: &str,
    nodes: usize,
    addresses: usize,
) -> anyhow::Result<Measured> {
    let pid = server.pid().to_string();
    let mut m = Measured {
        nodes,
        addresses,
        ..Measured::default()
    };
    let token = server.token(bins, u32::try_from(nodes)?)?;

    // Enroll every node (not measured against a target).
    let started = Instant::now();
    let channels: Vec<Channel> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(enroll_channel(&server.addr, &token).await?);
        }
        v
    };
    let gate = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = (0..nodes)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            let token = token.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.acquire_owned().await?;
                enroll_node(channel, &token, &format!("fleet-{i:05}")).await
            })
        })
        .collect();
    let mut fleet: Vec<Node> = Vec::with_capacity(nodes);
    for t in tasks {
        fleet.push(t.await??);
    }
    m.enroll = started.elapsed();
    eprintln!("enrolled {nodes} nodes in {:.1} s", m.enroll.as_secs_f64());
    m.rss_idle_kib = Usage::of(&pid)?.rss_kib;

    // Open a channel per node, from 127.0.1.(1..=addresses).
    let server_addr: SocketAddr = server.addr.parse()?;
    let heard = Arc::new(AtomicUsize::new(0));
    let revoked_serial: Arc<Mutex<Option<(String, Instant)>>> = Arc::new(Mutex::new(None));
    let reached = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(128));
    let tasks: Vec<_> = fleet
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let node = node.clone();
            let gate = gate.clone();
            let heard = heard.clone();
            let revoked = revoked_serial.clone();
            let reached = reached.clone();
            let octet = u8::try_from(1 + i % addresses).unwrap_or(1);
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, octet));
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await?;
                let channel = connect_from(source, server_addr, &node).await?;
                let mut client = CaClient::new(channel.clone());
                let mut stream = client
                    .watch(v1::WatchRequest {
                        revoked_since_unix: 0,
                    })
                    .await?
                    .into_inner();
                // The Hello says the stream is open.
                stream.message().await?;
                heard.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                tokio::spawn(async move {
                    while let Ok(Some(event)) = stream.message().await {
                        if let Some(Event::Revocations(list)) = event.event {
                            let target = revoked.lock().await.clone();
                            if let Some((serial, at)) = target
                                && list.revoked.iter().any(|r| r.serial == serial)
                            {
                                reached.lock().await.push(at.elapsed());
                            }
                        }
                    }
                });
                anyhow::Ok(channel)
            })
        })
        .collect();
    let mut agents = Vec::with_capacity(nodes);
    for t in tasks {
        match t.await? {
            Ok(c) => agents.push(c),
            Err(e) => eprintln!("a channel did not open: {e:#}"),
        }
    }
    m.connect = started.elapsed();
    m.open = heard.load(Ordering::Relaxed);
    eprintln!(
        "{} channels open in {:.1} s",
        m.open,
        m.connect.as_secs_f64()
    );

    // One report per node, as agents send at start.
    let before = Usage::of(&pid)?;
    let gate = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = agents
        .iter()
        .zip(&fleet)
        .map(|(channel, node)| {
            let mut client = CaClient::new(channel.clone());
            let serial = dtca_pki::CertInfo::from_der(&node.leaf_der)
                .map(|c| c.serial.to_string())
                .unwrap_or_default();
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.acquire_owned().await?;
                client.report(report(serial)).await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        if t.await?.is_ok() {
            m.reports += 1;
        }
    }
    let after = Usage::of(&pid)?;
    m.report_cpu = after.cpu_since(&before);
    m.rss_open_kib = after.rss_kib;
    eprintln!("{} reports", m.reports);

    // The views, five times each.
    m.load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    for _ in 0..5 {
        let t = Instant::now();
        let text = output(
            Command::new(&bins.server)
                .args(["fleet", "--json", "--state-dir"])
                .arg(&server.state.dir),
        )?;
        m.cli.push(t.elapsed());
        let view: serde_json::Value = serde_json::from_str(&text)?;
        m.cli_rows = view["nodes"].as_array().map_or(0, Vec::len);
    }
    for _ in 0..5 {
        let ui = ui.to_string();
        let (took, body) =
            tokio::task::spawn_blocking(move || http_get(&ui, "/data.json")).await??;
        m.page.push(took);
        m.page_bytes = body.len();
        let data: serde_json::Value = serde_json::from_slice(&body)?;
        if data["fleet"]["nodes"].as_array().map_or(0, Vec::len) != nodes {
            bail!("the data endpoint did not list every node");
        }
    }

    // A revocation reaches every channel.
    let victim = dtca_pki::CertInfo::from_der(&fleet[0].leaf_der)?
        .serial
        .to_string();
    *revoked_serial.lock().await = Some((victim.clone(), Instant::now()));
    output(
        Command::new(&bins.server)
            .args(["cert", "revoke", &victim, "--state-dir"])
            .arg(&server.state.dir),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && reached.lock().await.len() < m.open {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reached = reached.lock().await;
    m.reached = reached.len();
    m.fanout = reached.iter().max().copied();
    drop(agents);
    Ok(m)
}

fn report(serial: String) -> v1::AgentReport {
    v1::AgentReport {
        serial,
        mode: "native".into(),
        engine_healthy: true,
        swarm_role: "worker".into(),
        engine_version: "20.10.24+dfsg1".into(),
        agent_version: "0.1.0".into(),
        addresses: vec!["10.0.0.5".into(), "fd00::5".into()],
        last_rotation_unix: 1_800_000_000,
        next_renewal_unix: 1_801_000_000,
        ..Default::default()
    }
}

/// One mutually-authenticated HTTP/2 connection from `source` to the CA, as an agent's.
async fn connect_from(source: IpAddr, server: SocketAddr, node: &Node) -> anyhow::Result<Channel> {
    let config = renew_config(node)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(server).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(name, tcp).await?;
    let slot = Arc::new(std::sync::Mutex::new(Some(tls)));
    let service = tower::service_fn(move |_: Uri| {
        let slot = slot.clone();
        async move {
            let stream = slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(|| std::io::Error::other("an agent connects once"))?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(Endpoint::from_shared(format!("http://{server}"))?
        .connect_with_connector(service)
        .await?)
}

fn http_get(addr: &str, path: &str) -> anyhow::Result<(Duration, Vec<u8>)> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let took = t.elapsed();
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header")?;
    if !raw.starts_with(b"HTTP/1.1 200") {
        bail!("{path}: {}", String::from_utf8_lossy(&raw[..at]));
    }
    Ok((took, raw[at + 4..].to_vec()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Room for a connection per node and then some (the hard limit permitting).
fn raise_open_files(nodes: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let want = (nodes as u64 + 1024).min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard)?;
    if want < nodes as u64 + 64 {
        bail!("the open-file limit ({hard}) leaves no room for {nodes} connections");
    }
    Ok(())
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn print(m: &Measured) {
    let per_report = m
        .report_cpu
        .checked_div(u32::try_from(m.reports.max(1)).unwrap_or(1))
        .unwrap_or_default();
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };
    let cli = median(&m.cli);
    let page = median(&m.page);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{} nodes enrolled in {:.1} s; {} of {} channels open in {:.1} s from {} source addresses ({} agents each); {} reports",
        m.nodes,
        m.enroll.as_secs_f64(),
        m.open,
        m.nodes,
        m.connect.as_secs_f64(),
        m.addresses,
        m.nodes.div_ceil(m.addresses.max(1)),
        m.reports
    );
    println!("load average as the views were measured: {}", m.load);
    println!();
    println!("| target | result | met |");
    println!("|---|---|---|");
    let runs = |all: &[Duration]| all.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!(
        "| `fleet --json` with {} reporting nodes <= 200 ms | median {} of 5 ({}; the whole CLI: start, TLS, {} rows) | {} |",
        m.nodes,
        ms(cli),
        runs(&m.cli),
        m.cli_rows,
        yes(cli <= Duration::from_millis(200))
    );
    println!(
        "| the page's `/data.json` <= 200 ms | median {} of 5 ({}; {:.1} MiB) | {} |",
        ms(page),
        runs(&m.page),
        m.page_bytes as f64 / 1_048_576.0,
        yes(page <= Duration::from_millis(200))
    );
    println!(
        "| a report costs the CA < 1 ms of CPU | {:.0} µs ({} reports, {:.2} s of CPU) | {} |",
        per_report.as_secs_f64() * 1e6,
        m.reports,
        m.report_cpu.as_secs_f64(),
        yes(per_report < Duration::from_millis(1))
    );
    println!(
        "| CA memory with {} open agent channels < 512 MiB | RSS {:.0} MiB ({:.0} MiB before the channels opened) | {} |",
        m.open,
        mib(m.rss_open_kib),
        mib(m.rss_idle_kib),
        yes(m.rss_open_kib < 512 * 1024)
    );
    match m.fanout {
        Some(f) => println!(
            "| a revocation reaches all {} channels within 5 s | {} reached, the last after {} (from the start of `cert revoke`) | {} |",
            m.open,
            m.reached,
            ms(f),
            yes(m.reached == m.open && f <= Duration::from_secs(5))
        ),
        None => println!(
            "| a revocation reaches all {} channels within 5 s | none reached within 30 s | **no** |",
            m.open
        ),
    }
}
