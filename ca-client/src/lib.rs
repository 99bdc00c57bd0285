//! The dtca client: enrollment, renewal and, on nodes, the Docker engine's TLS.
//!
//! - [`enroll`]: `enroll` and `renew` as library calls (the CLI and tests use these).
//! - [`node`]: `enroll --docker`: enroll, then switch the engine to mutual TLS.
//! - [`docker`]: the switch itself (daemon.json, systemd drop-in, TLS pairs, verify,
//!   rollback) and certificate rotation in the engine.
//! - [`agent`]: the long-running renewal loop.
//! - [`agent::rotation`]: one renewal put in service (the engine rotated), for the agent
//!   and `renew`, and `renew`'s hand-off to a running agent; [`lock`]: the agent's lock.
//! - [`guard`]: guard mode: the agent serves mutual TLS in front of dockerd's socket.
//! - [`status`]: `check` and `status`.
//! - [`operator`]: `login` (operator and admin certificates, docker contexts), `env` and
//!   `nodes`; [`freshness`]: `login --watch`.
//! - [`contexts`]: docker contexts in the CLI's own store.
//! - [`ca`]: talking to the CA: root pinning by token digest, checking what comes back.
//! - [`clock`]: whether this clock would accept what the CA issues, before anything is
//!   spent.
//! - [`sans`]: the names a node asks for.
//! - [`state`]: `client.toml`, what a client remembers about its enrollment.
//! - [`error`]: failures and their exit codes.
//! - [`cli`]: the command line; `main.rs` only parses and calls [`cli::run`].
//!
//! Private keys are generated here and never leave the machine.

pub mod agent;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod contexts;
pub mod docker;
pub mod doctor;
pub mod dryrun;
pub mod enroll;
pub mod error;
pub mod freshness;
pub mod guard;
pub mod lock;
pub mod node;
pub mod operator;
pub mod recover;

pub mod sans;
pub mod state;
pub mod status;
