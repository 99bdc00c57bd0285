//! Harness for the end-to-end tests: real binaries, a CA in-process on port 0, and
//! processes that are always stopped by pid.
//!
//! - [`bins`]: the built `ca-server` and `ca-client` binaries.
//! - [`cli`]: running them and reading what they printed (exit codes, one error line).
//! - [`process`]: a child process that is stopped (SIGTERM, then SIGKILL) when dropped.
//! - [`ca`]: a CA served in-process through `ca_server::server::run` on 127.0.0.1:0.
//! - [`serve`]: a `ca-server serve` process on a free port, and its health.
//! - [`load`]: enrollment load against a running CA, remembering what it delivered.
//! - [`docker`]: real dockerd engines, plain at first, stopped by pid.
//! - [`openssl`]: `openssl verify` of issued chains.
//! - [`postgres`]: a private PostgreSQL server in a temp dir, stopped by pid.
//! - [`browser`]: headless chromium (the web page's DOM, screenshots) and a bare HTTP GET.
//! - [`probe`]: `docker --context NAME version` once a second, what it saw sorted.
//!
//! Tests talk only to loopback and to network namespaces they create.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]
// The harness waits on real processes from plain threads, where no tokio clock runs.
#![allow(clippy::disallowed_types)]

pub mod bins;
pub mod browser;
pub mod ca;
pub mod cli;
pub mod docker;
pub mod load;
pub mod openssl;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod serve;
