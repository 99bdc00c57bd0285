//! Helpers shared by the SQL backends: how lists and times are written in a column.

use std::net::IpAddr;
use std::time::Duration;

use dtca_pki::Serial;
use time::OffsetDateTime;

use super::StoreError;

/// Space-separated list (DNS names and IP addresses never contain spaces).
pub(crate) fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn dns(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

pub(crate) fn ips(text: &str) -> Result<Vec<IpAddr>, String> {
    text.split_whitespace()
        .map(|s| s.parse().map_err(|_| format!("bad IP {s:?}")))
        .collect()
}

pub(crate) fn time(secs: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string())
}

/// An access level as stored (`full`, `read-only`); anything else is a corrupt record.
pub(crate) fn access(text: &str) -> Result<dtca_pki::access::Access, StoreError> {
    text.parse()
        .map_err(|e: dtca_pki::access::UnknownAccess| StoreError::Corrupt(e.to_string()))
}

/// A serial as stored (openssl's notation); anything else is a corrupt record.
pub(crate) fn parse_serial(text: &str) -> Result<Serial, StoreError> {
    text.parse()
        .map_err(|e: dtca_pki::serial::SerialError| StoreError::Corrupt(e.to_string()))
}

/// A duration in whole seconds, as the columns hold it.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
