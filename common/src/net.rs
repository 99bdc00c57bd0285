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
/// need a zone and make poor SANs), not unspecified, not on a container runtime's or
/// virtual network's interface (see [`is_container_plumbing`]). Sorted, without
/// duplicates.
pub fn addresses() -> Vec<IpAddr> {
    Addresses::of(interfaces()).host
}

/// This host's addresses, split by the kind of interface that carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// What [`addresses`] returns: the node's own, usable addresses.
    pub host: Vec<IpAddr>,
    /// Usable addresses found only on container or virtual-network interfaces
    /// (`docker0`'s 172.17.0.1, say): never asked for, and ignored when comparing what a
    /// certificate names with what the host has, so a certificate issued before they were
    /// left out is not re-issued for them.
    pub plumbing: Vec<IpAddr>,
}

impl Addresses {
    /// The addresses of this host now.
    pub fn now() -> Self {
        Self::of(interfaces())
    }

    /// Splits `(interface name, address)` pairs; each list sorted, without duplicates. An
    /// address on both kinds of interface counts as the host's.
    pub fn of(interfaces: impl IntoIterator<Item = (String, IpAddr)>) -> Self {
        let mut out = Addresses::default();
        for (name, ip) in interfaces {
            if !usable(&ip) {
                continue;
            }
            if is_container_plumbing(&name) {
                out.plumbing.push(ip);
            } else {
                out.host.push(ip);
            }
        }
        out.host.sort();
        out.host.dedup();
        out.plumbing.sort();
        out.plumbing.dedup();
        out.plumbing
            .retain(|ip| out.host.binary_search(ip).is_err());
        out
    }
}

/// Interface name prefixes of container runtimes and virtual networks: Docker's default
/// bridge and swarm's `docker_gwbridge` (`docker`), the host ends of container links
/// (`veth`), CNI and podman bridges (`cni`, `podman`), Kubernetes network plugins
/// (`flannel`, `cali`, `cilium_`, `weave`, `kube-`, VXLAN overlays), LXC (`lxc`) and
/// libvirt (`virbr`). Their addresses are private to the host's guests and come and go
/// with them. VPN tunnels (`tun`, `wg`) are not here: peers may well reach a node there.
const PLUMBING_PREFIXES: [&str; 12] = [
    "docker", "veth", "cni", "podman", "flannel", "cali", "cilium_", "weave", "kube-", "vxlan",
    "lxc", "virbr",
];

/// Whether an interface belongs to a container runtime or a virtual network rather than
/// to the host: its addresses are left out of a node's default names and its changes do
/// not count as the node's addresses changing.
///
/// Docker's user-defined networks are `br-` and the first 12 hex digits of the network
/// id; other `br-` bridges (`br-lan`) are an operator's and count as the host's.
pub fn is_container_plumbing(interface: &str) -> bool {
    if PLUMBING_PREFIXES.iter().any(|p| interface.starts_with(p)) {
        return true;
    }
    interface.strip_prefix("br-").is_some_and(|id| {
        id.len() == 12
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn interfaces() -> Vec<(String, IpAddr)> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let ip = i.ip();
            (i.name, ip)
        })
        .collect()
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

    #[test]
    fn container_and_virtual_network_interfaces_are_plumbing() {
        for name in [
            "docker0",
            "docker_gwbridge",
            "br-3f2a9c1d0e4b",
            "veth1a2b3c4",
            "cni0",
            "cni-podman0",
            "podman0",
            "flannel.1",
            "cali12ab34cd56e",
            "cilium_host",
            "weave",
            "kube-ipvs0",
            "vxlan.calico",
            "lxcbr0",
            "virbr0",
        ] {
            assert!(is_container_plumbing(name), "{name}");
        }
    }

    #[test]
    fn the_hosts_own_interfaces_are_not_plumbing() {
        for name in [
            "eth0",
            "ens3",
            "enp0s31f6",
            "eno1",
            "wlan0",
            "bond0",
            "br0",
            "br-lan",
            "br-3F2A9C1D0E4B",
            "br-3f2a9c1d0e4",
            "vlan100",
            "wg0",
            "tun0",
            "lo",
        ] {
            assert!(!is_container_plumbing(name), "{name}");
        }
    }

    /// Regression: after `docker swarm init` the `docker_gwbridge` address (and on any
    /// Docker host `docker0`'s 172.17.0.1) ended up in node certificates.
    #[test]
    fn leaves_out_addresses_of_docker_bridges() {
        let pair = |name: &str, ip: &str| (name.to_string(), ip.parse::<IpAddr>().unwrap());
        let found = Addresses::of([
            pair("lo", "127.0.0.1"),
            pair("eth0", "10.0.0.5"),
            pair("eth0", "fe80::1"),
            pair("eth0", "2001:db8::5"),
            pair("docker0", "172.17.0.1"),
            pair("docker_gwbridge", "172.18.0.1"),
            pair("br-3f2a9c1d0e4b", "172.19.0.1"),
            pair("br-lan", "192.168.1.2"),
            pair("veth1a2b3c4", "fe80::2"),
            pair("cni0", "10.244.0.1"),
        ]);
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(found.host, ips(&["10.0.0.5", "192.168.1.2", "2001:db8::5"]));
        assert_eq!(
            found.plumbing,
            ips(&["10.244.0.1", "172.17.0.1", "172.18.0.1", "172.19.0.1"])
        );
    }

    #[test]
    fn an_address_also_on_a_host_interface_is_the_hosts() {
        let pair = |name: &str, ip: &str| (name.to_string(), ip.parse::<IpAddr>().unwrap());
        let found = Addresses::of([pair("docker0", "10.0.0.5"), pair("eth0", "10.0.0.5")]);
        assert_eq!(found.host, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(found.plumbing.is_empty());
    }
}
