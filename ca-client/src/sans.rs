//! Which names a node asks for: its host name, FQDN and own addresses (unless turned
//! off), plus what the operator adds with `--san`. Loopback, link-local and the addresses
//! of container and virtual-network interfaces (`docker0`, `docker_gwbridge`, `br-…`,
//! CNI bridges; see [`net::is_container_plumbing`]) are never detected.

use std::net::IpAddr;

use dtca_common::net;
use dtca_pki::policy::{PolicyError, SanPolicy, check_host_name};

use crate::error::{ClientError, Invalid};

/// The names a node asks for, by where they came from: detected ones are left out when
/// the token does not allow them (the host has them, nobody asked for them), given ones
/// (`--san`, the engine's own address) are refused, since someone asked for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Found on this host.
    pub detected: Sans,
    /// Asked for by the operator.
    pub given: Sans,
}

/// Names fitted to what a token allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fitted {
    /// What goes into the request.
    pub sans: Sans,
    /// Detected names the token does not allow, as text, for the user.
    pub left_out: Vec<String>,
}

impl Wanted {
    /// The detected names (when `defaults`) and the given ones.
    ///
    /// # Errors
    /// [`Invalid::San`] or [`Invalid::SanNotAHost`] for a given entry that is no name.
    pub fn collect(extra: &[String], defaults: bool) -> Result<Self, ClientError> {
        let mut given = Sans::default();
        for entry in extra {
            given.add(entry)?;
        }
        Ok(Wanted {
            detected: if defaults {
                Sans::detected()
            } else {
                Sans::default()
            },
            given,
        })
    }

    /// Everything, unfitted (for a CA that cannot say what a token allows).
    pub fn all(&self) -> Sans {
        let mut all = self.detected.clone();
        for dns in &self.given.dns {
            all.push_dns(dns.clone());
        }
        for ip in &self.given.ips {
            all.push_ip(*ip);
        }
        all
    }

    /// Fits the names to `policy`: detected names outside it are left out, a given one
    /// outside it is refused, and a request left with no name at all is refused (a node
    /// certificate needs one).
    ///
    /// # Errors
    /// [`Invalid::SanOutsideToken`] naming the first given name outside the policy,
    /// [`Invalid::NoNameInsideToken`] when no name is left.
    pub fn fit(&self, policy: &SanPolicy) -> Result<Fitted, Invalid> {
        let allowed = describe_policy(policy);
        let mut fitted = Fitted::default();
        for dns in &self.given.dns {
            if policy.check(std::slice::from_ref(dns), &[]).is_err() {
                return Err(Invalid::SanOutsideToken {
                    entry: dns.clone(),
                    allowed,
                });
            }
        }
        for ip in &self.given.ips {
            if policy.check(&[], &[*ip]).is_err() {
                return Err(Invalid::SanOutsideToken {
                    entry: ip.to_string(),
                    allowed,
                });
            }
        }
        for dns in &self.detected.dns {
            if policy.check(std::slice::from_ref(dns), &[]).is_ok() {
                fitted.sans.push_dns(dns.clone());
            } else if !self.given.dns.contains(dns) {
                fitted.left_out.push(dns.clone());
            }
        }
        for ip in &self.detected.ips {
            if policy.check(&[], &[*ip]).is_ok() {
                fitted.sans.push_ip(*ip);
            } else if !self.given.ips.contains(ip) {
                fitted.left_out.push(ip.to_string());
            }
        }
        for dns in &self.given.dns {
            fitted.sans.push_dns(dns.clone());
        }
        for ip in &self.given.ips {
            fitted.sans.push_ip(*ip);
        }
        if fitted.sans.dns.is_empty() && fitted.sans.ips.is_empty() {
            return Err(Invalid::NoNameInsideToken {
                allowed,
                left_out: fitted.left_out,
            });
        }
        Ok(fitted)
    }
}

/// What a policy allows, in one phrase for messages.
pub fn describe_policy(policy: &SanPolicy) -> String {
    if policy.is_unrestricted() {
        return "any name".to_string();
    }
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    format!(
        "DNS names {}; IP addresses {}",
        list(policy.allow_dns.clone()),
        list(policy.allow_ip.iter().map(ToString::to_string).collect())
    )
}

/// DNS names and IP addresses for a CSR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sans {
    /// Lower-case DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl Sans {
    /// Collects the names: detected ones when `defaults`, then `extra`.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] for an extra entry that is neither an IP nor a DNS name.
    pub fn collect(extra: &[String], defaults: bool) -> Result<Self, ClientError> {
        let mut sans = Sans::default();
        if defaults {
            sans.add_detected();
        }
        for entry in extra {
            sans.add(entry)?;
        }
        Ok(sans)
    }

    /// The names this host has now (host name, FQDN, addresses).
    pub fn detected() -> Self {
        let mut sans = Sans::default();
        sans.add_detected();
        sans
    }

    fn add_detected(&mut self) {
        let host = net::hostname();
        for name in std::iter::once(host).chain(net::fqdn()) {
            if check_host_name(&name).is_ok() {
                self.push_dns(name);
            }
        }
        for ip in net::addresses() {
            self.push_ip(ip);
        }
    }

    /// Adds one `--san` entry.
    ///
    /// # Errors
    /// [`Invalid::San`] when it is neither an IP address nor a DNS name.
    pub fn add(&mut self, entry: &str) -> Result<(), ClientError> {
        let entry = entry.trim();
        if let Ok(ip) = entry.parse::<IpAddr>() {
            self.push_ip(ip);
            return Ok(());
        }
        check_host_name(entry).map_err(|e| match e {
            PolicyError::NotAHostName(_) => Invalid::SanNotAHost {
                entry: entry.to_string(),
            },
            _ => Invalid::San {
                entry: entry.to_string(),
            },
        })?;
        self.push_dns(entry.trim_end_matches('.').to_ascii_lowercase());
        Ok(())
    }

    fn push_dns(&mut self, name: String) {
        if !self.dns.contains(&name) {
            self.dns.push(name);
        }
    }

    fn push_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    /// Only the names `policy` admits (all of them without a policy): what a node may
    /// carry, for comparing with the names it has.
    pub fn within(&self, policy: Option<&SanPolicy>) -> Sans {
        let Some(policy) = policy else {
            return self.clone();
        };
        Sans {
            dns: self
                .dns
                .iter()
                .filter(|d| policy.check(std::slice::from_ref(*d), &[]).is_ok())
                .cloned()
                .collect(),
            ips: self
                .ips
                .iter()
                .filter(|ip| policy.check(&[], &[**ip]).is_ok())
                .copied()
                .collect(),
        }
    }

    /// Whether `self` names what `dns` and `ips` name, order aside, leaving `ignored`
    /// addresses out on both sides: those of container bridges, which a certificate issued
    /// before they were left out may still carry and which must not cause a re-issue.
    pub fn same_as(&self, dns: &[String], ips: &[IpAddr], ignored: &[IpAddr]) -> bool {
        let sorted = |list: &[IpAddr]| {
            let mut v: Vec<IpAddr> = list
                .iter()
                .filter(|ip| !ignored.contains(ip))
                .copied()
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut a = self.dns.clone();
        let mut b = dns.to_vec();
        a.sort();
        b.sort();
        a == b && sorted(&self.ips) == sorted(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_names_are_split_into_dns_and_ip_and_deduplicated() {
        let sans = Sans::collect(
            &[
                "Node-1.Example.com".into(),
                "10.0.0.5".into(),
                "node-1.example.com".into(),
                "::1".into(),
            ],
            false,
        )
        .unwrap();
        assert_eq!(sans.dns, vec!["node-1.example.com"]);
        assert_eq!(sans.ips.len(), 2);
    }

    #[test]
    fn rejects_entries_that_are_neither() {
        assert!(Sans::collect(&["not a name".into()], false).is_err());
        assert!(Sans::collect(&["*.example.com".into()], false).is_err());
    }

    #[test]
    fn refuses_localhost_and_addresses_written_as_names() {
        for odd in ["localhost", "0x7f.1", "10.0.0.256"] {
            assert!(
                matches!(
                    Sans::collect(&[odd.into()], false),
                    Err(ClientError::Invalid(Invalid::SanNotAHost { .. }))
                ),
                "{odd}"
            );
        }
        // An address stays an address.
        assert_eq!(
            Sans::collect(&["10.0.0.1".into()], false)
                .unwrap()
                .ips
                .len(),
            1
        );
    }

    #[test]
    fn detected_names_include_the_host_name() {
        let sans = Sans::collect(&[], true).unwrap();
        assert!(sans.dns.contains(&net::hostname()) || check_host_name(&net::hostname()).is_err());
        assert!(sans.ips.iter().all(|ip| !ip.is_loopback()));
    }

    #[test]
    fn same_as_ignores_order() {
        let sans = Sans::collect(&["a.example".into(), "b.example".into()], false).unwrap();
        assert!(sans.same_as(&["b.example".into(), "a.example".into()], &[], &[]));
        assert!(!sans.same_as(&["a.example".into()], &[], &[]));
    }

    /// Regression: a node certificate that named `docker0`'s 172.17.0.1 (issued before
    /// bridge addresses were left out) is not re-issued just to drop it, and a new Docker
    /// network's address is no reason to re-issue either.
    #[test]
    fn same_as_leaves_ignored_addresses_out_on_both_sides() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let detected = Sans::collect(&["node-1.example".into(), "10.0.0.5".into()], false).unwrap();
        let dns = ["node-1.example".to_string()];
        let bridges = [ip("172.17.0.1"), ip("172.18.0.1")];
        // The certificate carries a bridge address the host still has.
        assert!(detected.same_as(&dns, &[ip("10.0.0.5"), ip("172.17.0.1")], &bridges));
        // Without ignoring it, it would differ.
        assert!(!detected.same_as(&dns, &[ip("10.0.0.5"), ip("172.17.0.1")], &[]));
        // A real address change still counts.
        assert!(!detected.same_as(&dns, &[ip("10.0.0.6"), ip("172.17.0.1")], &bridges));
        // An operator's --san that happens to be a bridge address does not loop.
        let with_bridge = Sans::collect(&["10.0.0.5".into(), "172.17.0.1".into()], false).unwrap();
        assert!(with_bridge.same_as(&[], &[ip("10.0.0.5"), ip("172.17.0.1")], &bridges));
    }

    fn wanted(detected: &[&str], given: &[&str]) -> Wanted {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Wanted {
            detected: Sans::collect(&owned(detected), false).unwrap(),
            given: Sans::collect(&owned(given), false).unwrap(),
        }
    }

    fn policy(dns: &[&str], ip: &[&str]) -> SanPolicy {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        SanPolicy::parse(&owned(dns), &owned(ip)).unwrap()
    }

    /// The README's example token (`--allow-dns '*.nodes.example.com'`) against a host
    /// called `web-1` with a LAN address: the short name and the address are left out
    /// (the token limits DNS names, so it admits no address), the FQDN stays.
    #[test]
    fn detected_names_outside_the_token_are_left_out_and_listed() {
        let fitted = wanted(&["web-1", "web-1.nodes.example.com", "10.0.0.5"], &[])
            .fit(&policy(&["*.nodes.example.com"], &[]))
            .unwrap();
        assert_eq!(fitted.sans.dns, vec!["web-1.nodes.example.com"]);
        assert!(fitted.sans.ips.is_empty());
        assert_eq!(fitted.left_out, vec!["web-1", "10.0.0.5"]);
    }

    #[test]
    fn names_inside_the_token_are_all_kept() {
        let table = [
            (policy(&[], &[]), 3),
            (policy(&["*.example.com", "web-1"], &["10.0.0.0/8"]), 3),
            (policy(&["web-1"], &["10.0.0.0/8"]), 2),
        ];
        for (p, kept) in table {
            let fitted = wanted(&["web-1", "a.example.com", "10.0.0.5"], &[])
                .fit(&p)
                .unwrap();
            assert_eq!(fitted.sans.dns.len() + fitted.sans.ips.len(), kept, "{p:?}");
            assert_eq!(fitted.left_out.len(), 3 - kept, "{p:?}");
        }
    }

    #[test]
    fn refuses_a_given_name_outside_the_token() {
        let p = policy(&["*.nodes.example.com"], &["10.0.0.0/8"]);
        for given in ["db.example.org", "192.0.2.1"] {
            assert!(
                matches!(
                    wanted(&["web-1.nodes.example.com"], &[given]).fit(&p),
                    Err(Invalid::SanOutsideToken { ref entry, .. }) if entry == given
                ),
                "{given}"
            );
        }
        let fitted = wanted(&[], &["a.nodes.example.com", "10.1.2.3"])
            .fit(&p)
            .unwrap();
        assert_eq!(fitted.sans.dns, vec!["a.nodes.example.com"]);
        assert_eq!(fitted.sans.ips.len(), 1);
    }

    #[test]
    fn refuses_when_no_name_is_left_inside_the_token() {
        let p = policy(&["*.nodes.example.com"], &[]);
        assert!(matches!(
            wanted(&["web-1", "10.0.0.5"], &[]).fit(&p),
            Err(Invalid::NoNameInsideToken { ref left_out, .. }) if left_out.len() == 2
        ));
        assert!(
            wanted(&["web-1"], &["web-1.nodes.example.com"])
                .fit(&p)
                .is_ok()
        );
    }

    #[test]
    fn within_keeps_only_what_the_policy_admits() {
        let all = Sans::collect(&["web-1".into(), "10.0.0.5".into()], false).unwrap();
        assert_eq!(all.within(None), all);
        let dns_only = policy(&["web-1"], &[]);
        assert_eq!(all.within(Some(&dns_only)).dns, vec!["web-1"]);
        assert!(all.within(Some(&dns_only)).ips.is_empty());
    }

    #[test]
    fn detected_names_leave_out_container_bridges() {
        let sans = Sans::detected();
        let plumbing = net::Addresses::now().plumbing;
        assert!(sans.ips.iter().all(|ip| !plumbing.contains(ip)));
    }
}
