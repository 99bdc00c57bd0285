//! The guard's per-request audit log on the node: one JSON line per request, appended to
//! `<out>/audit.log`, rotated at [`MAX_FILE_BYTES`] into `audit.log.1` .. `audit.log.4`
//! (at most [`KEPT_FILES`] files, so about 50 MiB in all).
//!
//! - [`writer`]: [`AuditLog`], fed from the request path without waiting on the disk; a
//!   thread of its own writes and rotates.
//! - [`reader`]: [`Follower`], which reads every file oldest first and keeps reading across
//!   rotation, and the text and JSON forms `ca-client audit` prints.
//!
//! A line: `{"time":"2026-12-07T12:00:00.123Z","identity":"dtca://prod/operator/ann",
//! "serial":"5F3A...","access":"read-only","method":"GET","path":"/v1.47/containers/json",
//! "status":200,"bytes_in":0,"bytes_out":2143,"duration_ms":1.204}`, with `"refused"` added
//! when the guard refused the request itself. When the disk fell behind and records were
//! dropped, a line `{"time":...,"dropped":N}` says how many.

pub(crate) mod reader;
pub(crate) mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dtca_pki::access::Access;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) use writer::AuditLog;

/// The current file's name in the node's credential directory.
pub(crate) const FILE: &str = "audit.log";
/// A file is rotated before it would grow past this.
pub(crate) const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// How many files are kept, the current one included.
pub(crate) const KEPT_FILES: usize = 5;
/// Records waiting for the disk before new ones are dropped (and counted).
pub(crate) const QUEUE: usize = 8192;
/// Longest path written; a longer one is cut (and ends in `...`).
const MAX_PATH_CHARS: usize = 2048;

/// How big the log may grow (the constants above, smaller in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_file_bytes: u64,
    pub(crate) kept_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: MAX_FILE_BYTES,
            kept_files: KEPT_FILES,
        }
    }
}

/// One request through the guard.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuditRecord {
    /// When the request arrived.
    pub(crate) time: OffsetDateTime,
    /// The client certificate's identity URI.
    pub(crate) identity: String,
    /// The client certificate's serial, as `openssl x509 -noout -serial` prints it.
    pub(crate) serial: String,
    pub(crate) access: Access,
    pub(crate) method: String,
    /// The request target as the client sent it, query included.
    pub(crate) path: String,
    /// The status answered (the engine's, or the guard's own refusal).
    pub(crate) status: u16,
    /// Body bytes from the client (both directions count hijacked streams too).
    pub(crate) bytes_in: u64,
    /// Body bytes to the client.
    pub(crate) bytes_out: u64,
    /// From the request's arrival to the end of its answer (or of the hijacked stream).
    pub(crate) duration: Duration,
    /// The guard's refusal message, when it refused the request itself.
    pub(crate) refused: Option<String>,
}

impl AuditRecord {
    /// The record as one JSON line (newline included).
    pub(crate) fn to_line(&self) -> String {
        let path = if self.path.chars().count() > MAX_PATH_CHARS {
            let cut: String = self.path.chars().take(MAX_PATH_CHARS).collect();
            format!("{cut}...")
        } else {
            self.path.clone()
        };
        let entry = Entry {
            time: rfc3339(self.time),
            identity: Some(self.identity.clone()),
            serial: Some(self.serial.clone()),
            access: Some(self.access.as_str().to_string()),
            method: Some(self.method.clone()),
            path: Some(path),
            status: Some(self.status),
            bytes_in: Some(self.bytes_in),
            bytes_out: Some(self.bytes_out),
            duration_ms: Some((self.duration.as_secs_f64() * 1e6).round() / 1e3),
            refused: self.refused.clone(),
            dropped: None,
        };
        entry.to_line()
    }
}

/// A line of the log, as written and as read back: every field but `time` may be missing
/// (a `dropped` line has only `time` and `dropped`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dropped: Option<u64>,
}

impl Entry {
    /// How many records the disk lost, as a line of its own.
    fn dropped(time: OffsetDateTime, count: u64) -> Entry {
        Entry {
            time: rfc3339(time),
            identity: None,
            serial: None,
            access: None,
            method: None,
            path: None,
            status: None,
            bytes_in: None,
            bytes_out: None,
            duration_ms: None,
            refused: None,
            dropped: Some(count),
        }
    }

    fn to_line(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// The path of the file `index` generations old (0: the current one).
pub(crate) fn file_path(dir: &Path, index: usize) -> PathBuf {
    match index {
        0 => dir.join(FILE),
        n => dir.join(format!("{FILE}.{n}")),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record(n: u64) -> AuditRecord {
        AuditRecord {
            time: time::macros::datetime!(2026-12-07 12:00:00.5 UTC),
            identity: "dtca://prod/operator/ann".into(),
            serial: "5F3A01".into(),
            access: Access::ReadOnly,
            method: "GET".into(),
            path: format!("/v1.47/containers/c{n}/json"),
            status: 200,
            bytes_in: 0,
            bytes_out: n,
            duration: Duration::from_micros(1_204),
            refused: None,
        }
    }

    #[test]
    fn a_record_is_one_json_line_with_every_field() {
        let line = record(2143).to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-12-07T12:00:00.5Z");
        assert_eq!(v["identity"], "dtca://prod/operator/ann");
        assert_eq!(v["serial"], "5F3A01");
        assert_eq!(v["access"], "read-only");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/v1.47/containers/c2143/json");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_in"], 0);
        assert_eq!(v["bytes_out"], 2143);
        assert_eq!(v["duration_ms"], 1.204);
        assert!(v.get("refused").is_none());
    }

    #[test]
    fn a_path_with_a_newline_stays_on_one_line_and_a_long_one_is_cut() {
        let mut r = record(1);
        r.path = "/x\n{\"forged\":1}".into();
        assert_eq!(r.to_line().matches('\n').count(), 1);
        r.path = format!("/{}", "a".repeat(10_000));
        let v: serde_json::Value = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(v["path"].as_str().unwrap().len(), MAX_PATH_CHARS + 3);
    }

    #[test]
    fn refusals_and_drops_have_their_own_fields() {
        let mut r = record(1);
        r.status = 403;
        r.refused = Some("read-only access: POST /containers/create changes state".into());
        let v: serde_json::Value = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(
            v["refused"],
            "read-only access: POST /containers/create changes state"
        );
        let d = Entry::dropped(r.time, 7).to_line();
        assert_eq!(d, "{\"time\":\"2026-12-07T12:00:00.5Z\",\"dropped\":7}\n");
    }
}
