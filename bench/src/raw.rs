//! The crypto ceiling: how many "verify the CSR's P-256 signature, then make one P-256
//! signature" pairs this machine does with ring, on one thread and on every core. That is
//! the least work any CA must do per certificate; everything else (parsing, building the
//! certificate, TLS, HTTP/2, the store) comes on top.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::csrs::Csr;

/// A CSR taken apart beforehand, so only the crypto is timed.
#[derive(Debug)]
struct Parts {
    public_key: Vec<u8>,
    signed: Vec<u8>,
    signature: Vec<u8>,
}

/// Verify+sign pairs per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// One thread.
    pub one_thread: f64,
    /// One thread per core, all together.
    pub all_cores: f64,
    /// How many threads "all cores" used.
    pub threads: usize,
}

/// Measures both rates, `each` long.
///
/// # Errors
/// When a CSR does not parse or verify (then the pool is broken).
pub fn measure(csrs: &[Csr], threads: usize, each: Duration) -> anyhow::Result<Rates> {
    let parts: Vec<Parts> = csrs
        .iter()
        .take(4096)
        .map(|c| {
            let (_, req) = X509CertificationRequest::from_der(&c.der)
                .map_err(|e| anyhow::anyhow!("parse CSR: {e}"))?;
            Ok(Parts {
                public_key: req
                    .certification_request_info
                    .subject_pki
                    .subject_public_key
                    .data
                    .to_vec(),
                signed: req.certification_request_info.raw.to_vec(),
                signature: req.signature_value.data.to_vec(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let parts = Arc::new(parts);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generate a P-256 key"))?;
    let pkcs8 = Arc::new(pkcs8.as_ref().to_vec());
    let one_thread = run(&parts, &pkcs8, 1, each)?;
    let all_cores = run(&parts, &pkcs8, threads, each)?;
    Ok(Rates {
        one_thread,
        all_cores,
        threads,
    })
}

fn run(
    parts: &Arc<Vec<Parts>>,
    pkcs8: &Arc<Vec<u8>>,
    threads: usize,
    each: Duration,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let parts = parts.clone();
            let pkcs8 = pkcs8.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let rng = SystemRandom::new();
                let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
                    .map_err(|_| anyhow::anyhow!("load the signing key"))?;
                let end = Instant::now() + each;
                let mut n = 0u64;
                let mut i = t;
                while Instant::now() < end {
                    let p = &parts[i % parts.len()];
                    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &p.public_key)
                        .verify(&p.signed, &p.signature)
                        .map_err(|_| anyhow::anyhow!("CSR signature does not verify"))?;
                    // Sign something the size of a leaf's to-be-signed part.
                    let sig = key
                        .sign(&rng, &p.signed)
                        .map_err(|_| anyhow::anyhow!("sign"))?;
                    std::hint::black_box(sig);
                    n += 1;
                    i += threads;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("crypto thread panicked"))?
            .context("raw crypto")?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
