//! The little of HTTP/1.1 the guard reads: request and response heads, and where a
//! message's body ends. Bodies themselves pass through as they are; only their framing is
//! followed (a length, or chunked encoding read as it passes).
//!
//! The guard is strict where dockerd (Go's net/http) is lenient, never the other way
//! round: a request both could read differently (both `Content-Length` and
//! `Transfer-Encoding`, differing lengths, a coding other than `chunked`, a chunk line with
//! a bare LF) is refused here, so the request the policy checked is the request dockerd
//! runs. A request head is written out anew from what was parsed (CRLF lines, nothing
//! else); a response head, from dockerd, passes as it came.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Method;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest head read (request or response), in bytes.
pub(crate) const MAX_HEAD: usize = 256 * 1024;
/// The most header fields in one head.
const MAX_HEADERS: usize = 128;
/// A buffer's first size, and its largest: it doubles when a read fills it.
const FIRST_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 256 * 1024;
/// The longest chunk-size line (extensions included) read.
const MAX_CHUNK_LINE: usize = 4096;

/// Bytes read from one side and not yet passed on: a read buffer that starts small and
/// doubles when a read fills it, so idle connections stay cheap and busy ones make few
/// system calls.
pub(crate) struct Inbound<R> {
    pub(crate) io: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> Inbound<R> {
    pub(crate) fn new(io: R) -> Inbound<R> {
        Inbound {
            io,
            buf: vec![0; FIRST_BUF],
            start: 0,
            end: 0,
        }
    }

    /// What was read and not consumed yet.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more after what is held; `Ok(0)` at the end of input. The buffer grows
    /// (up to [`MAX_BUF`]) when a read fills it.
    ///
    /// # Errors
    /// The read's, or `InvalidData` when it holds [`MAX_BUF`] unconsumed bytes already.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// [`Inbound::fill`], polled.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_BUF {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "buffer full",
                )));
            }
            self.buf.resize((self.buf.len() * 2).min(MAX_BUF), 0);
        }
        let free = self.buf.len() - self.end;
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        if n == free && self.buf.len() < MAX_BUF {
            self.buf.resize((self.buf.len() * 2).min(MAX_BUF), 0);
        }
        Poll::Ready(Ok(n))
    }
}

/// Read through the buffer, so a reader that asks for little at a time (rustls reads one
/// TLS record per call) costs one system call per buffer, not per record.
impl<R: AsyncRead + Unpin> AsyncRead for Inbound<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.data().is_empty() && ready!(self.poll_fill(cx))? == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = self.data().len().min(out.remaining());
        out.put_slice(&self.data()[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// Writes pass straight through.
impl<R: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Inbound<R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (a response only): dockerd's hijacked streams.
    UntilClose,
}

/// A request head the guard accepted.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    /// The request target: an absolute path, query included.
    pub(crate) target: String,
    /// The head as it goes to the engine.
    pub(crate) encoded: Vec<u8>,
    pub(crate) body: Framing,
    /// It asks for a protocol switch (`Upgrade`: `exec -it`, `attach`).
    pub(crate) upgrade: bool,
    /// The connection ends after this exchange (`Connection: close`, or HTTP/1.0
    /// without keep-alive).
    pub(crate) close: bool,
}

/// Why a request head was refused: the status to answer and a line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest {
    pub(crate) status: u16,
    pub(crate) message: String,
}

fn bad(status: u16, message: impl Into<String>) -> BadRequest {
    BadRequest {
        status,
        message: message.into(),
    }
}

/// Reads a request head from `bytes`: `Ok(None)` while it is incomplete, else the head and
/// its length in `bytes`.
///
/// # Errors
/// A head that is malformed, too large, or could be read two ways.
pub(crate) fn parse_request(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            return Err(bad(431, "the request head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(bad(431, "the request has too many header fields"));
        }
        Err(e) => return Err(bad(400, format!("malformed request: {e}"))),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad(400, "malformed request"));
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| bad(400, "malformed request method"))?;
    if !target.starts_with('/') {
        return Err(bad(400, "the request target must be an absolute path"));
    }
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    let (mut upgrade, mut close, mut keep_alive) = (false, false, false);
    let mut encoded = Vec::with_capacity(len + 16);
    encoded.extend_from_slice(method.as_str().as_bytes());
    encoded.push(b' ');
    encoded.extend_from_slice(target.as_bytes());
    encoded.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.push(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        encoded.extend_from_slice(name.as_bytes());
        encoded.extend_from_slice(b": ");
        encoded.extend_from_slice(h.value);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"\r\n");
    let body = match (codings.as_slice(), lengths.is_empty()) {
        ([], true) => Framing::Empty,
        ([], false) => match content_length(&lengths) {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => return Err(bad(400, "invalid Content-Length")),
        },
        ([coding], true) if version == 1 && trim(coding).eq_ignore_ascii_case(b"chunked") => {
            Framing::Chunked
        }
        (_, true) => return Err(bad(501, "unsupported Transfer-Encoding (only chunked)")),
        (_, false) => {
            return Err(bad(
                400,
                "a request may not have both Content-Length and Transfer-Encoding",
            ));
        }
    };
    let head = RequestHead {
        method,
        target: target.to_string(),
        encoded,
        body,
        upgrade,
        close: close || (version == 0 && !keep_alive),
    };
    Ok(Some((head, len)))
}

/// A response head from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    /// The head's length in the bytes read (it is passed on as it came).
    pub(crate) len: usize,
    pub(crate) body: Framing,
    /// The engine closes the connection after it.
    pub(crate) close: bool,
}

/// Reads a response head from `bytes` (the answer to a `method` request): `Ok(None)` while
/// it is incomplete.
///
/// # Errors
/// A head that is malformed or too large, as a line for the log and the 502.
pub(crate) fn parse_response(
    bytes: &[u8],
    method: &Method,
) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            return Err("the engine's response head is too large".into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response from the engine: {e}")),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("malformed response from the engine".into());
    };
    let mut lengths = Vec::new();
    let mut chunked = None;
    let (mut close, mut keep_alive) = (false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides.
            chunked = tokens(h.value)
                .last()
                .map(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body = if *method == Method::HEAD
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Empty
    } else {
        match chunked {
            Some(true) => Framing::Chunked,
            Some(false) => Framing::UntilClose,
            None if lengths.is_empty() => Framing::UntilClose,
            None => match content_length(&lengths) {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => return Err("the engine sent an invalid Content-Length".into()),
            },
        }
    };
    Ok(Some(ResponseHead {
        status,
        len,
        body,
        close: close || (version == 0 && !keep_alive) || body == Framing::UntilClose,
    }))
}

/// The length every `Content-Length` field states, when they are digits and agree.
fn content_length(values: &[&[u8]]) -> Option<u64> {
    let mut agreed = None;
    for value in values {
        let value = trim(value);
        if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
        if agreed.is_some_and(|a| a != n) {
            return None;
        }
        agreed = Some(n);
    }
    agreed
}

/// A header value's comma-separated tokens, trimmed, empty ones left out.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Follows a chunked body as its bytes pass, to find where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: State,
    /// Bytes of the current size line (extensions included).
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk size's hex digits (`digits` so far).
    Size {
        value: u64,
        digits: u8,
    },
    /// After `;`: an extension, up to the CR.
    Extension {
        size: u64,
    },
    /// The size line's LF.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer field line, up to its CR.
    TrailerLine,
    TrailerLf,
    /// The CRLF that ends the body.
    EndLf,
    Done,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
        }
    }
}

impl Chunked {
    /// Whether the body has ended.
    pub(crate) fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `bytes` as the next part of the body: how many of them belong to it (all,
    /// unless it ends inside them), and how many of those are chunk data.
    ///
    /// # Errors
    /// A line that is not chunked coding (or one Go could read differently).
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<(usize, u64), String> {
        let mut i = 0;
        let mut data = 0u64;
        while i < bytes.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                data += take;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = self.step(b)?;
        }
        Ok((i, data))
    }

    fn step(&mut self, b: u8) -> Result<State, String> {
        let broken = |what: &str| Err(format!("malformed chunked body: {what}"));
        if matches!(self.state, State::Size { .. } | State::Extension { .. }) {
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return broken("chunk line too long");
            }
        }
        Ok(match self.state {
            State::Size { value, digits } => match (b as char).to_digit(16) {
                Some(d) if digits < 16 => State::Size {
                    value: (value << 4) | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return broken("chunk size too large"),
                None if digits == 0 => return broken("no chunk size"),
                None if b == b';' => State::Extension { size: value },
                None if b == b'\r' => State::SizeLf { size: value },
                None => return broken("unexpected byte in a chunk size"),
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return broken("bare LF in a chunk extension"),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Extension { size },
                _ => return broken("control byte in a chunk extension"),
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return broken("chunk size line without CRLF");
                }
                self.line = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            // `scan` passes data itself and stops at the end.
            State::Data(_) | State::Done => self.state,
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return broken("chunk data not followed by CRLF"),
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::TrailerStart | State::TrailerLine => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return broken("bare LF in a trailer"),
                _ => State::TrailerLine,
            },
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::EndLf if b == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => return broken("trailer line without CRLF"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<RequestHead, BadRequest> {
        parse_request(text.as_bytes()).map(|r| r.expect("complete").0)
    }

    #[test]
    fn a_plain_request_is_read_and_written_out_anew() {
        let text = "GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: Docker-Client\r\n\r\nNEXT";
        let (head, len) = parse_request(text.as_bytes()).unwrap().unwrap();
        assert_eq!(&text[len..], "NEXT");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target, "/v1.41/containers/json?all=1");
        assert_eq!(head.body, Framing::Empty);
        assert!(!head.close && !head.upgrade);
        assert_eq!(
            String::from_utf8(head.encoded).unwrap(),
            "GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: Docker-Client\r\n\r\n"
        );
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        assert!(
            parse_request(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunks() {
        let head =
            request("POST /build HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(head.body, Framing::Length(12));
        let head = request(
            "PUT /containers/c/archive HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.body, Framing::Chunked);
        let head = request("POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(head.body, Framing::Empty);
    }

    #[test]
    fn requests_two_parsers_could_read_differently_are_refused() {
        let cases = [
            "POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://evil/containers/json HTTP/1.1\r\n\r\n",
            "CONNECT docker:2375 HTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        ];
        for case in cases {
            let refused = request(case).unwrap_err();
            assert!(
                [400, 501].contains(&refused.status),
                "{case:?}: {refused:?}"
            );
        }
        // Identical repeated lengths are one length (Go reads them so too).
        let head =
            request("POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(head.body, Framing::Length(5));
    }

    #[test]
    fn a_head_too_large_is_refused_with_431() {
        let mut text = String::from("GET /x HTTP/1.1\r\n");
        for i in 0..200 {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(request(&text).unwrap_err().status, 431);
        let long = format!("GET /x HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse_request(long.as_bytes()).unwrap_err().status, 431);
    }

    #[test]
    fn connection_close_upgrade_and_http_1_0_are_noticed() {
        let head =
            request("POST /exec/1/start HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
                .unwrap();
        assert!(head.upgrade && !head.close);
        assert!(
            request("GET /x HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(request("GET /x HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(
            !request("GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .close
        );
    }

    #[test]
    fn response_bodies_follow_the_method_status_and_headers() {
        let get = Method::GET;
        let read =
            |text: &str, method: &Method| parse_response(text.as_bytes(), method).unwrap().unwrap();
        let r = read("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nOK\r\n", &get);
        assert_eq!(
            (r.status, r.body, r.close),
            (200, Framing::Length(4), false)
        );
        assert_eq!(r.len, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n".len());
        let r = read(
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(r.body, Framing::Empty);
        let r = read(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
        );
        assert_eq!(r.body, Framing::Chunked);
        let r = read("HTTP/1.1 204 No Content\r\n\r\n", &get);
        assert_eq!(r.body, Framing::Empty);
        let r = read(
            "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
            &get,
        );
        assert_eq!((r.status, r.body), (101, Framing::Empty));
        // dockerd's hijacked streams of old: no length, read until the engine closes.
        let r = read(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
            &get,
        );
        assert_eq!((r.body, r.close), (Framing::UntilClose, true));
        let r = read(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            &get,
        );
        assert!(r.close);
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n", &get)
                .unwrap()
                .is_none()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &get).is_err());
        assert!(parse_response(b"nonsense\r\n\r\n", &get).is_err());
    }

    /// Scans `body` split at every position in two parts, and in one.
    fn scan_all(body: &[u8]) -> Result<(usize, u64), String> {
        let mut whole = Chunked::default();
        let (used, data) = whole.scan(body)?;
        assert!(
            whole.done(),
            "{:?} did not end",
            String::from_utf8_lossy(body)
        );
        for split in 0..body.len() {
            let mut parts = Chunked::default();
            let (a, da) = parts.scan(&body[..split])?;
            assert_eq!(a, split);
            let (b, db) = parts.scan(&body[split..])?;
            assert_eq!((a + b, da + db), (used, data), "split at {split}");
            assert!(parts.done());
        }
        Ok((used, data))
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n10;name=value\r\n0123456789abcdef\r\n0\r\n\r\nNEXT";
        assert_eq!(
            scan_all(&body[..body.len() - 4]).unwrap(),
            (body.len() - 4, 21)
        );
        let mut c = Chunked::default();
        assert_eq!(c.scan(body).unwrap(), (body.len() - 4, 21));
        assert!(c.done());
        let trailers = b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        assert_eq!(scan_all(trailers).unwrap(), (trailers.len(), 3));
        let empty = b"0\r\n\r\n";
        assert_eq!(scan_all(empty).unwrap(), (5, 0));
    }

    #[test]
    fn chunk_lines_go_could_read_differently_are_refused() {
        let cases: [&[u8]; 9] = [
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
        ];
        for case in cases {
            let mut c = Chunked::default();
            assert!(c.scan(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        let mut c = Chunked::default();
        let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(c.scan(long.as_bytes()).is_err());
        let mut c = Chunked::default();
        assert!(c.scan(b"0\r\nX: 1\n\r\n").is_err());
    }

    #[tokio::test]
    async fn an_inbound_buffer_grows_when_reads_fill_it_and_keeps_what_is_unread() {
        let text: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut inbound = Inbound::new(&text[..]);
        let mut seen = Vec::new();
        loop {
            let n = inbound.fill().await.unwrap();
            if n == 0 {
                break;
            }
            // Consume half of what is held each time: the rest must survive the next read.
            let half = inbound.data().len().div_ceil(2);
            seen.extend_from_slice(&inbound.data()[..half]);
            inbound.consume(half);
        }
        seen.extend_from_slice(inbound.data());
        assert_eq!(seen, text);
        assert!(inbound.buf.len() > FIRST_BUF, "the buffer never grew");
        assert!(inbound.buf.len() <= MAX_BUF);
    }
}
