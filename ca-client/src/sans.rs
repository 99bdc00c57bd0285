//! Which names a node asks for: its host name, FQDN and non-loopback addresses (unless
//! turned off), plus what the operator adds with `--san`.

use std::net::IpAddr;

use dtca_common::net;
use dtca_pki::policy::check_dns_name;

use crate::error::ClientError;

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
            if check_dns_name(&name).is_ok() && name != "localhost" {
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
    /// [`ClientError::Invalid`] when it is neither an IP address nor a DNS name.
    pub fn add(&mut self, entry: &str) -> Result<(), ClientError> {
        let entry = entry.trim();
        if let Ok(ip) = entry.parse::<IpAddr>() {
            self.push_ip(ip);
            return Ok(());
        }
        check_dns_name(entry).map_err(|_| {
            ClientError::Invalid(format!(
                "--san {entry:?} is neither an IP address nor a DNS name"
            ))
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

    /// Whether every name of `self` is in `other` and the other way round (order aside).
    pub fn same_as(&self, dns: &[String], ips: &[IpAddr]) -> bool {
        let mut a = self.dns.clone();
        let mut b = dns.to_vec();
        a.sort();
        b.sort();
        let mut c = self.ips.clone();
        let mut d = ips.to_vec();
        c.sort();
        d.sort();
        a == b && c == d
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
    fn detected_names_include_the_host_name() {
        let sans = Sans::collect(&[], true).unwrap();
        assert!(sans.dns.contains(&net::hostname()) || check_dns_name(&net::hostname()).is_err());
        assert!(sans.ips.iter().all(|ip| !ip.is_loopback()));
    }

    #[test]
    fn same_as_ignores_order() {
        let sans = Sans::collect(&["a.example".into(), "b.example".into()], false).unwrap();
        assert!(sans.same_as(&["b.example".into(), "a.example".into()], &[]));
        assert!(!sans.same_as(&["a.example".into()], &[]));
    }
}
