//! What both command lines share: the log format, logging set-up, the exit-code table
//! for `--help`, and waiting for SIGTERM/SIGINT.
//!
//! - [`args`]: parsing with the conventions of both binaries (boolean environment
//!   variables, usage errors exit 64, the final error as a log line).
//! - [`docs`]: shell completions and man pages made from the clap definitions.

pub mod args;
pub mod docs;

use std::sync::OnceLock;

use crate::reason::Reason;

pub use args::{fail, parse};

/// The log format chosen by [`init_logging`], for the final error line.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Log formats on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` on stderr (`RUST_LOG` overrides the levels: `warn`,
/// `info,ca_client::agent=debug`); colours only on a terminal.
///
/// The filter is by target and level only (no span or field directives): it needs no
/// regular expressions, which keeps them out of the binaries and a resident agent smaller.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let _ = FORMAT.set(format);
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| levels(&spec))
        .unwrap_or_else(default_levels);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(layer.json()).try_init(),
        LogFormat::Text => registry.with(layer).try_init(),
    };
}

/// The levels `RUST_LOG` asks for: `None` when it is empty or unreadable (the defaults
/// apply then, rather than no logs at all).
fn levels(spec: &str) -> Option<tracing_subscriber::filter::Targets> {
    if spec.trim().is_empty() {
        return None;
    }
    spec.parse().ok()
}

/// `info`, with the HTTP/2 and gRPC plumbing's chatter at `warn`.
fn default_levels() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::LevelFilter;
    tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::INFO)
        .with_targets([
            ("h2", LevelFilter::WARN),
            ("hyper", LevelFilter::WARN),
            ("tower", LevelFilter::WARN),
        ])
}

/// The exit-code table shown in `--help`.
pub fn exit_codes() -> String {
    let mut out = String::from("Exit codes:\n  0  success\n");
    for r in Reason::ALL {
        out.push_str(&format!("  {:<3}{}\n", r.exit_code(), r.describe()));
    }
    out
}

/// Resolves on SIGTERM or SIGINT (never, if the handlers cannot be installed).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Makes a closed stdout (`ca-server cert list | head -1`) end the process quietly, with
/// the status a shell gives a command stopped by SIGPIPE (141), instead of a panic
/// message: Rust ignores SIGPIPE, so writing to a closed pipe would otherwise panic.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::*;

    #[test]
    fn rust_log_sets_levels_overall_and_per_target_and_an_empty_one_keeps_the_defaults() {
        let warn = levels("warn").unwrap();
        assert!(warn.would_enable("ca_server::serve", &tracing::Level::WARN));
        assert!(!warn.would_enable("ca_server::serve", &tracing::Level::INFO));

        let agent = levels("info,ca_client::agent=debug").unwrap();
        assert!(agent.would_enable("ca_client::agent::channel", &tracing::Level::DEBUG));
        assert!(!agent.would_enable("ca_client::guard", &tracing::Level::DEBUG));
        assert!(agent.would_enable("ca_client::guard", &tracing::Level::INFO));

        // Empty or unreadable: the defaults, not silence.
        assert!(levels("").is_none());
        assert!(levels("  ").is_none());
        assert!(levels("ca_server=loud").is_none());
        let defaults = default_levels();
        assert_eq!(defaults.default_level(), Some(LevelFilter::INFO));
        assert!(!defaults.would_enable("h2::proto", &tracing::Level::INFO));
    }
}
