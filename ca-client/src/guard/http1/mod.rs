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

mod chunked;
mod inbound;

use http::Method;

pub(crate) use chunked::Chunked;
pub(crate) use inbound::Inbound;

/// The largest head read (request or response), in bytes.
pub(crate) const MAX_HEAD: usize = 256 * 1024;
/// The most header fields in one head.
const MAX_HEADERS: usize = 128;

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
        ([coding], true)
            if version == 1 && coding.trim_ascii().eq_ignore_ascii_case(b"chunked") =>
        {
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
        let value = value.trim_ascii();
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
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
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
}
