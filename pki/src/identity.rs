//! Who a certificate speaks for: `dtca://<cluster>/<role>/<name>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// URI scheme of identity SANs.
pub const SCHEME: &str = "dtca://";

/// What a certificate may be used for; fixed by the join token that enrolled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Docker engine: serverAuth only (dockerd's TLS). It is never a docker client; the
    /// CA accepts it for the node's own calls (renewal, reports) by its own chain check.
    Node,
    /// A person running the docker CLI against engines: clientAuth only.
    Operator,
    /// An operator who may also run the CA's admin API: clientAuth only.
    Admin,
    /// The CA server's own TLS certificate: serverAuth only. Never issued to callers.
    Ca,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Node, Role::Operator, Role::Admin, Role::Ca];

    /// The lower-case name used in URIs, tokens and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Ca => "ca",
        }
    }

    /// Roles a join token may carry (the CA's own role is not one of them).
    pub fn enrollable(self) -> bool {
        self != Role::Ca
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// The identity a leaf certificate carries as its URI SAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Cluster name chosen at `ca-server init`; the same for every certificate of a CA.
    pub cluster: String,
    /// What the holder may do.
    pub role: Role,
    /// Host name for nodes, user name for operators and admins.
    pub name: String,
}

impl Identity {
    /// Builds an identity after checking that cluster and name are well-formed.
    ///
    /// # Errors
    /// [`IdentityError::BadCluster`] or [`IdentityError::BadName`] when a part is empty,
    /// too long or holds characters outside `[A-Za-z0-9._-]`.
    pub fn new(cluster: &str, role: Role, name: &str) -> Result<Self, IdentityError> {
        check_cluster(cluster)?;
        check_name(name)?;
        Ok(Identity {
            cluster: cluster.to_string(),
            role,
            name: name.to_string(),
        })
    }

    /// The URI form, `dtca://<cluster>/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}/{}", self.cluster, self.role, self.name)
    }

    /// Parses the URI form.
    ///
    /// # Errors
    /// [`IdentityError::NotAnIdentity`] when the URI has another shape, or the errors of
    /// [`Identity::new`].
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotAnIdentity(uri.to_string()))?;
        let mut parts = rest.split('/');
        let (Some(cluster), Some(role), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::NotAnIdentity(uri.to_string()));
        };
        Identity::new(cluster, role.parse()?, name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Why an identity, role, cluster or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("unknown role {0:?} (expected node, operator or admin)")]
    UnknownRole(String),
    #[error("invalid cluster name {0:?}: use 1-63 characters from a-z, 0-9, '-' and '.'")]
    BadCluster(String),
    #[error(
        "invalid name {0:?}: use 1-128 characters from A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error("{0:?} is not a dtca identity URI (dtca://<cluster>/<role>/<name>)")]
    NotAnIdentity(String),
}

/// Checks a cluster name: lower-case DNS-like, because it appears in URIs and paths.
///
/// # Errors
/// [`IdentityError::BadCluster`] when it is empty, longer than 63 or has other characters.
pub fn check_cluster(cluster: &str) -> Result<(), IdentityError> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && cluster.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadCluster(cluster.to_string()))
    }
}

/// Checks an identity name: it becomes a path segment, a file name and a docker context
/// name, so only a conservative character set is allowed.
///
/// # Errors
/// [`IdentityError::BadName`] when it is empty, longer than 128 or has other characters.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips() {
        let id = Identity::new("prod", Role::Node, "web-1.example").unwrap();
        assert_eq!(id.uri(), "dtca://prod/node/web-1.example");
        assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id);
    }

    #[test]
    fn rejects_uri_with_extra_segments_or_other_scheme() {
        assert!(Identity::from_uri("dtca://prod/node/a/b").is_err());
        assert!(Identity::from_uri("spiffe://prod/node/a").is_err());
        assert!(Identity::from_uri("dtca://prod/root/a").is_err());
    }

    #[test]
    fn rejects_names_that_could_escape_a_path() {
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name("alice_2.dev-x").is_ok());
    }

    #[test]
    fn rejects_upper_case_cluster() {
        assert!(check_cluster("Prod").is_err());
        assert!(check_cluster("prod-eu.1").is_ok());
    }

    #[test]
    fn ca_role_is_not_enrollable() {
        assert!(!Role::Ca.enrollable());
        assert!(Role::Node.enrollable() && Role::Admin.enrollable());
    }
}
