//! `tcp://HOST:PORT`, the way Docker names an engine's TCP address: parsed once, here,
//! for the switch (`--docker-listen`, `--docker-advertise`, daemon.json `hosts`), the
//! operator's contexts (`login --host`) and the CA's check of a reported engine address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Docker's plain (unencrypted) API port, the default of a `tcp://` host without one.
pub const PLAIN_PORT: u16 = 2375;

/// Longest host part accepted (a DNS name is at most 253 characters).
const MAX_HOST: usize = 253;

/// An engine address: `tcp://HOST:PORT`, where HOST is a DNS name, an IPv4 address or a
/// bracketed IPv6 address (`tcp://[fd00::5]:2376`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineAddr {
    /// Without brackets, as given (names keep their case: they are compared
    /// case-insensitively where it matters).
    host: String,
    port: u16,
}

impl EngineAddr {
    /// Parses `tcp://HOST:PORT` (a trailing `/` is allowed); the port is required.
    ///
    /// # Errors
    /// [`EngineAddrError`] naming the text and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, EngineAddrError> {
        let bad = |problem| EngineAddrError {
            text: text.to_string(),
            problem,
        };
        let rest = text
            .trim()
            .strip_prefix("tcp://")
            .ok_or(bad(Problem::NotTcp))?
            .trim_end_matches('/');
        let (host, port) = split_host_port(rest).map_err(bad)?;
        let port = port.ok_or(bad(Problem::NoPort))?;
        Self::new(host, port).map_err(bad)
    }

    /// Reads a `hosts` entry the way dockerd does: `tcp://` alone is `127.0.0.1:2375`
    /// and a missing port is 2375. `None` for other schemes (`unix://`, `fd://`) and for
    /// what dockerd would refuse.
    pub fn from_docker_host(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("tcp://")?.trim_end_matches('/');
        if rest.is_empty() {
            return Some(EngineAddr {
                host: "127.0.0.1".into(),
                port: PLAIN_PORT,
            });
        }
        let (host, port) = split_host_port(rest).ok()?;
        Self::new(host, port.unwrap_or(PLAIN_PORT)).ok()
    }

    fn new(host: &str, port: u16) -> Result<Self, Problem> {
        if host.is_empty() {
            return Err(Problem::NoHost);
        }
        if host.len() > MAX_HOST
            || host.contains(['/', '[', ']', '@', '?', '#'])
            || host.contains(char::is_whitespace)
            || (host.contains(':') && host.parse::<IpAddr>().is_err())
        {
            return Err(Problem::BadHost);
        }
        Ok(EngineAddr {
            host: host.to_string(),
            port,
        })
    }

    /// The host: a name or an IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether it means every address of the machine (`0.0.0.0`, `::`).
    pub fn is_wildcard(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }

    /// The one host it names, unless it is a wildcard: what a certificate must carry for
    /// clients to verify the engine there.
    pub fn named_host(&self) -> Option<&str> {
        (!self.is_wildcard()).then_some(self.host.as_str())
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The same port on another host.
    ///
    /// # Errors
    /// [`EngineAddrError`] when `host` is not a host name or IP address.
    pub fn with_host(&self, host: &str) -> Result<Self, EngineAddrError> {
        Self::new(host, self.port).map_err(|problem| EngineAddrError {
            text: host.to_string(),
            problem,
        })
    }
}

/// `HOST[:PORT]` or `[V6][:PORT]`.
fn split_host_port(rest: &str) -> Result<(&str, Option<u16>), Problem> {
    let (host, port) = if let Some(inside) = rest.strip_prefix('[') {
        let (host, after) = inside.split_once(']').ok_or(Problem::BadHost)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Problem::BadHost);
        }
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(Problem::BadHost),
        }
    } else if rest.matches(':').count() > 1 {
        // An IPv6 address needs brackets to be told from its port.
        return Err(Problem::BadHost);
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| Problem::BadPort))
        .transpose()?;
    Ok((host, port))
}

impl fmt::Display for EngineAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "tcp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "tcp://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for EngineAddr {
    type Err = EngineAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Stored as its text (`client.toml`, the switch's backup manifest).
impl serde::Serialize for EngineAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EngineAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Text that is not `tcp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not tcp://HOST:PORT ({problem})")]
pub struct EngineAddrError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with an engine address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Another scheme, or none.
    #[error("it must start with tcp://")]
    NotTcp,
    /// Nothing before the port.
    #[error("the host is missing")]
    NoHost,
    /// Not a host name or IP address (IPv6 goes in brackets).
    #[error("the host is not a name or an IP address; IPv6 goes in brackets")]
    BadHost,
    /// No `:PORT`.
    #[error("the port is missing")]
    NoPort,
    /// Not a number from 0 to 65535.
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_both_kinds_of_address() {
        let a = EngineAddr::parse("tcp://node-1.example:2376").unwrap();
        assert_eq!((a.host(), a.port()), ("node-1.example", 2376));
        assert_eq!(a.ip(), None);
        assert_eq!(a.named_host(), Some("node-1.example"));
        let v4 = EngineAddr::parse("tcp://10.0.0.5:2376/").unwrap();
        assert_eq!(v4.socket_addr(), Some("10.0.0.5:2376".parse().unwrap()));
        let v6 = EngineAddr::parse("tcp://[fd00::5]:2376").unwrap();
        assert_eq!(v6.host(), "fd00::5");
        assert_eq!(v6.to_string(), "tcp://[fd00::5]:2376");
        assert_eq!(v4.to_string(), "tcp://10.0.0.5:2376");
    }

    #[test]
    fn wildcards_name_no_host() {
        for text in ["tcp://0.0.0.0:2376", "tcp://[::]:2376"] {
            let a = EngineAddr::parse(text).unwrap();
            assert!(a.is_wildcard(), "{text}");
            assert_eq!(a.named_host(), None);
        }
    }

    #[test]
    fn refuses_what_is_not_tcp_host_port() {
        let problem = |t: &str| EngineAddr::parse(t).unwrap_err().problem;
        assert_eq!(problem("unix:///var/run/docker.sock"), Problem::NotTcp);
        assert_eq!(problem("10.0.0.5:2376"), Problem::NotTcp);
        assert_eq!(problem("tcp://node-1"), Problem::NoPort);
        assert_eq!(problem("tcp://:2376"), Problem::NoHost);
        assert_eq!(problem("tcp://a:port"), Problem::BadPort);
        assert_eq!(problem("tcp://a:99999"), Problem::BadPort);
        assert_eq!(problem("tcp://fd00::5:2376"), Problem::BadHost);
        assert_eq!(problem("tcp://[node]:2376"), Problem::BadHost);
        assert_eq!(problem("tcp://a b:2376"), Problem::BadHost);
        assert_eq!(problem("tcp://a/b:2376"), Problem::BadHost);
        assert_eq!(
            problem(&format!("tcp://{}:1", "a".repeat(300))),
            Problem::BadHost
        );
    }

    #[test]
    fn reads_docker_hosts_with_dockerds_defaults() {
        let h = |t: &str| EngineAddr::from_docker_host(t).map(|a| a.to_string());
        assert_eq!(h("tcp://").as_deref(), Some("tcp://127.0.0.1:2375"));
        assert_eq!(h("tcp://0.0.0.0").as_deref(), Some("tcp://0.0.0.0:2375"));
        assert_eq!(h("tcp://[::1]").as_deref(), Some("tcp://[::1]:2375"));
        assert_eq!(h(" tcp://a:2376/ ").as_deref(), Some("tcp://a:2376"));
        assert_eq!(h("unix:///var/run/docker.sock"), None);
        assert_eq!(h("fd://"), None);
    }

    #[test]
    fn another_host_keeps_the_port() {
        let a = EngineAddr::parse("tcp://0.0.0.0:2376").unwrap();
        assert_eq!(
            a.with_host("fd00::5").unwrap().to_string(),
            "tcp://[fd00::5]:2376"
        );
        assert!(a.with_host("a b").is_err());
    }
}
