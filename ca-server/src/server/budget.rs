//! Connections that have not authenticated yet, counted per source address.
//!
//! A connection takes a [`Slot`] of its source's budget when it is accepted and gives it
//! back when it closes or once it has authenticated (a client certificate of this CA and
//! a first request): handshakes in progress, enrollments and idle strangers count;
//! agents holding their long-lived channel do not, however many share one NAT address.
//! One address can therefore hold at most `per_address` file descriptors of the server
//! without a certificate, whatever it does.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Who a connection is counted against: an IPv4 address, or an IPv6 /64 (one host or
/// one site usually holds a whole /64, so counting single IPv6 addresses would cap
/// nothing). IPv4-mapped IPv6 addresses (a dual-stack listener) count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Source(IpAddr);

impl Source {
    /// The budget `ip` counts against.
    pub(super) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(network)))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Unauthenticated connections per source, at most `per_address` each.
#[derive(Debug)]
pub(super) struct Budget {
    per_address: usize,
    held: Mutex<HashMap<Source, usize>>,
}

impl Budget {
    /// A budget of `per_address` connections for each source.
    pub(super) fn new(per_address: usize) -> Arc<Budget> {
        Arc::new(Budget {
            per_address,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when its source has used them all.
    pub(super) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let source = Source::of(ip);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(source).or_insert(0);
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        Some(Slot {
            budget: self.clone(),
            source,
        })
    }

    /// How many slots `ip`'s source holds.
    #[cfg(test)]
    pub(super) fn held(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&Source::of(ip)).copied().unwrap_or(0)
    }

    /// How many slots all sources hold together.
    #[cfg(test)]
    pub(super) fn total(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.values().sum()
    }
}

/// One connection's place in its source's budget, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    budget: Arc<Budget>,
    source: Source,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .budget
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_at_its_limit_gets_no_slot_until_one_is_given_back() {
        let budget = Budget::new(2);
        let a = budget.take(ip("192.0.2.1")).unwrap();
        let _b = budget.take(ip("192.0.2.1")).unwrap();
        assert!(budget.take(ip("192.0.2.1")).is_none());
        drop(a);
        assert!(budget.take(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn one_address_at_its_limit_leaves_every_other_address_its_own() {
        let budget = Budget::new(1);
        let _a = budget.take(ip("192.0.2.1")).unwrap();
        assert!(budget.take(ip("192.0.2.1")).is_none());
        assert!(budget.take(ip("192.0.2.2")).is_some());
        assert!(budget.take(ip("2001:db8:1::1")).is_some());
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_budget() {
        let budget = Budget::new(1);
        let _a = budget.take(ip("2001:db8::1")).unwrap();
        assert!(budget.take(ip("2001:db8::ffff:2")).is_none());
        assert!(budget.take(ip("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let budget = Budget::new(1);
        let _a = budget.take(ip("192.0.2.1")).unwrap();
        assert!(budget.take(ip("::ffff:192.0.2.1")).is_none());
        assert_eq!(Source::of(ip("::ffff:192.0.2.1")).to_string(), "192.0.2.1");
    }

    #[test]
    fn given_back_slots_leave_nothing_behind() {
        let budget = Budget::new(3);
        let slots: Vec<Slot> = (0..3)
            .map(|_| budget.take(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(budget.held(ip("192.0.2.1")), 3);
        drop(slots);
        assert_eq!(budget.total(), 0);
        assert!(budget.held.lock().unwrap().is_empty());
    }
}
