//! Which names a node asks for: its host name, FQDN and own addresses (unless turned
//! off), plus what the operator adds with `--san`. Loopback, link-local and the addresses
//! of container and virtual-network interfaces (`docker0`, `docker_gwbridge`, `br-…`,
//! CNI bridges; see [`net::is_container_plumbing`]) are never detected.

use std::net::IpAddr;

use dtca_common::net;
use dtca_pki::policy::{PolicyError, check_host_name};

use crate::error::{ClientError, Invalid};

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

    #[test]
    fn detected_names_leave_out_container_bridges() {
        let sans = Sans::detected();
        let plumbing = net::Addresses::now().plumbing;
        assert!(sans.ips.iter().all(|ip| !plumbing.contains(ip)));
    }
}
