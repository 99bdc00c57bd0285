//! What this host is called and where it can be reached: the default SANs of a node.

use std::net::IpAddr;

/// The kernel's host name (`/proc/sys/kernel/hostname`), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The fully qualified name, as `hostname -f` finds it through `/etc/hosts` or the NIS
/// domain; `None` when there is none beyond the short name.
pub fn fqdn() -> Option<String> {
    let host = hostname();
    if host.contains('.') {
        return Some(host);
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts")
        && let Some(found) = fqdn_from_hosts(&hosts, &host)
    {
        return Some(found);
    }
    let domain = std::fs::read_to_string("/proc/sys/kernel/domainname").ok()?;
    let domain = domain.trim();
    (!domain.is_empty() && domain != "(none)").then(|| format!("{host}.{domain}"))
}

fn fqdn_from_hosts(hosts: &str, host: &str) -> Option<String> {
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .map(|line| line.split_whitespace().skip(1).collect::<Vec<_>>())
        .filter(|names| names.iter().any(|n| n.eq_ignore_ascii_case(host)))
        .flat_map(|names| names.into_iter())
        .find(|n| n.contains('.') && n.to_ascii_lowercase().starts_with(&format!("{host}.")))
        .map(|n| n.to_ascii_lowercase())
}

/// Every address of this host a peer could use: not loopback, not IPv6 link-local (those
/// need a zone and make poor SANs), not unspecified. Sorted, without duplicates.
pub fn addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(usable)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn usable(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fqdn_in_a_hosts_file() {
        let hosts = "127.0.0.1 localhost\n10.0.0.5 web-1.prod.example web-1 # node\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "web-1").as_deref(),
            Some("web-1.prod.example")
        );
        assert_eq!(fqdn_from_hosts(hosts, "db-1"), None);
    }

    #[test]
    fn skips_loopback_and_link_local() {
        assert!(!usable(&"127.0.0.1".parse().unwrap()));
        assert!(!usable(&"::1".parse().unwrap()));
        assert!(!usable(&"fe80::1".parse().unwrap()));
        assert!(usable(&"10.1.2.3".parse().unwrap()));
        assert!(usable(&"2001:db8::1".parse().unwrap()));
        assert!(addresses().iter().all(usable));
    }
}
