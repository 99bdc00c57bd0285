//! The I/O pieces `ca-server` and `ca-client` share.
//!
//! - [`fs`]: atomic, fsynced file writes with exact modes.
//! - [`bundle`]: credential directories (`ca.pem`, `cert.pem`, `key.pem`), crash-safe.
//! - [`tls`]: the client side of TLS to the CA (root pinning by token digest) and the
//!   gRPC channel over it.
//! - [`reason`]: refusal reasons shared by server statuses and CLI exit codes.
//! - [`endpoint`]: `tcp://HOST:PORT`, an engine's address, parsed in one place.
//! - [`net`]: host names and addresses, the default SANs of a node.
//! - [`cli`]: log format and set-up, the exit-code table, waiting for SIGTERM.
//! - [`config`]: reading the TOML config files behind `flag > env > file > default`.
//!
//! The certificate logic itself is in `dtca-pki`, which does no I/O.

pub mod bundle;
pub mod cli;
pub mod config;
pub mod endpoint;
pub mod fs;
pub mod net;
pub mod reason;
pub mod tls;

pub use reason::Reason;
