//! One client connection through the guard: HTTP/1.1 from the client (TLS), each request
//! checked, then forwarded over one connection to dockerd's unix socket. Bodies stream
//! both ways frame by frame (nothing is buffered whole); an upgrade (`Upgrade: tcp`, 101:
//! `exec -it`, `attach`, `run -it`, BuildKit sessions) becomes a raw byte pipe in each
//! direction, where one side's end of input (a half-close: stdin done) is passed on as
//! the other side's end of output, and the pipe lasts until both directions are done.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, watch};

use dtca_pki::access::Access;
use tokio::time::Instant;

use super::audit::AuditRecord;
use super::verify::Client;
use super::{Registration, Shared};

/// What a response body is here: dockerd's, streamed, or the guard's own.
type Reply = Response<UnsyncBoxBody<Bytes, hyper::Error>>;
/// A request body on its way to dockerd: the client's, streamed and counted.
type Upstream = UnsyncBoxBody<Bytes, hyper::Error>;
/// What runs once a body has ended, with the bytes it carried.
type Finish = Box<dyn FnOnce(u64) + Send>;

/// One client connection, verified and recorded.
pub(super) struct Open {
    pub(super) client: Arc<Client>,
    pub(super) shared: Arc<Shared>,
    /// dockerd's unix socket.
    pub(super) socket: PathBuf,
    /// Turns true when the certificate is revoked.
    pub(super) closed: watch::Receiver<bool>,
    /// Keeps the connection recorded (closable) while it or a session it hijacked lives.
    pub(super) registration: Arc<Registration>,
}

/// Serves one connection until it ends or its certificate is revoked.
pub(super) async fn serve<S>(io: S, open: Open)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closed = open.closed.clone();
    let conn = Arc::new(Conn {
        open,
        upstream: Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(conn.handle(req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "guard connection ended");
            }
        }
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

/// One client connection's state.
struct Conn {
    open: Open,
    /// The connection to dockerd for this client connection, made at its first request.
    upstream: Mutex<Option<SendRequest<Upstream>>>,
}

impl Conn {
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), ToString::to_string);
        let record = Record {
            shared: self.open.shared.clone(),
            client: self.open.client.clone(),
            method: method.to_string(),
            path: target.clone(),
            time: time::OffsetDateTime::now_utc(),
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
        };
        if let Err(message) = self
            .open
            .shared
            .allowed(&self.open.client, &method, &target)
        {
            tracing::info!(identity = %self.open.client.identity, serial = %self.open.client.serial, %method, path = %target, %message, "refused");
            let reply = refusal(StatusCode::FORBIDDEN, &message);
            record.done(StatusCode::FORBIDDEN.as_u16(), 0, Some(message));
            return reply;
        }
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.headers.contains_key(hyper::header::UPGRADE);
        let downstream = upgrade.then(|| {
            let mut bare = Request::new(());
            *bare.extensions_mut() = std::mem::take(&mut parts.extensions);
            hyper::upgrade::on(bare)
        });
        let body = Metered::new(body, record.bytes_in.clone(), None).boxed_unsync();
        let req = Request::from_parts(parts, body);
        let mut sender = match self.sender().await {
            Ok(s) => s,
            Err(e) => {
                let message = format!("the guard cannot reach the engine: {e}");
                let reply = refusal(StatusCode::BAD_GATEWAY, &message);
                record.done(StatusCode::BAD_GATEWAY.as_u16(), 0, Some(message));
                return reply;
            }
        };
        let mut response = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                let message = format!("the engine did not answer: {e}");
                let reply = refusal(StatusCode::BAD_GATEWAY, &message);
                record.done(StatusCode::BAD_GATEWAY.as_u16(), 0, Some(message));
                return reply;
            }
        };
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream) = downstream
        {
            let upstream = hyper::upgrade::on(&mut response);
            let closed = self.open.closed.clone();
            let registration = self.open.registration.clone();
            tokio::spawn(async move {
                let _recorded = registration;
                let (mut to_engine, mut to_client) = (0, 0);
                match tokio::try_join!(downstream, upstream) {
                    Ok((down, up)) => {
                        (to_engine, to_client) =
                            pipe(TokioIo::new(down), TokioIo::new(up), closed).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
                record.bytes_in.fetch_add(to_engine, Ordering::Relaxed);
                record.done(status.as_u16(), to_client, None);
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        if !upgrade {
            // The connection to dockerd serves the next request too.
            *self.upstream.lock().await = Some(sender);
        }
        let (parts, body) = response.into_parts();
        let out = Arc::new(AtomicU64::new(0));
        let finish: Finish =
            Box::new(move |bytes_out| record.done(status.as_u16(), bytes_out, None));
        Response::from_parts(parts, Metered::new(body, out, Some(finish)).boxed_unsync())
    }

    /// The connection to dockerd, made anew when there is none or it closed.
    async fn sender(&self) -> Result<SendRequest<Upstream>, String> {
        if let Some(mut sender) = self.upstream.lock().await.take()
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        connect(&self.open.socket).await
    }
}

/// Opens a connection to dockerd's unix socket.
async fn connect(socket: &Path) -> Result<SendRequest<Upstream>, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "engine connection ended");
        }
    });
    Ok(sender)
}

/// Copies both ways until both directions have ended (or the certificate is revoked). A
/// direction ends at its reader's end of input, or a read error (a TLS client that
/// half-closes its TCP side without close_notify reads as an error); its writer is then
/// shut down, which passes the half-close on. Returns the bytes to the engine and to the
/// client.
async fn pipe<D, U>(down: D, up: U, closed: watch::Receiver<bool>) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut down_r, mut down_w) = tokio::io::split(down);
    let (mut up_r, mut up_w) = tokio::io::split(up);
    let to_engine = AtomicU64::new(0);
    let to_client = AtomicU64::new(0);
    let forward = async {
        let n = copy(&mut down_r, &mut up_w).await;
        let _ = up_w.shutdown().await;
        to_engine.store(n, Ordering::Relaxed);
    };
    let back = async {
        let n = copy(&mut up_r, &mut down_w).await;
        let _ = down_w.shutdown().await;
        to_client.store(n, Ordering::Relaxed);
    };
    tokio::select! {
        _ = async { tokio::join!(forward, back) } => {}
        () = revoked(closed) => {
            tracing::info!("closed a hijacked session of a revoked certificate");
        }
    }
    (to_engine.into_inner(), to_client.into_inner())
}

/// Copies until the end of input or an error; the bytes copied.
async fn copy<R, W>(reader: &mut R, writer: &mut W) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => n,
        };
        if writer.write_all(&buf[..n]).await.is_err() || writer.flush().await.is_err() {
            return total;
        }
        total += n as u64;
    }
}

/// A Docker-style error answer, which the docker CLI prints as the daemon's message.
pub(super) fn refusal(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn empty() -> UnsyncBoxBody<Bytes, hyper::Error> {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
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
    bytes_in: Arc<AtomicU64>,
}

impl Record {
    fn done(self, status: u16, bytes_out: u64, refused: Option<String>) {
        self.shared.audit(AuditRecord {
            time: self.time,
            identity: self.client.identity.clone(),
            serial: self.client.serial.to_string(),
            access: self.client.access.unwrap_or(Access::ReadOnly),
            method: self.method,
            path: self.path,
            status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration: self.started.elapsed(),
            refused,
        });
    }
}

/// A body passed on frame by frame, its bytes counted; `finish` runs once it ends (or is
/// dropped: the client went away).
struct Metered {
    inner: Incoming,
    count: Arc<AtomicU64>,
    finish: Option<Finish>,
}

impl Metered {
    fn new(inner: Incoming, count: Arc<AtomicU64>, finish: Option<Finish>) -> Metered {
        Metered {
            inner,
            count,
            finish,
        }
    }

    fn end(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish(self.count.load(Ordering::Relaxed));
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.end();
    }
}
