//! What each role's certificates look like: usages and lifetimes.

use std::time::Duration;

use crate::access::Access;
use crate::identity::Role;

/// How far leaves and CAs are backdated, so a peer whose clock is a little behind
/// still accepts a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Lifetime of the root CA.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(3650 * 86_400);
/// Lifetime of the online intermediate CA.
pub const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// The fixed shape of a role's leaf certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The role this profile is for.
    pub role: Role,
    /// EKU serverAuth (dockerd serving the Docker API, the CA serving gRPC).
    pub server_auth: bool,
    /// EKU clientAuth (docker CLI, renewals, admin calls).
    pub client_auth: bool,
    /// The operator's access level: a restricted one carries its own EKU instead of
    /// clientAuth, so that native engines refuse the certificate.
    pub access: Access,
    /// Lifetime when nobody asks for another one.
    pub default_lifetime: Duration,
    /// Longest lifetime a token may ask for.
    pub max_lifetime: Duration,
}

impl Profile {
    /// The profile of `role`.
    pub const fn of(role: Role) -> Profile {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        let access = Access::Full;
        match role {
            // serverAuth only: dockerd accepts any clientAuth certificate under its CA file
            // as a docker client, so a node's key (root on one node, a node token left in
            // cloud-init) would otherwise open every engine. The CA accepts node
            // certificates for its own node calls by its own chain check.
            Role::Node => Profile {
                role,
                server_auth: true,
                client_auth: false,
                access,
                default_lifetime: Duration::from_secs(30 * DAY),
                max_lifetime: Duration::from_secs(365 * DAY),
            },
            Role::Operator => Profile {
                role,
                server_auth: false,
                client_auth: true,
                access,
                default_lifetime: Duration::from_secs(12 * HOUR),
                max_lifetime: Duration::from_secs(30 * DAY),
            },
            Role::Admin => Profile {
                role,
                server_auth: false,
                client_auth: true,
                access,
                default_lifetime: Duration::from_secs(12 * HOUR),
                max_lifetime: Duration::from_secs(365 * DAY),
            },
            Role::Ca => Profile {
                role,
                server_auth: true,
                client_auth: false,
                access,
                default_lifetime: Duration::from_secs(30 * DAY),
                max_lifetime: Duration::from_secs(90 * DAY),
            },
        }
    }

    /// This profile at `access`: full access changes nothing; a restricted level, for
    /// operators only, replaces clientAuth by the level's EKU. `None` for a restricted
    /// level of another role.
    pub fn with_access(self, access: Access) -> Option<Profile> {
        match access {
            Access::Full => Some(self),
            Access::ReadOnly if self.role == Role::Operator => Some(Profile {
                client_auth: false,
                access,
                ..self
            }),
            Access::ReadOnly => None,
        }
    }

    /// The lifetime to issue for a request of `asked` (None: the default), capped at the
    /// role's maximum.
    pub fn lifetime(&self, asked: Option<Duration>) -> Duration {
        asked
            .unwrap_or(self.default_lifetime)
            .min(self.max_lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nodes_and_the_ca_serve() {
        assert!(Profile::of(Role::Node).server_auth);
        assert!(Profile::of(Role::Ca).server_auth);
        assert!(!Profile::of(Role::Operator).server_auth);
        assert!(!Profile::of(Role::Admin).server_auth);
        assert!(!Profile::of(Role::Ca).client_auth);
    }

    /// Regression: node certificates carried clientAuth, so dockerd took any node's key
    /// as a docker client of every engine.
    #[test]
    fn a_node_certificate_is_never_a_client() {
        assert!(!Profile::of(Role::Node).client_auth);
        assert!(Profile::of(Role::Operator).client_auth);
        assert!(Profile::of(Role::Admin).client_auth);
    }

    #[test]
    fn a_read_only_operator_is_no_plain_client_and_only_operators_are_restricted() {
        let ro = Profile::of(Role::Operator)
            .with_access(Access::ReadOnly)
            .unwrap();
        assert!(!ro.client_auth && !ro.server_auth);
        assert_eq!(ro.access, Access::ReadOnly);
        for role in [Role::Node, Role::Admin, Role::Ca] {
            assert_eq!(Profile::of(role).with_access(Access::ReadOnly), None);
            assert_eq!(
                Profile::of(role).with_access(Access::Full),
                Some(Profile::of(role))
            );
        }
    }

    #[test]
    fn lifetime_is_capped_at_the_role_maximum() {
        let op = Profile::of(Role::Operator);
        assert_eq!(op.lifetime(None), Duration::from_secs(12 * 3600));
        assert_eq!(
            op.lifetime(Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            op.lifetime(Some(Duration::from_secs(400 * 86_400))),
            op.max_lifetime
        );
    }
}
