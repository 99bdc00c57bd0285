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
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, watch};

use super::Shared;
use super::verify::Client;

/// What a response body is here: dockerd's, streamed, or the guard's own.
type Reply = Response<UnsyncBoxBody<Bytes, hyper::Error>>;

/// Serves one connection until it ends or `closed` says its certificate was revoked.
pub(super) async fn serve<S>(
    io: S,
    client: Arc<Client>,
    shared: Arc<Shared>,
    socket: PathBuf,
    mut closed: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        client,
        shared,
        socket,
        upstream: Mutex::new(None),
        closed: closed.clone(),
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
        _ = closed.wait_for(|c| *c) => {
            tracing::info!("closed a connection of a revoked certificate");
        }
    }
}

/// One client connection's state.
struct Conn {
    client: Arc<Client>,
    shared: Arc<Shared>,
    /// dockerd's unix socket.
    socket: PathBuf,
    /// The connection to dockerd for this client connection, made at its first request.
    upstream: Mutex<Option<SendRequest<Incoming>>>,
    closed: watch::Receiver<bool>,
}

impl Conn {
    async fn handle(self: &Arc<Self>, mut req: Request<Incoming>) -> Reply {
        let started = tokio::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let record = Record {
            shared: self.shared.clone(),
            client: self.client.clone(),
            method: method.to_string(),
            path: path.clone(),
            started,
        };
        if let Err(message) = self.shared.allowed(&self.client, &method, &path) {
            tracing::info!(identity = %self.client.identity, serial = %self.client.serial, %method, %path, %message, "refused");
            record.done(StatusCode::FORBIDDEN.as_u16(), 0);
            return refusal(StatusCode::FORBIDDEN, &message);
        }
        let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
        let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut sender = match self.sender().await {
            Ok(s) => s,
            Err(e) => {
                record.done(StatusCode::BAD_GATEWAY.as_u16(), 0);
                return refusal(
                    StatusCode::BAD_GATEWAY,
                    &format!("the guard cannot reach the engine: {e}"),
                );
            }
        };
        let mut response = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                record.done(StatusCode::BAD_GATEWAY.as_u16(), 0);
                return refusal(
                    StatusCode::BAD_GATEWAY,
                    &format!("the engine did not answer: {e}"),
                );
            }
        };
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream) = downstream
        {
            let upstream = hyper::upgrade::on(&mut response);
            let closed = self.closed.clone();
            let bytes = Arc::new(AtomicU64::new(0));
            let counted = bytes.clone();
            tokio::spawn(async move {
                match tokio::try_join!(downstream, upstream) {
                    Ok((down, up)) => {
                        pipe(TokioIo::new(down), TokioIo::new(up), closed, &counted).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
                record.done(status.as_u16(), counted.load(Ordering::Relaxed));
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        if !upgrade {
            // The connection to dockerd serves the next request too.
            *self.upstream.lock().await = Some(sender);
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, Counted::new(body, record, status.as_u16()).boxed_unsync())
    }

    /// The connection to dockerd, made anew when there is none or it closed.
    async fn sender(&self) -> Result<SendRequest<Incoming>, String> {
        if let Some(mut sender) = self.upstream.lock().await.take()
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        connect(&self.socket).await
    }
}

/// Opens a connection to dockerd's unix socket.
async fn connect(socket: &Path) -> Result<SendRequest<Incoming>, String> {
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
/// shut down, which passes the half-close on.
async fn pipe<D, U>(down: D, up: U, mut closed: watch::Receiver<bool>, bytes: &AtomicU64)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut down_r, mut down_w) = tokio::io::split(down);
    let (mut up_r, mut up_w) = tokio::io::split(up);
    let to_engine = async {
        let n = tokio::io::copy(&mut down_r, &mut up_w).await.unwrap_or(0);
        let _ = up_w.shutdown().await;
        bytes.fetch_add(n, Ordering::Relaxed);
    };
    let to_client = async {
        let n = tokio::io::copy(&mut up_r, &mut down_w).await.unwrap_or(0);
        let _ = down_w.shutdown().await;
        bytes.fetch_add(n, Ordering::Relaxed);
    };
    tokio::select! {
        _ = async { tokio::join!(to_engine, to_client) } => {}
        _ = closed.wait_for(|c| *c) => {
            tracing::info!("closed a hijacked session of a revoked certificate");
        }
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
    path: String,
    started: tokio::time::Instant,
}

impl Record {
    fn done(self, status: u16, bytes: u64) {
        let took: Duration = self.started.elapsed();
        self.shared
            .audit(&self.client, &self.method, &self.path, status, bytes, took);
    }
}

/// dockerd's response body, passed on frame by frame, counted for the audit record.
struct Counted {
    inner: Incoming,
    bytes: u64,
    record: Option<(Record, u16)>,
}

impl Counted {
    fn new(inner: Incoming, record: Record, status: u16) -> Counted {
        Counted {
            inner,
            bytes: 0,
            record: Some((record, status)),
        }
    }

    fn finish(&mut self) {
        if let Some((record, status)) = self.record.take() {
            record.done(status, self.bytes);
        }
    }
}

impl Body for Counted {
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
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.finish(),
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

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}
