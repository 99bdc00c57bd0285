//! The engine's answer passed on to the client, bodies passed on as they come, and the
//! byte pipes of upgrades and hijacked streams.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;

use super::{Downstream, Engine, Progress};
use crate::guard::http1::{Chunked, Framing, Inbound, RequestHead, parse_response};

/// How the engine's answer went.
pub(super) enum Answered {
    /// Passed on whole.
    Done { status: u16, close: bool },
    /// The head is passed on and the connection is now a byte pipe (101, or an answer
    /// that lasts until the engine closes).
    Pipe { status: u16 },
    /// No head came (nothing was passed on to the client).
    NoHead(String),
    /// It broke after its head was passed on (or the client went away).
    Broken,
}

/// Passes the engine's answer on: 1xx heads, then the final head and its body.
pub(super) async fn respond<W: AsyncWrite + Unpin>(
    up: &mut Inbound<OwnedReadHalf>,
    w: &mut W,
    head: &RequestHead,
    progress: &Progress,
) -> Answered {
    loop {
        let response = loop {
            match parse_response(up.data(), &head.method) {
                Ok(Some(response)) => break response,
                Ok(None) => {}
                Err(e) => return Answered::NoHead(e),
            }
            match up.fill().await {
                Ok(0) => return Answered::NoHead("it closed the connection".into()),
                Err(e) => return Answered::NoHead(e.to_string()),
                Ok(_) => {}
            }
        };
        let status = response.status;
        if status == 101 && !head.upgrade {
            return Answered::NoHead("a protocol switch nobody asked for".into());
        }
        let interim = (100..200).contains(&status) && status != 101;
        if !interim {
            progress.status.store(status, Ordering::Relaxed);
        }
        if interim || status == 101 || response.body == Framing::UntilClose {
            if w.write_all(&up.data()[..response.len]).await.is_err() || w.flush().await.is_err() {
                return Answered::Broken;
            }
            up.consume(response.len);
            if interim {
                continue;
            }
            return Answered::Pipe { status };
        }
        // The head goes out with what of the body is at hand, in one TLS record.
        return match copy_body(up, w, response.body, &progress.bytes_out, response.len).await {
            Ok(()) => Answered::Done {
                status,
                close: response.close,
            },
            Err(_) => Answered::Broken,
        };
    }
}

/// Passes one body on as it comes (its framing followed, its bytes unchanged), flushing
/// whenever the source has nothing more yet. Counts its data bytes into `count`. The
/// first `head` bytes held (a response head) go out first, in the same write as the body
/// bytes already at hand.
pub(super) async fn copy_body<R, W>(
    src: &mut Inbound<R>,
    dst: &mut W,
    framing: Framing,
    count: &AtomicU64,
    mut head: usize,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut chunked = (framing == Framing::Chunked).then(Chunked::default);
    while left > 0 {
        if src.data().len() <= head {
            // Nothing of the body at hand: what is ready goes out now (a stream's head
            // must not wait for its first line).
            if head > 0 {
                dst.write_all(&src.data()[..head]).await?;
                src.consume(head);
                head = 0;
            }
            dst.flush().await?;
            if src.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let body = &src.data()[head..];
        let (take, payload) = match &mut chunked {
            Some(c) => {
                let (used, payload) = c
                    .scan(body)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                if c.done() {
                    left = 0;
                }
                (used, payload)
            }
            None => {
                let take = body.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                left -= take as u64;
                (take, take as u64)
            }
        };
        dst.write_all(&src.data()[..head + take]).await?;
        src.consume(head + take);
        head = 0;
        count.fetch_add(payload, Ordering::Relaxed);
    }
    if head > 0 {
        dst.write_all(&src.data()[..head]).await?;
        src.consume(head);
    }
    dst.flush().await
}

/// Copies both ways until both directions have ended (what each side sent ahead is passed
/// on first). A direction ends at its reader's end of input, or a read error (a TLS client
/// that half-closes its TCP side without close_notify reads as an error); its writer is
/// then shut down, which passes the half-close on. Returns the bytes to the engine and to
/// the client.
pub(super) async fn pipe<S>(client: &mut Downstream<S>, up: Engine) -> (u64, u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Engine {
        r: mut up_r,
        w: mut up_w,
    } = up;
    let forward = async {
        let n = drain(&mut client.r, &mut up_w).await;
        let _ = up_w.shutdown().await;
        n
    };
    let back = async {
        let n = drain(&mut up_r, &mut client.w).await;
        let _ = client.w.shutdown().await;
        n
    };
    tokio::join!(forward, back)
}

/// Copies until the end of input or an error; the bytes copied.
async fn drain<R, W>(src: &mut Inbound<R>, dst: &mut W) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let count = AtomicU64::new(0);
    let _ = copy_body(src, dst, Framing::UntilClose, &count, 0).await;
    count.into_inner()
}
