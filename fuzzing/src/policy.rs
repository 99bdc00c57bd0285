//! SAN policy: the DNS patterns and IP networks a token allows. Checked against reference
//! matchers written another way (labels compared one by one, addresses as masked
//! integers): a policy never admits a name outside its patterns, and admits every
//! canonical name inside them. A policy that limits nothing admits every name; one that
//! limits either kind admits nothing of a kind it lists nothing for.

use std::net::IpAddr;

use dtca_pki::policy::{SanPolicy, check_dns_name};
use ipnet::IpNet;

/// Input: three sections split by `--` lines: DNS patterns, IP networks, requested names
/// (IP addresses where they parse, DNS names otherwise), one a line.
pub fn run(data: &[u8]) {
    let parts = super::sections(data);
    let lines = |i: usize| -> Vec<String> {
        parts
            .get(i)
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (patterns, networks, requested) = (lines(0), lines(1), lines(2));
    let Ok(policy) = SanPolicy::parse(&patterns, &networks) else {
        return;
    };
    for pattern in &policy.allow_dns {
        let base = pattern.strip_prefix("*.").unwrap_or(pattern);
        assert!(
            check_dns_name(base).is_ok(),
            "pattern {pattern:?} accepted but its base is no host name"
        );
    }
    for name in &requested {
        match name.parse::<IpAddr>() {
            Ok(ip) => check_ip(&policy, ip),
            Err(_) => check_dns(&policy, name),
        }
    }
    // The whole request is admitted exactly when each of its names is.
    let dns: Vec<String> = requested
        .iter()
        .filter(|n| n.parse::<IpAddr>().is_err())
        .cloned()
        .collect();
    let ips: Vec<IpAddr> = requested.iter().filter_map(|n| n.parse().ok()).collect();
    let each = dns
        .iter()
        .all(|d| policy.check(std::slice::from_ref(d), &[]).is_ok())
        && ips.iter().all(|ip| policy.check(&[], &[*ip]).is_ok());
    assert_eq!(
        policy.check(&dns, &ips).is_ok(),
        each,
        "a request is judged otherwise than its names one by one"
    );
}

fn check_dns(policy: &SanPolicy, name: &str) {
    let admitted = policy.check(&[name.to_string()], &[]).is_ok();
    if policy.is_unrestricted() {
        assert!(admitted, "a policy without limits refused {name:?}");
        return;
    }
    if policy.allow_dns.is_empty() {
        assert!(
            !admitted,
            "{name:?} admitted by a policy that limits IP addresses and lists no DNS name"
        );
        return;
    }
    let matched = policy.allow_dns.iter().any(|p| reference_match(p, name));
    if admitted {
        assert!(matched, "{name:?} admitted outside {:?}", policy.allow_dns);
    }
    // Names as the CA hands them over (from a verified CSR: lower-case, no trailing dot)
    // against patterns written the same way.
    let canonical =
        check_dns_name(name).is_ok() && *name == name.to_ascii_lowercase() && !name.ends_with('.');
    let plain = |p: &String| !p.ends_with('.');
    if canonical
        && policy
            .allow_dns
            .iter()
            .any(|p| plain(p) && reference_match(p, name))
    {
        assert!(
            admitted,
            "{name:?} refused though {:?} allows it",
            policy.allow_dns
        );
    }
}

/// `pattern` and `name` have the same number of labels; a leading `*` label stands for any
/// one non-empty label, every other label is equal.
fn reference_match(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let n: Vec<&str> = name.split('.').collect();
    p.len() == n.len()
        && p.iter().zip(&n).enumerate().all(|(i, (p, n))| {
            if i == 0 && *p == "*" {
                !n.is_empty()
            } else {
                p == n
            }
        })
}

fn check_ip(policy: &SanPolicy, ip: IpAddr) {
    let admitted = policy.check(&[], &[ip]).is_ok();
    if policy.is_unrestricted() {
        assert!(admitted, "a policy without limits refused {ip}");
        return;
    }
    if policy.allow_ip.is_empty() {
        assert!(
            !admitted,
            "{ip} admitted by a policy that limits DNS names and lists no network"
        );
        return;
    }
    let inside = policy
        .allow_ip
        .iter()
        .any(|net| reference_contains(net, ip));
    assert_eq!(
        admitted, inside,
        "{ip} admitted={admitted} but inside {:?}={inside}",
        policy.allow_ip
    );
}

/// Same family, and the first `prefix` bits equal.
fn reference_contains(net: &IpNet, ip: IpAddr) -> bool {
    let (a, b, bits, width) = match (net.network(), ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (
            u128::from(u32::from(n)),
            u128::from(u32::from(i)),
            u32::from(net.prefix_len()),
            32,
        ),
        (IpAddr::V6(n), IpAddr::V6(i)) => (
            u128::from(n),
            u128::from(i),
            u32::from(net.prefix_len()),
            128,
        ),
        _ => return false,
    };
    let shift = width - bits;
    shift >= width || (a >> shift) == (b >> shift)
}
