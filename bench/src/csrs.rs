//! Pre-generated P-256 CSRs, the same for every system measured.
//!
//! Each CSR has its own key, the identity name `node-<i>` and one DNS name
//! `node-<i>.bench.internal`, as `ca-client enroll --no-default-sans --san ...` would send.
//! Generating them is not part of any measurement; a pool is cycled through.

use std::sync::Arc;

use anyhow::Context;
use dtca_pki::csr;
use dtca_pki::key::{KeyType, PrivateKey};

/// One request, in the forms each system takes.
#[derive(Debug, Clone)]
pub struct Csr {
    /// Identity name asked for.
    pub name: String,
    /// PKCS#10, DER (dtca's gRPC API).
    pub der: Vec<u8>,
    /// The same, PEM (cfssl's JSON API).
    pub pem: String,
}

/// Generates `n` CSRs on `threads` threads.
///
/// # Errors
/// When key generation or CSR encoding fails.
pub fn generate(n: usize, threads: usize) -> anyhow::Result<Arc<Vec<Csr>>> {
    let threads = threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || -> anyhow::Result<Vec<(usize, Csr)>> {
                (t..n).step_by(threads).map(|i| Ok((i, one(i)?))).collect()
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for h in handles {
        let part = h
            .join()
            .map_err(|_| anyhow::anyhow!("CSR thread panicked"))??;
        all.extend(part);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(Arc::new(all.into_iter().map(|(_, c)| c).collect()))
}

fn one(i: usize) -> anyhow::Result<Csr> {
    let key = PrivateKey::generate(KeyType::P256).context("generate a P-256 key")?;
    let name = format!("node-{i}");
    let der =
        csr::build(&key, &name, &[format!("{name}.bench.internal")], &[]).context("build a CSR")?;
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
    Ok(Csr { name, der, pem })
}
