//! Pre-generated P-256 CSRs, the same for every system measured.
//!
//! Each CSR has its own key, the identity name `node-<i>` and one DNS name
//! `node-<i>.bench.internal`, as `ca-client enroll --no-default-sans --san ...` would send.
//! Generating them is not part of any measurement; a pool is cycled through where a CSR
//! may be sent again (cfssl, the raw limit, renewals).
//!
//! dtca's enrollments cannot be cycled: a name has one holder, and so has each DNS name,
//! so a second enrollment of `node-<i>` is refused (`name-taken`). [`Enrollments`] are
//! CSRs of distinct identities, each sent to a server at most once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Keys the CSRs of [`Enrollments`] are signed with, cycled: a key may be enrolled under
/// many names, and making a key costs more than signing.
const ENROLLMENT_KEYS: usize = 1024;

/// An identity's name and its CSR (DER).
type Named = (String, Vec<u8>);

/// CSRs of distinct identities (`<prefix>-<i>`, DNS name `<prefix>-<i>.bench.internal`),
/// made beforehand, and how many one server has been sent: clones share the count.
#[derive(Debug, Clone)]
pub struct Enrollments {
    pool: Arc<Vec<Named>>,
    next: Arc<AtomicUsize>,
}

impl Enrollments {
    /// Makes `n` of them on `threads` threads.
    ///
    /// # Errors
    /// When key generation or CSR encoding fails.
    pub fn generate(n: usize, threads: usize, prefix: &str) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let prefix = prefix.to_string();
                std::thread::spawn(move || -> anyhow::Result<Vec<(usize, Named)>> {
                    let keys = (t..ENROLLMENT_KEYS.min(n.max(1)))
                        .step_by(threads)
                        .map(|_| {
                            PrivateKey::generate(KeyType::P256).context("generate a P-256 key")
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    (t..n)
                        .step_by(threads)
                        .enumerate()
                        .map(|(k, i)| {
                            let name = format!("{prefix}-{i}");
                            let dns = [format!("{name}.bench.internal")];
                            let der = csr::build(&keys[k % keys.len().max(1)], &name, &dns, &[])
                                .context("build a CSR")?;
                            Ok((i, (name, der)))
                        })
                        .collect()
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
        Ok(Enrollments {
            pool: Arc::new(all.into_iter().map(|(_, c)| c).collect()),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The same CSRs for a server that has seen none of them (a new state dir).
    pub fn for_a_new_server(&self) -> Self {
        Enrollments {
            pool: self.pool.clone(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The next identity's name and CSR, or `None` once every one was sent.
    pub fn take(&self) -> Option<(&str, &[u8])> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.pool.get(i).map(|(n, d)| (n.as_str(), d.as_slice()))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.pool.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }
}

/// What a load reports when [`Enrollments`] ran out.
pub const RAN_OUT: &str = "no distinct enrollment left (raise --enrollments)";

/// `n` CSRs of keys made now, with no names (a renewal that keeps the node's names).
///
/// # Errors
/// When key generation or CSR encoding fails.
pub fn without_names(n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..n.max(1))
        .map(|_| {
            let key = PrivateKey::generate(KeyType::P256).context("generate a P-256 key")?;
            csr::build(&key, "renewal", &[], &[]).context("build a CSR")
        })
        .collect()
}
