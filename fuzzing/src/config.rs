//! Config files: the TOML of `/etc/dtca/ca-server.toml` and `/etc/dtca/ca-client.toml`,
//! and the values in them that are parsed further (durations, engine addresses).

use std::path::Path;

use dtca_common::config;
use dtca_common::endpoint::EngineAddr;
use dtca_pki::duration;

/// Input: a config file. Both binaries' loaders read it; every string in it is also read
/// as a duration (which prints back to itself) and as an engine address.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/dtca/fuzz.toml");
    let server = config::parse::<ca_server::cli::FileConfig>(text, path);
    let client = config::parse::<ca_client::cli::FileConfig>(text, path);
    let table = toml::from_str::<toml::Table>(text);
    if server.is_ok() || client.is_ok() {
        assert!(table.is_ok(), "a config parsed that is no TOML table");
    }
    for error in [server.err(), client.err()].into_iter().flatten() {
        assert!(
            error.0.starts_with("/etc/dtca/fuzz.toml: "),
            "a config error does not name its file: {error}"
        );
    }
    let Ok(table) = table else {
        return;
    };
    let table = toml::Value::Table(table);
    let mut strings = Vec::new();
    collect_strings(&table, &mut strings);
    for s in strings {
        check_duration(s);
        if let Ok(addr) = EngineAddr::parse(s) {
            super::daemon_json::check_engine_addr(&addr);
        }
    }
}

/// A duration that parses prints in a form that parses to the same duration.
fn check_duration(text: &str) {
    let Ok(d) = duration::parse(text) else {
        return;
    };
    let printed = duration::format(d);
    assert_eq!(
        duration::parse(&printed).ok(),
        Some(d),
        "{text:?} reads as {d:?}, printed {printed:?}, which reads otherwise"
    );
}

fn collect_strings<'a>(value: &'a toml::Value, out: &mut Vec<&'a str>) {
    match value {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        toml::Value::Table(t) => t.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
