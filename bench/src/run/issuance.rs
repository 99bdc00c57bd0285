//! The load rows: dtca over persistent connections (embedded store and PostgreSQL), cfssl,
//! the profiled run, and `dtca-bench drive`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dtca_proto::v1;

use super::say_run;
use crate::cfssl::{self, Cfssl, CfsslWorker};
use crate::csrs;
use crate::dtca::{Bins, Node, Server, State, connections_for, enroll_config, renew_config};
use crate::grpc::{self, UnaryWorker};
use crate::load::{self, Outcome, Window};
use crate::pg::Postgres;
use crate::proc::output;
use crate::profile::{self, Profile};

/// Pre-encoded requests to one method of a running server, and how to trust it.
#[derive(Debug)]
pub(super) struct Requests {
    addr: String,
    config: Arc<rustls::ClientConfig>,
    path: &'static str,
    bodies: grpc::Bodies,
}

impl Requests {
    /// `Enroll` with the multi-use `token`, a distinct identity of `enrollments` each time
    /// (clones of it share what was sent: one server's enrollments).
    pub(super) fn enroll(
        addr: &str,
        token: &str,
        enrollments: &csrs::Enrollments,
    ) -> anyhow::Result<Self> {
        Ok(Requests {
            addr: addr.to_string(),
            config: enroll_config(token)?,
            path: "/dtca.v1.Ca/Enroll",
            bodies: grpc::Bodies::Enroll {
                token: token.into(),
                enrollments: enrollments.clone(),
            },
        })
    }

    /// `Renew` over mutual TLS with `node`'s certificate, a new key each time (of `keys`
    /// made now), asking for no names: the node keeps its own (the pool's DNS names belong
    /// to the identities enrolled under them).
    pub(super) fn renew(addr: &str, node: &Node, keys: usize) -> anyhow::Result<Self> {
        let bodies = csrs::without_names(keys)?
            .into_iter()
            .map(|csr_der| grpc::frame(&v1::RenewRequest { csr_der }))
            .collect();
        Ok(Requests {
            addr: addr.to_string(),
            config: renew_config(node)?,
            path: "/dtca.v1.Ca/Renew",
            bodies: grpc::Bodies::Cycled(Arc::new(bodies)),
        })
    }

    /// `n` requests in flight over [`connections_for`]`(n)` persistent connections.
    pub(super) async fn run(
        &self,
        n: usize,
        window: Window,
        pids: &[u32],
    ) -> anyhow::Result<Outcome> {
        let conns = connections_for(n);
        let mut connections = Vec::new();
        for _ in 0..conns {
            connections.push(grpc::Connection::open(&self.addr, self.config.clone()).await?);
        }
        let workers = (0..n)
            .map(|i| UnaryWorker {
                conn: connections[i % conns].clone(),
                path: self.path,
                bodies: self.bodies.clone(),
            })
            .collect();
        Ok(load::run(workers, conns, window, pids).await)
    }
}

/// Enroll load against a running server (`dtca-bench drive`), printed as one line.
///
/// # Errors
/// When the CSRs cannot be made or the server cannot be reached.
pub async fn drive(
    addr: String,
    token: String,
    in_flight: usize,
    measure: Duration,
    csrs: usize,
    pid: Option<u32>,
    storm: Option<usize>,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Names of their own: the server may hold the names of an earlier run.
    let prefix = format!(
        "drive{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let enrollments =
        tokio::task::spawn_blocking(move || csrs::Enrollments::generate(csrs, cores, &prefix))
            .await??;
    if let Some(nodes) = storm {
        let s = crate::storm::run(
            &addr,
            &token,
            &enrollments,
            nodes,
            in_flight,
            pid.unwrap_or(0),
        )
        .await;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / s.enrolled.max(1) as f64;
        println!(
            "  storm: {} of {} nodes in {:.2} s ({:.0}/s); CPU per node: server {:.0} µs, load generator {:.0} µs{}",
            s.enrolled,
            s.nodes,
            s.total.as_secs_f64(),
            s.rate(),
            per(s.server_cpu),
            per(s.own_cpu),
            s.first_error
                .map(|e| format!("; first failure: {e}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let window = Window {
        warmup: Duration::from_secs(1),
        measure,
    };
    let pids: Vec<u32> = pid.into_iter().collect();
    let o = Requests::enroll(&addr, &token, &enrollments)?
        .run(in_flight, window, &pids)
        .await?;
    say_run("dtca Enroll", &o);
    let per_cert = |d: Duration| d.as_secs_f64() * 1e6 / o.ok.max(1) as f64;
    println!(
        "  CPU in window: server {:.0} µs/cert, load generator {:.0} µs/cert ({:.2} cores), machine {:.2} cores",
        o.cpu.first().map_or(0.0, |c| per_cert(*c)),
        per_cert(o.own_cpu),
        o.own_cpu.as_secs_f64() / measure.as_secs_f64(),
        o.machine_cpu.as_secs_f64() / measure.as_secs_f64()
    );
    Ok(())
}

/// A separate Enroll run at `n` in flight under `perf record`, and its summary.
pub(super) async fn profiled(
    server: &Server,
    enroll: &Requests,
    n: usize,
    window: Window,
    work: &Path,
) -> Result<(Outcome, Profile), String> {
    let data = work.join("perf.data");
    let mut perf = profile::record(server.pid(), window.warmup + window.measure, &data)
        .map_err(|e| format!("{e:#}"))?;
    let run = enroll
        .run(n, window, &[server.pid()])
        .await
        .map_err(|e| format!("{e:#}"))?;
    say_run("under perf", &run);
    // perf stops by itself after the window; give it time to write.
    let _ = crate::proc::wait_until(Duration::from_secs(20), || perf.exited().is_some()).await;
    perf.stop();
    let summary = profile::summarise(&data).map_err(|e| format!("{e:#}: {}", perf.log_text()))?;
    Ok((run, summary))
}

/// cfssl's sign endpoint at each in-flight count, one keep-alive connection per request
/// in flight; and `cfssl version`.
pub(super) async fn cfssl_rows(
    work: &Path,
    pool: &[csrs::Csr],
    in_flight: &[usize],
    window: Window,
) -> anyhow::Result<(Vec<Outcome>, String)> {
    let cf = Cfssl::start(&work.join("cfssl")).await?;
    let bodies = cfssl::bodies(pool);
    CfsslWorker::connect(&cf.addr, bodies.clone())
        .await?
        .sign(0)
        .await
        .map_err(|e| anyhow::anyhow!("cfssl sign does not work: {e}"))?;
    let mut rows = Vec::new();
    for &n in in_flight {
        let mut workers = Vec::new();
        for _ in 0..n {
            workers.push(CfsslWorker::connect(&cf.addr, bodies.clone()).await?);
        }
        let o = load::run(workers, n, window, &[cf.pid()]).await;
        say_run("cfssl sign", &o);
        rows.push(o);
    }
    Ok((rows, cf.version.clone()))
}

/// Whether `serve --database postgres://...` is implemented in this build.
pub(super) fn postgres_status(bins: &Bins, state: &State) -> Result<(), String> {
    let out = std::process::Command::new(&bins.server)
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg("postgres://bench@127.0.0.1:1/none")
        .arg("--state-dir")
        .arg(&state.dir)
        .arg("--passphrase-file")
        .arg(&state.passphrase)
        .output()
        .map_err(|e| format!("could not probe: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if said.contains("only the embedded database") {
        Err(
            "pending: the PostgreSQL backend is not in this build (`ca-server serve \
             --database postgres://...` answers \"only the embedded database is available in \
             this build\")."
                .into(),
        )
    } else {
        Ok(())
    }
}

/// The PostgreSQL row: a private PostgreSQL, the CA's embedded store copied into it with
/// `ca-server store migrate`, then `serve --database` under the same Enroll load.
pub(super) async fn postgres_rows(
    bins: &Bins,
    work: &Path,
    enrollments: &csrs::Enrollments,
    in_flight: &[usize],
    window: Window,
) -> anyhow::Result<(Vec<Outcome>, String)> {
    let pg = Postgres::start(&work.join("postgres")).await?;
    let url = pg.create_database("dtca")?;
    let state = State::init(bins, &work.join("ca-postgres"))?;
    output(
        std::process::Command::new(&bins.server)
            .args(["store", "migrate", "--database", &url, "--state-dir"])
            .arg(&state.dir),
    )?;
    let server = Server::start_with(bins, &state, &["--database", &url]).await?;
    let enroll = Requests::enroll(
        &server.addr,
        &server.token(bins, 1_000_000)?,
        &enrollments.for_a_new_server(),
    )?;
    let mut rows = Vec::new();
    for &n in in_flight {
        let o = enroll.run(n, window, &[server.pid()]).await?;
        say_run("dtca on PG", &o);
        rows.push(o);
    }
    Ok((rows, pg.version.clone()))
}
