//! What the guard answers itself (refusals, the engine unreachable) and the audit record
//! of each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use dtca_pki::access::Access;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{Downstream, LINGER, LINGER_BYTES, Next, Open, Progress};
use crate::guard::Shared;
use crate::guard::audit::AuditRecord;
use crate::guard::http1::{Framing, RequestHead};
use crate::guard::verify::Client;

/// Answers a request the guard will not pass on (`status`: 403 refused, 502 the engine
/// failed), and records it. A request body still unread ends the connection after a
/// short linger.
pub(super) async fn refuse<S>(
    client: &mut Downstream<S>,
    head: &RequestHead,
    record: Record,
    status: u16,
    message: String,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let unread = head.body != Framing::Empty;
    let close = unread || head.close || status != 403;
    let written = answer(&mut client.w, status, &message, close).await;
    record.refused(status, message);
    if written.is_err() || !close {
        return if written.is_ok() {
            Next::Again
        } else {
            Next::Close
        };
    }
    if unread {
        let _ = client.w.shutdown().await;
        let drained = async {
            let mut dropped = 0u64;
            while dropped < LINGER_BYTES {
                let held = client.r.data().len();
                client.r.consume(held);
                dropped += held as u64;
                match client.r.fill().await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drained).await;
    }
    Next::Close
}

/// Writes a Docker-style error answer (`{"message": ...}`), which the docker CLI prints as
/// the daemon's message.
pub(super) async fn answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    message: &str,
    close: bool,
) -> std::io::Result<()> {
    let body = serde_json::json!({ "message": message }).to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
    );
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

/// One request's audit record, written once its answer is done.
pub(super) struct Record {
    shared: Arc<Shared>,
    client: Arc<Client>,
    method: String,
    /// The request target, query included.
    path: String,
    time: time::OffsetDateTime,
    started: Instant,
}

impl Record {
    pub(super) fn new(open: &Open, head: &RequestHead) -> Record {
        Record {
            shared: open.shared.clone(),
            client: open.client.clone(),
            method: head.method.to_string(),
            path: head.target.clone(),
            time: time::OffsetDateTime::now_utc(),
            started: Instant::now(),
        }
    }

    /// The guard answered `status` itself with `message`.
    pub(super) fn refused(self, status: u16, message: String) {
        let nothing = Progress {
            sent: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            status: AtomicU16::new(status),
        };
        self.done(status, &nothing, Some(message));
    }

    /// The exchange ended early (the client left, or a side broke): recorded with the
    /// status passed on so far, or 499 (the client closed the request) when none was.
    pub(super) fn left(self, progress: &Progress) {
        let status = match progress.status.load(Ordering::Relaxed) {
            0 => 499,
            s => s,
        };
        self.done(status, progress, None);
    }

    pub(super) fn done(self, status: u16, progress: &Progress, refused: Option<String>) {
        self.shared.audit(AuditRecord {
            time: self.time,
            identity: self.client.identity.clone(),
            serial: self.client.serial.to_string(),
            access: self.client.access.unwrap_or(Access::ReadOnly),
            method: self.method,
            path: self.path,
            status,
            bytes_in: progress.bytes_in.load(Ordering::Relaxed),
            bytes_out: progress.bytes_out.load(Ordering::Relaxed),
            duration: self.started.elapsed(),
            refused,
        });
    }
}
