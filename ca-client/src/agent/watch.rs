//! The node's own addresses: the kernel's notifications that they changed, and whether
//! the certificate should follow. Container and virtual-network interfaces (`docker0`, a
//! new Docker network's bridge) do not count.

use std::net::IpAddr;
use std::time::Duration;

use dtca_common::net;
use dtca_pki::inspect::CertInfo;

use crate::sans::Sans;
use crate::state::ClientState;

/// Kernel notifications of address changes (rtnetlink), so the agent learns of a new
/// address without polling. Only changes to the node's own addresses count: Docker
/// creating a network (a `br-…` bridge, `veth` links) is not one.
pub(super) struct AddressWatch {
    socket: netlink_sys::TokioSocket,
    /// The node's addresses ([`net::addresses`]) when last reported.
    seen: Vec<IpAddr>,
}

impl AddressWatch {
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV6_IFADDR: u32 = 0x100;
    /// A change comes as several messages; they are let settle this long.
    const SETTLE: Duration = Duration::from_secs(2);

    /// Subscribes; `None` where netlink is not available (the agent then renews on
    /// schedule only).
    pub(super) fn new() -> Option<Self> {
        use netlink_sys::AsyncSocket;
        let mut socket =
            netlink_sys::TokioSocket::new(netlink_sys::protocols::NETLINK_ROUTE).ok()?;
        socket
            .socket_mut()
            .bind(&netlink_sys::SocketAddr::new(
                0,
                Self::RTMGRP_IPV4_IFADDR | Self::RTMGRP_IPV6_IFADDR,
            ))
            .ok()?;
        Some(AddressWatch {
            socket,
            seen: net::addresses(),
        })
    }

    /// Resolves after the node's addresses changed, once the burst of notifications has
    /// settled.
    pub(super) async fn changed(&mut self) {
        use netlink_sys::AsyncSocketExt;
        loop {
            if self.socket.recv_from_full().await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Self::SETTLE).await;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(10), self.socket.recv_from_full()).await
            {
            }
            let now = net::addresses();
            if now != self.seen {
                self.seen = now;
                return;
            }
            tracing::debug!("address change on container or virtual-network interfaces only");
        }
    }
}

/// The names the certificate should carry now, when they differ from what it carries
/// (only for nodes that use the detected names), unless the CA just refused them.
pub(crate) fn wanted_names(
    state: &ClientState,
    leaf: &CertInfo,
    refused: Option<&Sans>,
) -> Option<Sans> {
    let is_node = leaf
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Node);
    if !state.default_sans || !is_node {
        return None;
    }
    // Names the enrolling token does not allow are not a change to follow: the CA would
    // refuse them at every attempt.
    let wanted = Sans::collect(&state.extra_sans, true)
        .ok()?
        .within(state.token_policy.as_ref());
    differs(wanted, leaf, &net::Addresses::now().plumbing, refused)
}

/// `wanted` when it names something `leaf` does not (or the other way round), leaving out
/// addresses on container and virtual-network interfaces (`ignored`), and the CA did not
/// just refuse it.
fn differs(
    wanted: Sans,
    leaf: &CertInfo,
    ignored: &[IpAddr],
    refused: Option<&Sans>,
) -> Option<Sans> {
    if wanted.same_as(&leaf.dns_names, &leaf.ip_addresses, ignored) || refused == Some(&wanted) {
        return None;
    }
    Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tests::node_leaf;

    /// Regression: a new Docker network (or `docker0`'s address, in a certificate issued
    /// before bridge addresses were left out) made the agent re-issue and restart the
    /// engine.
    #[test]
    fn addresses_on_container_bridges_do_not_cause_a_re_issue() {
        let wanted = Sans::collect(&["node-1.example".into(), "10.0.0.5".into()], false).unwrap();
        let bridges: Vec<IpAddr> = vec!["172.17.0.1".parse().unwrap()];
        let old = node_leaf(&["10.0.0.5", "172.17.0.1"]);
        assert_eq!(differs(wanted.clone(), &old, &bridges, None), None);
        assert_eq!(
            differs(wanted.clone(), &node_leaf(&["10.0.0.5"]), &bridges, None),
            None
        );
        // A real change still re-issues, and the new names leave the bridge out.
        let moved = node_leaf(&["10.0.0.6", "172.17.0.1"]);
        assert_eq!(
            differs(wanted.clone(), &moved, &bridges, None),
            Some(wanted.clone())
        );
        // Unless the CA just refused those names.
        assert_eq!(
            differs(wanted.clone(), &moved, &bridges, Some(&wanted)),
            None
        );
    }
}
