//! The peer: `cfssl serve` (Debian's `golang-cfssl`) with a P-256 CA made by
//! `cfssl gencert -initca`, on loopback, plain HTTP, no certificate database: its
//! `/api/v1/cfssl/sign` endpoint verifies the CSR's signature and signs, nothing more.
//! Driven over keep-alive HTTP/1.1 connections (hyper), one request in flight on each.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::csrs::Csr;
use crate::load::Worker;
use crate::proc::{Child, output, wait_until};

const SIGN_PATH: &str = "/api/v1/cfssl/sign";

/// A running `cfssl serve`.
#[derive(Debug)]
pub struct Cfssl {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `cfssl version`, first line.
    pub version: String,
}

impl Cfssl {
    /// Makes a P-256 CA in `dir` and starts `cfssl serve` on a free loopback port.
    ///
    /// # Errors
    /// When cfssl is not installed or does not come up.
    pub async fn start(dir: &Path) -> anyhow::Result<Cfssl> {
        std::fs::create_dir_all(dir)?;
        let version = output(Command::new("cfssl").arg("version"))
            .context("cfssl is not installed (apt-get install golang-cfssl)")?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let csr = dir.join("ca-csr.json");
        std::fs::write(
            &csr,
            r#"{"CN":"bench cfssl CA","key":{"algo":"ecdsa","size":256},"names":[{"O":"bench"}]}"#,
        )?;
        let made = output(Command::new("cfssl").args(["gencert", "-initca"]).arg(&csr))?;
        let made: serde_json::Value =
            serde_json::from_str(&made).context("cfssl gencert -initca output")?;
        let (Some(cert), Some(key)) = (made["cert"].as_str(), made["key"].as_str()) else {
            bail!("cfssl gencert -initca printed no cert or key");
        };
        std::fs::write(dir.join("ca.pem"), cert)?;
        std::fs::write(dir.join("ca-key.pem"), key)?;
        std::fs::write(
            dir.join("config.json"),
            r#"{"signing":{"default":{"expiry":"720h","usages":["digital signature","server auth","client auth"]}}}"#,
        )?;
        let port = free_port()?;
        let child = Child::spawn(
            "cfssl serve",
            Command::new("cfssl")
                .args(["serve", "-address", "127.0.0.1", "-port"])
                .arg(port.to_string())
                .arg("-ca")
                .arg(dir.join("ca.pem"))
                .arg("-ca-key")
                .arg(dir.join("ca-key.pem"))
                .arg("-config")
                .arg(dir.join("config.json")),
            &dir.join("cfssl.log"),
        )?;
        let addr = format!("127.0.0.1:{port}");
        let mut up = false;
        for _ in 0..150 {
            if TcpStream::connect(&addr).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut cfssl = Cfssl {
            child,
            addr,
            version,
        };
        if !up || !wait_until(Duration::from_secs(1), || cfssl.child.exited().is_none()).await {
            bail!("cfssl serve did not start: {}", cfssl.child.log_text());
        }
        Ok(cfssl)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// The JSON bodies of sign requests, one per CSR.
pub fn bodies(csrs: &[Csr]) -> Arc<Vec<Bytes>> {
    Arc::new(
        csrs.iter()
            .map(|c| Bytes::from(serde_json::json!({ "certificate_request": c.pem }).to_string()))
            .collect(),
    )
}

/// One keep-alive HTTP/1.1 connection sending sign requests.
#[derive(Debug)]
pub struct CfsslWorker {
    sender: SendRequest<Full<Bytes>>,
    bodies: Arc<Vec<Bytes>>,
    host: String,
}

impl CfsslWorker {
    /// Opens the connection.
    ///
    /// # Errors
    /// When cfssl does not accept it.
    pub async fn connect(addr: &str, bodies: Arc<Vec<Bytes>>) -> anyhow::Result<CfsslWorker> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(CfsslWorker {
            sender,
            bodies,
            host: addr.to_string(),
        })
    }

    /// Signs one CSR and returns the response body (for checking the setup).
    ///
    /// # Errors
    /// When cfssl refuses.
    pub async fn sign(&mut self, i: usize) -> Result<Bytes, String> {
        let body = self.bodies[i % self.bodies.len()].clone();
        let request = http::Request::post(SIGN_PATH)
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() || !contains(&body, b"\"success\":true") {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        Ok(body)
    }
}

impl Worker for CfsslWorker {
    async fn call(&mut self, i: usize) -> Result<(), String> {
        self.sign(i).await.map(|_| ())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
