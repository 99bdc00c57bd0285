//! One client connection through the guard: HTTP/1.1 from the client (TLS), each request's
//! head read and checked, then passed on over one connection to dockerd's unix socket.
//!
//! Only heads are parsed ([`super::http1`]); bodies pass through as they are, in one
//! task, through one buffer per direction that grows with the traffic (up to 256 KiB), so
//! a `docker cp` costs a read and a write per buffer rather than a message per TLS record.
//! The request body goes up while the answer comes down, so an engine that answers
//! before reading the whole body (an error) is passed on at once. An upgrade (`Upgrade:
//! tcp`, 101: `exec -it`, `attach`, `run -it`, BuildKit sessions) or an answer that lasts
//! until the engine closes (dockerd's hijacked streams) becomes a raw byte pipe in each
//! direction, where one side's end of input (a half-close: stdin done) is passed on as the
//! other side's end of output, and the pipe lasts until both directions are done.
//!
//! - this file: the connection's loop, one request and its answer;
//! - [`relay`]: the answer and bodies passed on, and the byte pipes;
//! - [`record`]: what the guard answers itself, and each request's audit record.

mod record;
mod relay;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;

use self::record::{Record, answer, refuse};
use self::relay::{Answered, copy_body, pipe, respond};
use super::http1::{BadRequest, Framing, Inbound, RequestHead, parse_request};
use super::verify::Client;
use super::{Registration, Shared};

/// How long a request head may take once its first byte came (an idle kept-alive
/// connection may wait for its next request as long as it likes).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// After a refusal that leaves a request body unread: how long, and how much of it, is
/// read and dropped before the connection closes (closing with unread input would reset
/// the connection and lose the refusal on its way).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 * 1024 * 1024;
/// The send buffer asked for on the connection to dockerd.
const ENGINE_SEND_BUFFER: usize = 2 * 1024 * 1024;

/// One client connection, verified and recorded.
pub(super) struct Open {
    pub(super) client: Arc<Client>,
    pub(super) shared: Arc<Shared>,
    /// dockerd's unix socket.
    pub(super) socket: PathBuf,
    /// Turns true when the certificate is revoked.
    pub(super) closed: watch::Receiver<bool>,
    /// Keeps the connection recorded (closable) while it lives.
    pub(super) _registration: Registration,
}

/// Serves one connection until it ends or its certificate is revoked.
pub(super) async fn serve<S>(io: S, open: Open)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closed = open.closed.clone();
    tokio::select! {
        biased;
        () = session(io, &open) => {}
        () = revoked(closed) => {
            tracing::info!("closed a connection of a revoked certificate");
        }
    }
}

/// Resolves when the certificate is revoked; never while it is not.
async fn revoked(mut closed: watch::Receiver<bool>) {
    if closed.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The client's side of the connection.
struct Downstream<S> {
    r: Inbound<ReadHalf<S>>,
    w: WriteHalf<S>,
}

/// The connection to dockerd, kept from one request to the next.
struct Engine {
    r: Inbound<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Engine {
    async fn connect(open: &Open) -> Result<Engine, String> {
        let stream = UnixStream::connect(&open.socket)
            .await
            .map_err(|e| format!("{}: {e}", open.socket.display()))?;
        // A deeper socket buffer lets an upload run ahead of dockerd's reads (the kernel
        // caps it at net.core.wmem_max): measured +20 % on a 1 GiB `docker cp` in.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(ENGINE_SEND_BUFFER);
        let (r, w) = stream.into_split();
        Ok(Engine {
            r: Inbound::new(r),
            w,
        })
    }

    /// Whether the engine still holds this connection open and has nothing unasked for
    /// on it (it closes idle connections as it likes).
    fn reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        self.r.data().is_empty()
            && matches!(self.r.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// What follows an exchange.
enum Next {
    /// The next request on the same connection.
    Again,
    /// The connection ends.
    Close,
}

async fn session<S>(io: S, open: &Open)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (r, w) = tokio::io::split(io);
    let mut client = Downstream {
        r: Inbound::new(r),
        w,
    };
    let mut engine: Option<Engine> = None;
    loop {
        let head = match read_request(&mut client.r).await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(refused) => {
                let _ = answer(&mut client.w, refused.status, &refused.message, true).await;
                tracing::debug!(identity = %open.client.identity, status = refused.status, message = %refused.message, "bad request");
                break;
            }
        };
        match exchange(open, &mut client, &mut engine, head).await {
            Next::Again => {}
            Next::Close => break,
        }
    }
    let _ = client.w.shutdown().await;
}

/// Reads the next request head: `None` when the client ended the connection between
/// requests.
async fn read_request<R: AsyncRead + Unpin>(
    r: &mut Inbound<R>,
) -> Result<Option<RequestHead>, BadRequest> {
    let started = Instant::now();
    loop {
        if !r.data().is_empty()
            && let Some((head, len)) = parse_request(r.data())?
        {
            r.consume(len);
            return Ok(Some(head));
        }
        let read = if r.data().is_empty() {
            r.fill().await
        } else {
            let left = HEAD_TIMEOUT.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, r.fill()).await {
                Ok(read) => read,
                Err(_) => {
                    return Err(BadRequest {
                        status: 408,
                        message: "the request head took too long".into(),
                    });
                }
            }
        };
        match read {
            Ok(0) | Err(_) if r.data().is_empty() => return Ok(None),
            Ok(0) | Err(_) => {
                return Err(BadRequest {
                    status: 400,
                    message: "the connection ended inside a request head".into(),
                });
            }
            Ok(_) => {}
        }
    }
}

/// One request and its answer.
async fn exchange<S>(
    open: &Open,
    client: &mut Downstream<S>,
    engine: &mut Option<Engine>,
    head: RequestHead,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let record = Record::new(open, &head);
    if let Err(message) = open
        .shared
        .allowed(&open.client, &head.method, &head.target)
    {
        tracing::info!(identity = %open.client.identity, serial = %open.client.serial, method = %head.method, path = %head.target, %message, "refused");
        return refuse(client, &head, record, 403, message).await;
    }
    // A connection kept from an earlier request may have been closed by the engine since:
    // a request with no body is sent again once on a new one.
    let mut retry = head.body == Framing::Empty;
    loop {
        let reused = engine.take().filter(Engine::reusable);
        let fresh = reused.is_none();
        let mut up = match reused {
            Some(e) => e,
            None => match Engine::connect(open).await {
                Ok(e) => e,
                Err(e) => {
                    let message = format!("the guard cannot reach the engine: {e}");
                    return refuse(client, &head, record, 502, message).await;
                }
            },
        };
        if let Err(e) = up.w.write_all(&head.encoded).await {
            if retry && !fresh {
                retry = false;
                continue;
            }
            let message = format!("the engine did not take the request: {e}");
            return refuse(client, &head, record, 502, message).await;
        }
        let progress = Progress::new(&head);
        let answered = {
            let answer = respond(&mut up.r, &mut client.w, &head, &progress);
            tokio::pin!(answer);
            let first = {
                let body = async {
                    let copied =
                        copy_body(&mut client.r, &mut up.w, head.body, &progress.bytes_in, 0).await;
                    progress.sent.store(copied.is_ok(), Ordering::Relaxed);
                    copied
                };
                tokio::pin!(body);
                tokio::select! {
                    biased;
                    copied = &mut body => Err(copied.is_ok()),
                    answered = &mut answer => Ok(answered),
                }
            };
            match first {
                Ok(answered) => answered,
                // The client went away, or sent a broken body: dockerd sees its connection
                // closed mid-request.
                Err(false) => {
                    record.left(&progress);
                    return Next::Close;
                }
                Err(true) => {
                    // The body is up; wait for the answer, and notice a client that leaves
                    // meanwhile (an `events` or `logs -f` it stopped following).
                    let mut watching = true;
                    loop {
                        tokio::select! {
                            biased;
                            answered = &mut answer => break answered,
                            read = client.r.fill(), if watching => match read {
                                Ok(0) | Err(_) => {
                                    record.left(&progress);
                                    return Next::Close;
                                }
                                // A pipelined request: it waits in the buffer.
                                Ok(_) => watching = false,
                            },
                        }
                    }
                }
            }
        };
        let body_sent = progress.sent.load(Ordering::Relaxed);
        return match answered {
            Answered::Done { status, close } => {
                record.done(status, &progress, None);
                if close || head.close || !body_sent {
                    Next::Close
                } else {
                    *engine = Some(up);
                    Next::Again
                }
            }
            Answered::Pipe { status } => {
                let (to_engine, to_client) = pipe(client, up).await;
                progress.bytes_in.fetch_add(to_engine, Ordering::Relaxed);
                progress.bytes_out.fetch_add(to_client, Ordering::Relaxed);
                record.done(status, &progress, None);
                Next::Close
            }
            Answered::NoHead(_) if retry && !fresh => {
                retry = false;
                continue;
            }
            Answered::NoHead(e) => {
                let message = format!("the engine did not answer: {e}");
                tracing::debug!(%message, "guard");
                refuse(client, &head, record, 502, message).await
            }
            Answered::Broken => {
                record.left(&progress);
                Next::Close
            }
        };
    }
}

/// How far one exchange got, shared by its two directions.
struct Progress {
    /// The request body was passed on whole.
    sent: AtomicBool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// The status passed on to the client (0: none yet).
    status: AtomicU16,
}

impl Progress {
    fn new(head: &RequestHead) -> Progress {
        Progress {
            sent: AtomicBool::new(head.body == Framing::Empty),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            status: AtomicU16::new(0),
        }
    }
}
