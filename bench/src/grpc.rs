//! A lean gRPC client for the load generator: the same requests on the wire as tonic's
//! (HTTP/2 over TLS, `application/grpc`, length-prefixed protobuf, `grpc-status` in the
//! trailers), sent straight through hyper's HTTP/2 connection with the protobuf encoded
//! beforehand.
//!
//! The load generator shares the machine's cores with the server it measures; tonic's
//! client adds a buffer task and a codec per call that cost about as much CPU as the
//! server's TLS and HTTP/2 handling, and every microsecond spent here is taken from the
//! server. The TLS configuration (root pinning or mutual TLS) is `dtca_common::tls`'s,
//! exactly what `ca-client` uses.

use std::sync::Arc;

use anyhow::Context;
use dtca_common::tls::ServerAddr;
use dtca_proto::v1;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::csrs::{Enrollments, RAN_OUT};
use crate::load::Worker;

/// One HTTP/2 connection to the CA; clones share it.
#[derive(Debug, Clone)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    /// Dials `addr` with `config` (TCP_NODELAY, TLS, h2).
    ///
    /// # Errors
    /// When the connection or the handshake fails.
    pub async fn open(addr: &str, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let server = ServerAddr::parse(addr)?;
        let tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(server.host.clone())?;
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Connection {
            sender,
            authority: addr.to_string(),
        })
    }

    /// Sends one unary call (`body` is a length-prefixed message) and waits for the
    /// complete answer; returns the reply's length-prefixed message.
    ///
    /// # Errors
    /// A description of the transport failure or the non-OK gRPC status.
    pub async fn unary(&mut self, path: &str, body: Bytes) -> Result<Bytes, String> {
        let request = http::Request::post(format!("https://{}{path}", self.authority))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("missing")
            .to_string();
        if status != "0" {
            let message = collected
                .trailers()
                .and_then(|t| t.get("grpc-message"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            return Err(format!("grpc-status {status}: {message}"));
        }
        Ok(collected.to_bytes())
    }
}

/// A protobuf message as a gRPC request body: uncompressed flag, length, message.
pub fn frame(message: &impl Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut out = Vec::with_capacity(encoded.len() + 5);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&encoded);
    Bytes::from(out)
}

/// Where a worker's request bodies come from.
#[derive(Debug, Clone)]
pub enum Bodies {
    /// Framed bodies, encoded beforehand and cycled through.
    Cycled(Arc<Vec<Bytes>>),
    /// `Enroll` with `token`, a distinct identity each time (framed when sent: the CSRs
    /// are made beforehand, the framing is a copy).
    Enroll {
        /// The multi-use node token.
        token: Arc<str>,
        /// The identities, shared by every worker sending to this server.
        enrollments: Enrollments,
    },
}

/// Sends requests to one method, one at a time.
#[derive(Debug)]
pub struct UnaryWorker {
    /// The connection (shared with other workers).
    pub conn: Connection,
    /// `/dtca.v1.Ca/Enroll` or `/dtca.v1.Ca/Renew`.
    pub path: &'static str,
    /// The request bodies.
    pub bodies: Bodies,
}

impl Worker for UnaryWorker {
    async fn call(&mut self, i: usize) -> Result<(), String> {
        let body = match &self.bodies {
            Bodies::Cycled(bodies) => bodies[i % bodies.len()].clone(),
            Bodies::Enroll { token, enrollments } => {
                let (name, der) = enrollments.take().ok_or(RAN_OUT)?;
                frame(&v1::EnrollRequest {
                    token: token.to_string(),
                    csr_der: der.to_vec(),
                    name: name.to_string(),
                })
            }
        };
        let reply = self.conn.unary(self.path, body).await?;
        // A certificate, an intermediate and a root: well over a kilobyte.
        if reply.len() < 256 {
            return Err(format!("short reply ({} bytes)", reply.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_message_like_grpc() {
        let m = v1::RenewRequest {
            csr_der: vec![1, 2, 3],
        };
        let f = frame(&m);
        assert_eq!(f[0], 0);
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 5
        );
        assert_eq!(v1::RenewRequest::decode(&f[5..]).ok(), Some(m));
    }
}
