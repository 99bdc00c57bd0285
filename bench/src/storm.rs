//! An enrollment storm: a fleet booting together. Each simulated node opens its own fresh
//! TLS connection (no session resumption), checks the CA by the root digest in the token,
//! fetches the trust bundle and enrolls once, as `ca-client enroll` does, then hangs up.
//! Keys and CSRs are made beforehand (on a real fleet every node makes its own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtca_proto::v1::{self, ca_client::CaClient};
use tokio::sync::Semaphore;

use crate::csrs::{Enrollments, RAN_OUT};
use crate::dtca::enroll_channel;
use crate::load::Latency;
use crate::proc::Usage;

/// What the storm measured.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    /// Nodes that tried.
    pub nodes: usize,
    /// Nodes connecting at the same time, at most.
    pub parallel: usize,
    /// Nodes that got a certificate.
    pub enrolled: usize,
    /// First failure, verbatim.
    pub first_error: Option<String>,
    /// From the first connection attempt to the last certificate.
    pub total: Duration,
    /// Per node: connect, handshake, trust bundle, enroll.
    pub latency: Latency,
    /// CPU of the server during the storm.
    pub server_cpu: Duration,
    /// CPU of the load generator during the storm.
    pub own_cpu: Duration,
}

impl Storm {
    /// Enrollments per second.
    pub fn rate(&self) -> f64 {
        self.enrolled as f64 / self.total.as_secs_f64().max(1e-9)
    }
}

/// Runs the storm: `nodes` nodes, at most `parallel` connecting at once.
pub async fn run(
    addr: &str,
    token: &str,
    enrollments: &Enrollments,
    nodes: usize,
    parallel: usize,
    server_pid: u32,
) -> Storm {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let addr: Arc<str> = addr.into();
    let token: Arc<str> = token.into();
    let server_before = Usage::of(&server_pid.to_string()).unwrap_or_default();
    let own_before = Usage::of("self").unwrap_or_default();
    let started = Instant::now();
    let tasks: Vec<_> = (0..nodes)
        .map(|_| {
            let gate = gate.clone();
            let addr = addr.clone();
            let token = token.clone();
            let enrollments = enrollments.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                let channel = enroll_channel(&addr, &token)
                    .await
                    .map_err(|e| format!("connect: {e:#}"))?;
                let mut client = CaClient::new(channel);
                client
                    .trust_bundle(v1::TrustBundleRequest {})
                    .await
                    .map_err(|s| format!("trust bundle: {}", s.message()))?;
                let (name, der) = enrollments.take().ok_or(RAN_OUT)?;
                client
                    .enroll(v1::EnrollRequest {
                        token: token.to_string(),
                        csr_der: der.to_vec(),
                        name: name.to_string(),
                    })
                    .await
                    .map_err(|s| format!("enroll: {:?} {}", s.code(), s.message()))?;
                Ok::<u32, String>(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX))
            })
        })
        .collect();
    let mut out = Storm {
        nodes,
        parallel,
        ..Storm::default()
    };
    let mut samples = Vec::with_capacity(nodes);
    for t in tasks {
        match t.await {
            Ok(Ok(us)) => samples.push(us),
            Ok(Err(e)) => {
                out.first_error.get_or_insert(e);
            }
            Err(e) => {
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    out.total = started.elapsed();
    out.server_cpu = Usage::of(&server_pid.to_string())
        .unwrap_or_default()
        .cpu
        .saturating_sub(server_before.cpu);
    out.own_cpu = Usage::of("self")
        .unwrap_or_default()
        .cpu
        .saturating_sub(own_before.cpu);
    out.enrolled = samples.len();
    out.latency = Latency::of(&mut samples);
    out
}
