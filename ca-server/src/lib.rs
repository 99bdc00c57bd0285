//! The dtca certificate authority: key custody, policy, issuance, inventory, admin API.
//!
//! - [`state`]: the state directory (CA certificates, encrypted keys, admin bundle).
//! - [`lifecycle`]: the CA's own certificates over time (intermediate renewal, root
//!   rotation) as server state.
//! - [`registrar`]: the CA's decisions (enroll, authenticate, renew, revoke, tokens).
//! - [`store`]: records and the audit log behind one interface; embedded SQLite backend.
//! - [`service`]: the gRPC services, translating protobuf to registrar calls.
//! - [`server`]: `run(listener, registrar, options, shutdown)`.
//! - [`channel`]: the CA's half of the agent channel (what every `Watch` stream hears).
//! - [`tls`]: server-side rustls (hot-swapped server certificate, optional client certs).
//! - [`restart`]: restart slots (how many native engines restart at once, never two
//!   managers of one swarm), decided purely; the store applies the decision.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
//! - [`fleet`]: every node's state in one view (`fleet`, fleet metrics).
//! - [`ui`]: the read-only web page (`serve --ui-listen`): fleet, CA lifecycle, audit.
//! - [`side_http`]: the small HTTP/1.1 server both `/metrics` and the web page run on.
//! - [`cli`]: the command line; `main.rs` only parses and calls [`cli::run`].
//!
//! The signing itself is pure and lives in `dtca-pki`. This crate does not talk to Docker.

pub mod channel;
pub mod cli;
pub mod fleet;
pub mod lifecycle;
pub mod metrics;
pub mod registrar;
pub mod restart;
pub mod server;
pub mod service;
pub mod side_http;
pub mod state;
pub mod store;
pub mod tls;
pub mod ui;
