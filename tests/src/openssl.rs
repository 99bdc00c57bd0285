//! Checks with the real openssl CLI.

use std::path::Path;
use std::process::Command;

/// `openssl verify -CAfile ca.pem -untrusted cert.pem cert.pem` in `dir`; the output.
pub fn verify(ca: &Path, cert: &Path) -> Result<String, String> {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg("-untrusted")
        .arg(cert)
        .arg(cert)
        .output()
        .map_err(|e| format!("run openssl: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `openssl x509 -noout -serial` of a PEM file: `serial=...`.
pub fn serial(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The serial of the certificate a TLS server at `addr` (`HOST:PORT`) presents, as
/// `openssl s_client` receives it and `openssl x509 -noout -serial` prints it (without
/// `serial=`); `None` when nothing was presented. No client certificate is offered:
/// the server's own certificate arrives before it asks for one.
pub fn served_serial(addr: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("serial=")
        .map(str::to_string)
}
