//! `ca-server fleet [--json] [--state STATE]...`: every enrolled node in one view, from
//! the running server (the admin `Fleet` call), and a summary line.

use std::fmt::Write;

use dtca_common::Reason;
use dtca_proto::v1;

use super::admin::{connect, print_json, status_error, timestamp};
use super::settings::FileConfig;
use super::{CliError, FleetArgs};
use crate::fleet::state::Filter;

/// Largest view the CLI reads: room for about 200,000 nodes.
const MAX_VIEW_BYTES: usize = 64 * 1024 * 1024;

pub(super) async fn run(args: FleetArgs, file: &FileConfig) -> Result<(), CliError> {
    let states = if args.state.is_empty() {
        file.state.clone().unwrap_or_default()
    } else {
        args.state
    };
    // Checked here too, so a typo fails before any connection.
    Filter::parse(&states).map_err(|e| CliError::new(Reason::Config, format!("--state: {e}")))?;
    // A row is a few hundred bytes: 10,000 nodes pass gRPC's default 4 MiB.
    let mut client = connect(&args.admin, file)
        .await?
        .max_decoding_message_size(MAX_VIEW_BYTES);
    let view = client
        .fleet(v1::FleetRequest { states })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.admin.wants_json(file) {
        print_json(&crate::fleet::json::view(&view));
    } else {
        print_table(&view);
    }
    Ok(())
}

fn print_table(view: &v1::FleetResponse) {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<[String; 7]> = view
        .nodes
        .iter()
        .map(|n| {
            let mut expires = timestamp(n.not_after_unix);
            if n.expiring {
                expires.push_str(" (expiring)");
            }
            let reported = if n.reported_unix == 0 {
                "never".to_string()
            } else if n.stale {
                format!("{} (stale)", timestamp(n.reported_unix))
            } else {
                timestamp(n.reported_unix)
            };
            [
                n.name.clone(),
                dash(&n.endpoint),
                n.state.clone(),
                dash(&n.mode),
                expires,
                reported,
                dash(&n.last_error),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "ENGINE",
        "STATE",
        "MODE",
        "EXPIRES",
        "LAST-REPORT",
        "LAST-ERROR",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row).take(6) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The table is printed at once: a line at a time, stdout would be written ten
    // thousand times.
    let mut table = String::new();
    let mut line = |cells: [&str; 7]| {
        let start = table.len();
        for (i, cell) in cells.iter().enumerate() {
            if i < 6 {
                let _ = write!(table, "{cell:<w$}  ", w = widths[i]);
            } else {
                table.push_str(cell);
            }
        }
        table.truncate(start + table[start..].trim_end().len());
        table.push('\n');
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    let s = view.summary.unwrap_or_default();
    println!(
        "{table}{} nodes: {} on mTLS, {} still plain, {} failed switch, {} unhealthy, {} stale, {} unreported, {} expired; {} expiring within 7 days",
        s.nodes,
        s.mtls,
        s.plain,
        s.failed,
        s.unhealthy,
        s.stale,
        s.unreported,
        s.expired,
        s.expiring
    );
}
