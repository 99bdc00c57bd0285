//! dtca-bench: measures a real `ca-server` and writes BENCHMARKS.md.
//!
//! - [`run`]: the whole benchmark, in order, into [`run::Results`].
//! - [`dtca`]: the system under test (state dir, `ca-server serve`, connections).
//! - [`grpc`]: a lean gRPC client for the load (same wire format as tonic's).
//! - [`cfssl`]: the peer (`cfssl serve` and its sign endpoint).
//! - [`pg`]: a private PostgreSQL server for the PostgreSQL row.
//! - [`raw`]: the crypto ceiling (ring verify+sign).
//! - [`load`]: the closed-loop driver (in flight, window, latency, CPU).
//! - [`storm`]: a fleet enrolling at once over fresh connections.
//! - [`guard`]: `dtca-bench guard`, the guard against native TLS on one engine.
//! - [`inventory`]: a million certificates in the store, then the real CLI.
//! - [`fleet`]: 10,000 agents holding channels open: the fleet views, reports, fan-out.
//! - [`storecost`]: the WAL bytes each part of a stored certificate costs.
//! - [`footprint`]: idle RSS, CPU and wake-ups; peak RSS of one-shot commands; sizes.
//! - [`profile`]: `perf record` of the server under load, grouped.
//! - [`report`]: the markdown.
//! - [`csrs`], [`proc`], [`machine`]: fixtures, child processes and `/proc`, the machine.
//!
//! It is not a test: `cargo test` never runs it; `scripts/bench.sh` does.

// A benchmark measures wall-clock time of real processes, not a testable clock.
#![allow(clippy::disallowed_types)]

pub mod cfssl;
pub mod csrs;
pub mod dtca;
pub mod fleet;
pub mod footprint;
pub mod grpc;
pub mod guard;
pub mod inventory;
pub mod load;
pub mod machine;
pub mod pg;
pub mod proc;
pub mod profile;
pub mod raw;
pub mod report;
pub mod run;
pub mod storecost;
pub mod storm;
