//! CSRs as the CA reads them: what `VerifiedCsr::from_der` returns is exactly what the CA
//! may put in a certificate, so it must be well-formed whatever the bytes were.

use std::net::IpAddr;
use std::sync::OnceLock;

use dtca_pki::csr::{self, MAX_SANS, VerifiedCsr};
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::policy::check_dns_name;

/// Names a built request carries at most (keeps each run fast).
const MAX_BUILT_NAMES: usize = 8;

/// Input starting with `#`: the rest are names, one a line, for a CSR built with a fixed
/// key (`build` -> `from_der` must give the names back, normalised, and the key).
/// Anything else: DER for `from_der`.
pub fn run(data: &[u8]) {
    match data.strip_prefix(b"#") {
        Some(names) => round_trip(names),
        None => parse(data),
    }
}

fn parse(der: &[u8]) {
    let Ok(verified) = VerifiedCsr::from_der(der) else {
        return;
    };
    check_well_formed(&verified);
    assert_eq!(
        VerifiedCsr::from_der(der).ok().as_ref(),
        Some(&verified),
        "parsing the same CSR twice gave different results"
    );
}

fn round_trip(text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for line in text.lines().take(MAX_BUILT_NAMES) {
        match line.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(line.to_string()),
        }
    }
    let key = key();
    let Ok(der) = csr::build(key, "fuzz", &dns, &ips) else {
        // `build` refuses what the CA would refuse: every DNS name it was given is bad.
        assert!(
            dns.iter()
                .any(|d| check_dns_name(d).is_err() || !d.is_ascii()),
            "build refused good names: {dns:?}"
        );
        return;
    };
    let verified = match VerifiedCsr::from_der(&der) {
        Ok(v) => v,
        Err(e) => panic!("a CSR we built does not parse: {e} (names {dns:?} {ips:?})"),
    };
    check_well_formed(&verified);
    assert_eq!(
        verified.public_key_der,
        key.public_key_der(),
        "the CSR's key is not the one it was built with"
    );
    let mut want_dns: Vec<String> = Vec::new();
    for d in &dns {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        if !want_dns.contains(&d) {
            want_dns.push(d);
        }
    }
    let mut want_ips: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !want_ips.contains(&ip) {
            want_ips.push(ip);
        }
    }
    assert_eq!(verified.dns_names, want_dns, "DNS names did not round-trip");
    assert_eq!(
        verified.ip_addresses, want_ips,
        "IP addresses did not round-trip"
    );
}

/// What the CA relies on in a verified CSR.
fn check_well_formed(csr: &VerifiedCsr) {
    for name in &csr.dns_names {
        assert!(
            check_dns_name(name).is_ok(),
            "bad DNS name let through: {name:?}"
        );
        assert_eq!(
            *name,
            name.to_ascii_lowercase(),
            "DNS name not lower-cased: {name:?}"
        );
        assert!(!name.ends_with('.'), "trailing dot kept: {name:?}");
    }
    for (i, name) in csr.dns_names.iter().enumerate() {
        assert!(
            !csr.dns_names[..i].contains(name),
            "duplicate DNS name: {name:?}"
        );
    }
    for (i, ip) in csr.ip_addresses.iter().enumerate() {
        assert!(!csr.ip_addresses[..i].contains(ip), "duplicate IP: {ip}");
    }
    assert!(
        csr.dns_names.len() + csr.ip_addresses.len() <= MAX_SANS,
        "more than {MAX_SANS} names let through"
    );
    assert!(!csr.public_key_der.is_empty(), "no public key");
    let spki_ok = match csr.key_type {
        KeyType::P256 => csr.public_key_der.len() == 91,
        KeyType::Ed25519 => csr.public_key_der.len() == 44,
    };
    assert!(
        spki_ok,
        "a {:?} public key of {} bytes",
        csr.key_type,
        csr.public_key_der.len()
    );
}

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| match PrivateKey::generate(KeyType::P256) {
        Ok(key) => key,
        Err(e) => panic!("cannot make the fuzzer's key: {e}"),
    })
}
