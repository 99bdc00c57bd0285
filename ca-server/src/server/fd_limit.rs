//! The open-file limit: every connection is a file descriptor, and running out of them
//! turns every accept into an error. `serve` raises the soft limit to the hard one at
//! start (systemd's default soft limit is 1024; the shipped unit sets `LimitNOFILE=`), and
//! the server never plans more connections than the limit leaves room for.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept back for everything that is not a client connection (the store and
/// its PostgreSQL connections, the metrics listener and its scrapes, logs, the runtime):
/// an eighth of the limit, and at least this many.
const RESERVED_AT_LEAST: u64 = 64;

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit at start.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit, which only root can raise.
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit.
///
/// # Errors
/// The system's error when the limits cannot be read or set.
pub fn raise() -> Result<OpenFiles, nix::Error> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(OpenFiles { before, soft, hard })
}

/// How many client connections fit in the current soft limit, when it can be read.
pub fn connection_room() -> Option<usize> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    Some(room_for_connections(soft))
}

/// Connections that fit in `soft` descriptors next to the reserve.
pub fn room_for_connections(soft: u64) -> usize {
    let reserved = (soft / 8).max(RESERVED_AT_LEAST).min(soft / 2);
    usize::try_from(soft - reserved).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_an_eighth_of_the_limit_and_at_least_64() {
        assert_eq!(room_for_connections(1024), 896);
        assert_eq!(room_for_connections(256), 192);
        assert_eq!(room_for_connections(65_536), 57_344);
    }

    #[test]
    fn a_tiny_limit_still_leaves_half_for_connections() {
        assert_eq!(room_for_connections(64), 32);
        assert_eq!(room_for_connections(0), 0);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = getrlimit(Resource::RLIMIT_NOFILE).unwrap().0;
        let raised = raise().unwrap();
        assert!(raised.soft >= before && raised.soft <= raised.hard);
    }
}
