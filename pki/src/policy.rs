//! Which DNS names and IP addresses a certificate may carry.
//!
//! A join token may limit node SANs to DNS patterns and IP networks. The limit is recorded
//! with every certificate of that enrollment, so renewals (including the re-issue after a
//! node's addresses changed) stay inside what the enrolling token allowed.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Limits on requested SANs. A policy that limits nothing (both lists empty) allows any
/// well-formed name; a policy that limits either kind lists everything allowed, so a kind
/// with an empty list allows none: `--allow-ip 10.0.0.0/8` alone admits no DNS name, and
/// `--allow-dns '*.example.com'` alone no IP address. (A limit of one kind that left the
/// other open would let a node token mint a certificate for any host name.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanPolicy {
    /// Exact names (`db.example.com`) or one-label wildcards (`*.example.com`).
    pub allow_dns: Vec<String>,
    /// Networks (`10.0.0.0/8`) or single addresses.
    pub allow_ip: Vec<IpNet>,
}

impl SanPolicy {
    /// Builds a policy from operator input, checking every pattern and network.
    ///
    /// # Errors
    /// [`PolicyError::BadPattern`] or [`PolicyError::BadNetwork`] for the first bad entry.
    pub fn parse(allow_dns: &[String], allow_ip: &[String]) -> Result<Self, PolicyError> {
        let mut dns = Vec::with_capacity(allow_dns.len());
        for pattern in allow_dns {
            // Names reach the policy lower-case and without a trailing dot; so do patterns.
            let lower = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
            let base = lower.strip_prefix("*.").unwrap_or(&lower);
            if check_dns_name(base).is_err() {
                return Err(PolicyError::BadPattern(pattern.clone()));
            }
            dns.push(lower);
        }
        let mut ips = Vec::with_capacity(allow_ip.len());
        for net in allow_ip {
            let text = net.trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| PolicyError::BadNetwork(net.clone()))?;
            ips.push(parsed.trunc());
        }
        Ok(SanPolicy {
            allow_dns: dns,
            allow_ip: ips,
        })
    }

    /// Checks requested names against the policy.
    ///
    /// # Errors
    /// [`PolicyError::DnsNotAllowed`] or [`PolicyError::IpNotAllowed`] naming the first
    /// name outside the policy.
    pub fn check(&self, dns_names: &[String], ips: &[IpAddr]) -> Result<(), PolicyError> {
        if self.is_unrestricted() {
            return Ok(());
        }
        let listed = |items: Vec<String>| {
            if items.is_empty() {
                "none of this kind: the token limits names and lists none".to_string()
            } else {
                items.join(", ")
            }
        };
        if let Some(name) = dns_names
            .iter()
            .find(|name| !self.allow_dns.iter().any(|p| dns_matches(p, name)))
        {
            return Err(PolicyError::DnsNotAllowed {
                name: name.clone(),
                allowed: listed(self.allow_dns.clone()),
            });
        }
        if let Some(ip) = ips
            .iter()
            .find(|ip| !self.allow_ip.iter().any(|net| net.contains(*ip)))
        {
            return Err(PolicyError::IpNotAllowed {
                ip: *ip,
                allowed: listed(self.allow_ip.iter().map(ToString::to_string).collect()),
            });
        }
        Ok(())
    }

    /// True when neither list limits anything.
    pub fn is_unrestricted(&self) -> bool {
        self.allow_dns.is_empty() && self.allow_ip.is_empty()
    }
}

/// Whether `name` (already lower-case) matches `pattern`: equal, or `*.rest` with exactly
/// one label in place of the star.
pub fn dns_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern == name,
    }
}

/// Checks that a requested DNS SAN is a plain host name: letters, digits and hyphens in
/// dot-separated labels of 1-63 characters, 253 in all, no wildcard.
///
/// # Errors
/// [`PolicyError::BadDnsName`] otherwise.
pub fn check_dns_name(name: &str) -> Result<(), PolicyError> {
    let bad = || PolicyError::BadDnsName(name.to_string());
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    for label in name.trim_end_matches('.').split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// Checks that a DNS SAN of a node certificate names a host and could not be read as
/// something else: not `localhost` or a name under it (RFC 6761: every machine is
/// localhost), and not an address written as a name (`10.0.0.1`, `0x7f.1`, `2130706433`:
/// URL parsers and `inet_aton` read a name whose last label is a number as an IPv4
/// address, so such a "name" would stand for an address the token may not allow).
///
/// # Errors
/// [`PolicyError::BadDnsName`] for a malformed name, [`PolicyError::NotAHostName`] for
/// one of the above.
pub fn check_host_name(name: &str) -> Result<(), PolicyError> {
    check_dns_name(name)?;
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or_default();
    let numeric = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if lower == "localhost" || lower.ends_with(".localhost") || numeric || hex {
        return Err(PolicyError::NotAHostName(name.to_string()));
    }
    Ok(())
}

/// Why names were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid DNS pattern {0:?}: use host.example.com or *.example.com")]
    BadPattern(String),
    #[error("invalid IP network {0:?}: use an address or CIDR like 10.0.0.0/8")]
    BadNetwork(String),
    #[error("invalid DNS name {0:?} requested")]
    BadDnsName(String),
    #[error(
        "DNS name {0:?} does not name a host (localhost, or an address written as a name): put addresses in IP SANs"
    )]
    NotAHostName(String),
    #[error("DNS name {name:?} is outside what the token allows ({allowed})")]
    DnsNotAllowed { name: String, allowed: String },
    #[error("IP address {ip} is outside what the token allows ({allowed})")]
    IpNotAllowed { ip: IpAddr, allowed: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SanPolicy {
        SanPolicy::parse(
            &["*.nodes.example.com".into(), "db.example.com".into()],
            &["10.1.0.0/16".into(), "192.0.2.7".into()],
        )
        .unwrap()
    }

    #[test]
    fn accepts_names_inside_the_policy() {
        let ips: Vec<IpAddr> = vec!["10.1.200.3".parse().unwrap(), "192.0.2.7".parse().unwrap()];
        policy()
            .check(
                &["a.nodes.example.com".into(), "db.example.com".into()],
                &ips,
            )
            .unwrap();
    }

    #[test]
    fn refuses_dns_names_outside_the_policy() {
        for name in [
            "nodes.example.com",
            "a.b.nodes.example.com",
            "evil.com",
            "xdb.example.com",
        ] {
            let err = policy().check(&[name.to_string()], &[]).unwrap_err();
            assert!(matches!(err, PolicyError::DnsNotAllowed { .. }), "{name}");
        }
    }

    #[test]
    fn refuses_ips_outside_the_policy() {
        let err = policy()
            .check(&[], &["10.2.0.1".parse().unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains("10.2.0.1"));
        assert!(
            policy()
                .check(&[], &["192.0.2.8".parse().unwrap()])
                .is_err()
        );
    }

    /// Regression (found by the policy fuzzer): `--allow-dns example.com.` kept its dot and
    /// then matched nothing.
    #[test]
    fn a_pattern_with_a_trailing_dot_matches_its_names() {
        let policy =
            SanPolicy::parse(&["Node-1.Example.com.".into(), "*.b.example.".into()], &[]).unwrap();
        policy
            .check(&["node-1.example.com".into(), "x.b.example".into()], &[])
            .unwrap();
    }

    #[test]
    fn a_limit_on_ip_addresses_alone_admits_no_dns_name() {
        let ip_only = SanPolicy::parse(&[], &["10.0.0.0/8".into()]).unwrap();
        ip_only.check(&[], &["10.1.2.3".parse().unwrap()]).unwrap();
        let err = ip_only
            .check(&["anything.example".into()], &[])
            .unwrap_err();
        assert!(matches!(err, PolicyError::DnsNotAllowed { .. }));
        assert!(err.to_string().contains("lists none"), "{err}");
    }

    #[test]
    fn a_limit_on_dns_names_alone_admits_no_ip_address() {
        let dns_only = SanPolicy::parse(&["*.nodes.example.com".into()], &[]).unwrap();
        dns_only
            .check(&["a.nodes.example.com".into()], &[])
            .unwrap();
        let err = dns_only
            .check(&[], &["203.0.113.9".parse().unwrap()])
            .unwrap_err();
        assert!(matches!(err, PolicyError::IpNotAllowed { .. }));
    }

    #[test]
    fn refuses_addresses_and_localhost_written_as_host_names() {
        for bad in [
            "10.0.0.1",
            "0x7f.1",
            "0X7F.0.0.1",
            "2130706433",
            "1.2.3.999",
            "node.10",
            "localhost",
            "LOCALHOST.",
            "app.localhost",
        ] {
            assert!(
                matches!(check_host_name(bad), Err(PolicyError::NotAHostName(_))),
                "{bad:?} accepted"
            );
        }
        for good in [
            "node-1.example.com",
            "10-0-0-1.nodes.example",
            "web1",
            "x0x7f",
            "db.0xfg",
        ] {
            check_host_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(matches!(
            check_host_name("a b"),
            Err(PolicyError::BadDnsName(_))
        ));
    }

    #[test]
    fn empty_policy_allows_any_well_formed_name() {
        SanPolicy::default()
            .check(
                &["anything.example".into()],
                &["203.0.113.9".parse().unwrap()],
            )
            .unwrap();
    }

    #[test]
    fn rejects_bad_patterns_and_networks() {
        assert!(SanPolicy::parse(&["a..b".into()], &[]).is_err());
        assert!(SanPolicy::parse(&["*".into()], &[]).is_err());
        assert!(SanPolicy::parse(&[], &["10.0.0.0/33".into()]).is_err());
        assert!(SanPolicy::parse(&[], &["ten".into()]).is_err());
    }

    #[test]
    fn rejects_wildcard_and_malformed_dns_requests() {
        for bad in ["*.example.com", "", "-a.example", "a b", &"x".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_dns_name("node-1.example.com").is_ok());
    }
}
