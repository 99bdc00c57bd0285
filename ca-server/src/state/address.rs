//! Where the server listens and how clients reach it, recorded in the state dir:
//! `server.addr` (the address admin commands on this host connect to, while `serve`
//! runs) and `server.toml` (the listen and advertised addresses, kept after `serve`
//! stops, so commands can say where it last listened).

use std::net::SocketAddr;
use std::path::PathBuf;

use dtca_common::fs::{self as files, PUBLIC};
use serde::{Deserialize, Serialize};

use super::{StateDir, StateError};

/// What `serve` recorded of its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The address it listens on (as bound: a port 0 is the port it got).
    pub listen: String,
    /// The address clients use (`serve --advertise`), when given.
    pub advertise: Option<String>,
}

impl ServerRecord {
    /// The address to give clients: the advertised one, else the listen address, a
    /// wildcard one (0.0.0.0, ::) replaced by `host` (this host's name). The second
    /// value says when the wildcard was replaced.
    pub fn client_address(&self, host: &str) -> (String, bool) {
        if let Some(advertise) = &self.advertise {
            return (advertise.clone(), false);
        }
        match self.listen.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_unspecified() => (format!("{host}:{}", addr.port()), true),
            _ => (self.listen.clone(), false),
        }
    }
}

impl StateDir {
    /// `server.toml`.
    pub fn server_record_file(&self) -> PathBuf {
        self.root.join("server.toml")
    }

    /// Records the listen and advertised addresses (kept after `serve` stops).
    ///
    /// # Errors
    /// [`StateError::Io`] when the file cannot be written.
    pub fn record_server(&self, record: &ServerRecord) -> Result<(), StateError> {
        let text = toml::to_string(record)
            .map_err(|e| StateError::Invalid(format!("cannot record the server: {e}")))?;
        files::write_atomic(&self.server_record_file(), text.as_bytes(), PUBLIC)?;
        Ok(())
    }

    /// What the last `serve` here recorded, if anything.
    pub fn server_record(&self) -> Option<ServerRecord> {
        let text = std::fs::read_to_string(self.server_record_file()).ok()?;
        toml::from_str(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(listen: &str, advertise: Option<&str>) -> ServerRecord {
        ServerRecord {
            listen: listen.into(),
            advertise: advertise.map(Into::into),
        }
    }

    #[test]
    fn clients_get_the_advertised_address_else_the_listen_one() {
        let host = "ca-host";
        assert_eq!(
            record("0.0.0.0:8443", Some("ca.example.com:443")).client_address(host),
            ("ca.example.com:443".into(), false)
        );
        assert_eq!(
            record("10.0.0.5:8443", None).client_address(host),
            ("10.0.0.5:8443".into(), false)
        );
        assert_eq!(
            record("0.0.0.0:8443", None).client_address(host),
            ("ca-host:8443".into(), true)
        );
        assert_eq!(
            record("[::]:9443", None).client_address(host),
            ("ca-host:9443".into(), true)
        );
    }

    #[test]
    fn the_record_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        assert_eq!(state.server_record(), None);
        let r = record("127.0.0.1:8443", Some("ca.example.com:8443"));
        state.record_server(&r).unwrap();
        assert_eq!(state.server_record(), Some(r));
    }
}
