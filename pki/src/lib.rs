//! Pure PKI logic of dtca, shared by `ca-server` and `ca-client`: bytes and `now` in,
//! bytes out. No files, no sockets, no async.
//!
//! - [`access`]: operator access levels and the EKU that carries them.
//! - [`identity`]: `dtca://<cluster>/<role>/<name>` and the roles.
//! - [`token`]: join tokens that pin the root by digest; secret hashing.
//! - [`key`]: private keys, PEM, encryption at rest.
//! - [`csr`]: building CSRs (clients) and verifying them (the CA).
//! - [`policy`]: which DNS names and IPs a token allows.
//! - [`profile`]: usages and lifetimes per role.
//! - [`authority`]: the CA itself: hierarchy, template -> sign -> validate, CRL.
//! - [`inspect`]: reading certificates and PEM bundles.
//! - [`chain`]: webpki chain verification, with an optional expiry grace.
//! - [`serial`]: random serials in openssl's notation.
//! - [`renewal`]: when to renew, and retry backoff.
//! - [`duration`]: `90s`, `12h`, `30d`.
//!
//! It does not store anything, talk to anyone or read the clock: callers pass `now`.

pub mod access;
pub mod authority;
pub mod chain;
pub mod csr;
pub mod duration;
pub mod identity;
pub mod inspect;
pub mod key;
pub mod policy;
pub mod profile;
pub mod renewal;
pub mod serial;
pub mod token;

pub use authority::{Authority, AuthorityError, IssuedLeaf, LeafTemplate};
pub use identity::{Identity, Role};
pub use inspect::CertInfo;
pub use key::{KeyType, PrivateKey};
pub use serial::Serial;
