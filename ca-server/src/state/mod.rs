//! The state directory: CA certificates and encrypted keys, the embedded database, the
//! admin bundle, and where the running server listens.
//!
//! ```text
//! DIR/ca.pem                  root certificate (what dockerd and clients trust)
//! DIR/root-key.pem            root key, encrypted PKCS#8, 0600
//! DIR/root-keys/<id>.pem      keys of roots made by `ca rotate-root` (see [`keys`])
//! DIR/intermediate.pem        the first intermediate (the store keeps every intermediate
//!                             since, read from here once at the first `serve`)
//! DIR/intermediate-key.pem    intermediate key, encrypted PKCS#8, 0600
//! DIR/cluster.toml            cluster name, key type, whether keys are encrypted (written last)
//! DIR/store.db                embedded database (when no --database is given), with its
//!                             -wal and -shm files and store.db.reserve (`serve --store-reserve`)
//! DIR/admin/{ca,cert,key}.pem admin client bundle for the admin subcommands
//! DIR/server.addr             address the running server listens on (for admin commands)
//! DIR/server.toml             listen and advertised addresses, kept after it stops ([`address`])
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::fs::{self as files, FileError, PRIVATE, PUBLIC};
use dtca_pki::authority::Authority;
use dtca_pki::authority::hierarchy::{self, Lifetimes};
use dtca_pki::identity::{Identity, Role};
use dtca_pki::inspect;
use dtca_pki::key::{KeyError, KeyType, PrivateKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

mod address;
pub mod keys;

pub use address::ServerRecord;

use crate::metrics::Metrics;
use crate::registrar::{Registrar, Rules};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// Lifetime of the admin bundle made at `init` (capped at the intermediate's expiry).
pub const ADMIN_BUNDLE_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Where the CA keeps its files.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// What `cluster.toml` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Cluster name in every identity.
    pub cluster: String,
    /// Algorithm of the CA keys.
    pub key_type: KeyType,
    /// Whether the CA keys are encrypted with a passphrase.
    pub encrypted: bool,
    /// When `init` ran (RFC 3339).
    pub created: String,
    /// Lifetime of roots, seconds (`init --root-ttl`; absent: the default, 10 years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_ttl_secs: Option<u64>,
    /// Lifetime of intermediates, seconds (`init --intermediate-ttl`; absent: 1 year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_ttl_secs: Option<u64>,
}

impl ClusterFile {
    /// The lifetimes of new CA certificates.
    pub fn lifetimes(&self) -> Lifetimes {
        let default = Lifetimes::default();
        Lifetimes {
            root: self.root_ttl_secs.map_or(default.root, Duration::from_secs),
            intermediate: self
                .intermediate_ttl_secs
                .map_or(default.intermediate, Duration::from_secs),
        }
    }
}

pub use crate::lifecycle::keys::Passphrase;

/// What `init` made.
#[derive(Debug)]
pub struct InitReport {
    /// The cluster name.
    pub cluster: String,
    /// SHA-256 digest of the root, as in tokens.
    pub root_digest: String,
    /// Root expiry.
    pub root_not_after: OffsetDateTime,
    /// Intermediate expiry.
    pub intermediate_not_after: OffsetDateTime,
    /// Where the admin bundle is.
    pub admin_dir: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Root certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    fn root_key(&self) -> PathBuf {
        self.root.join("root-key.pem")
    }

    pub(crate) fn intermediate_pem(&self) -> PathBuf {
        self.root.join("intermediate.pem")
    }

    pub(crate) fn intermediate_key(&self) -> PathBuf {
        self.root.join("intermediate-key.pem")
    }

    fn cluster_file(&self) -> PathBuf {
        self.root.join("cluster.toml")
    }

    /// The embedded database.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store.db")
    }

    /// The admin bundle made by `init`.
    pub fn admin_dir(&self) -> PathBuf {
        self.root.join("admin")
    }

    /// Where `serve` records its address for the admin commands.
    pub fn server_addr_file(&self) -> PathBuf {
        self.root.join("server.addr")
    }

    /// Whether `init` completed here.
    pub fn is_initialized(&self) -> bool {
        self.cluster_file().exists()
    }

    /// Reads `cluster.toml`.
    ///
    /// # Errors
    /// [`StateError::NotInitialized`] when absent, [`StateError::Invalid`] when unreadable.
    pub fn cluster(&self) -> Result<ClusterFile, StateError> {
        if !self.is_initialized() {
            return Err(StateError::NotInitialized(self.root.clone()));
        }
        let text = files::read_to_string(&self.cluster_file())?;
        toml::from_str(&text)
            .map_err(|e| StateError::Invalid(format!("{}: {e}", self.cluster_file().display())))
    }

    /// Records the address the server listens on (wildcards replaced by loopback).
    ///
    /// # Errors
    /// [`StateError::Io`] when the file cannot be written.
    pub fn record_server_addr(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, StateError> {
        let connect = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
            }
            ip if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        files::write_atomic(
            &self.server_addr_file(),
            format!("{connect}\n").as_bytes(),
            PUBLIC,
        )?;
        Ok(connect)
    }

    /// Removes the recorded address when it is still `recorded` (a server stopping), so
    /// admin commands do not go on trying an address nothing listens on.
    pub fn forget_server_addr(&self, recorded: std::net::SocketAddr) {
        if self.server_addr() == Some(recorded.to_string()) {
            let _ = std::fs::remove_file(self.server_addr_file());
        }
    }

    /// The recorded server address, if any.
    pub fn server_addr(&self) -> Option<String> {
        std::fs::read_to_string(self.server_addr_file())
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Creates a new CA here: root, intermediate, encrypted keys, database, admin bundle.
    ///
    /// # Errors
    /// [`StateError::AlreadyInitialized`] when a CA exists; I/O, signing or store errors.
    pub async fn init(
        &self,
        cluster: &str,
        key_type: KeyType,
        passphrase: &Passphrase,
        now: OffsetDateTime,
    ) -> Result<InitReport, StateError> {
        self.init_with(cluster, key_type, Lifetimes::default(), passphrase, now)
            .await
    }

    /// [`StateDir::init`] with CA lifetimes of one's choice (`--root-ttl`,
    /// `--intermediate-ttl`).
    ///
    /// # Errors
    /// As [`StateDir::init`]; [`StateError::Invalid`] for lifetimes that do not make a CA
    /// that can renew itself.
    pub async fn init_with(
        &self,
        cluster: &str,
        key_type: KeyType,
        lifetimes: Lifetimes,
        passphrase: &Passphrase,
        now: OffsetDateTime,
    ) -> Result<InitReport, StateError> {
        if self.is_initialized() || self.ca_pem().exists() {
            return Err(StateError::AlreadyInitialized(self.root.clone()));
        }
        lifetimes.check().map_err(StateError::Invalid)?;
        files::ensure_dir(&self.root, 0o700)?;
        let h = hierarchy::create_with(cluster, key_type, now, lifetimes)
            .map_err(|e| StateError::Invalid(e.to_string()))?;
        let (root_key, intermediate_key) = match passphrase {
            Passphrase::Secret(secret) => (
                h.root_key.to_encrypted_pem(secret)?,
                h.intermediate_key.to_encrypted_pem(secret)?,
            ),
            Passphrase::InsecureNone => (h.root_key.to_pem(), h.intermediate_key.to_pem()),
        };
        files::write_atomic(&self.root_key(), root_key.as_bytes(), PRIVATE)?;
        files::write_atomic(
            &self.intermediate_key(),
            intermediate_key.as_bytes(),
            PRIVATE,
        )?;
        files::write_atomic(
            &self.intermediate_pem(),
            inspect::certs_to_pem([h.intermediate_der.as_slice()]).as_bytes(),
            PUBLIC,
        )?;
        files::write_atomic(
            &self.ca_pem(),
            inspect::certs_to_pem([h.root_der.as_slice()]).as_bytes(),
            PUBLIC,
        )?;

        let authority = Authority::new(
            cluster,
            h.root_der.clone(),
            h.intermediate_der.clone(),
            h.intermediate_key,
        )
        .map_err(|e| StateError::Invalid(e.to_string()))?;
        let report_root = inspect::CertInfo::from_der(&h.root_der)
            .map_err(|e| StateError::Invalid(e.to_string()))?;
        let intermediate_not_after = authority.intermediate_not_after();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&self.store_path()).map_err(|e| StateError::Store(e.to_string()))?,
        );
        let registrar = Registrar::new(
            authority,
            store,
            Rules::default(),
            Arc::new(Metrics::default()),
        );
        let identity = Identity::new(cluster, Role::Admin, "admin")
            .map_err(|e| StateError::Invalid(e.to_string()))?;
        let (issued, key) = registrar
            .issue_local(identity, vec![], vec![], ADMIN_BUNDLE_LIFETIME, now)
            .await
            .map_err(|e| StateError::Store(e.to_string()))?;
        let admin = Bundle {
            roots: vec![h.root_der.clone()],
            chain: [vec![issued.leaf_der], issued.chain].concat(),
            key,
        };
        files::ensure_dir(&self.admin_dir(), 0o700)?;
        admin
            .save(&self.admin_dir(), Layout::CLIENT)
            .map_err(|e| StateError::Invalid(e.to_string()))?;

        let record = ClusterFile {
            cluster: cluster.to_string(),
            key_type,
            encrypted: matches!(passphrase, Passphrase::Secret(_)),
            created: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            root_ttl_secs: Some(lifetimes.root.as_secs()),
            intermediate_ttl_secs: Some(lifetimes.intermediate.as_secs()),
        };
        let text = toml::to_string(&record).map_err(|e| StateError::Invalid(e.to_string()))?;
        files::write_atomic(&self.cluster_file(), text.as_bytes(), PUBLIC)?;
        Ok(InitReport {
            cluster: cluster.to_string(),
            root_digest: dtca_pki::token::RootDigest::of(&h.root_der).to_string(),
            root_not_after: report_root.not_after,
            intermediate_not_after,
            admin_dir: self.admin_dir(),
        })
    }

    /// Makes the state directory, its admin bundle and the embedded store its owner's
    /// alone (0700 directories, 0600 store files), tightening what an earlier version or a
    /// hand-made directory left open. Returns what it tightened, for the log.
    ///
    /// # Errors
    /// [`StateError::Io`] when a permission cannot be changed (another user's directory).
    pub fn secure(&self) -> Result<Vec<String>, StateError> {
        let mut tightened = Vec::new();
        for dir in [self.root.clone(), self.admin_dir()] {
            if dir.is_dir()
                && let Some(mode) = files::ensure_private_dir(&dir)?
            {
                tightened.push(format!("{} from {mode:04o} to 0700", dir.display()));
            }
        }
        let store = self.store_path();
        for path in [
            store.clone(),
            store.with_extension("db-wal"),
            store.with_extension("db-shm"),
        ] {
            if let Some(mode) = files::make_private(&path)? {
                tightened.push(format!("{} from {mode:04o} to 0600", path.display()));
            }
        }
        Ok(tightened)
    }

    /// Loads the signing authority, decrypting the intermediate key.
    ///
    /// # Errors
    /// [`StateError::NotInitialized`], [`StateError::PassphraseRequired`],
    /// [`StateError::WrongPassphrase`], or [`StateError::Invalid`] when files do not fit.
    pub fn load_authority(
        &self,
        passphrase: &Passphrase,
    ) -> Result<(Authority, ClusterFile), StateError> {
        let cluster = self.cluster()?;
        let root = read_cert(&self.ca_pem())?;
        let intermediate = read_cert(&self.intermediate_pem())?;
        let key_path = self.intermediate_key();
        let key_text = Zeroizing::new(files::read_to_string(&key_path)?);
        // Which file a key problem is about: a truncated key is not a wrong passphrase.
        let named = |e: KeyError| match e {
            KeyError::WrongPassphrase => StateError::WrongPassphrase,
            other => StateError::Invalid(format!("{}: {other}", key_path.display())),
        };
        let key = match (cluster.encrypted, passphrase) {
            (true, Passphrase::Secret(secret)) => {
                PrivateKey::from_encrypted_pem(&key_text, secret).map_err(named)?
            }
            (true, Passphrase::InsecureNone) => return Err(StateError::PassphraseRequired),
            (false, Passphrase::InsecureNone) => PrivateKey::from_pem(&key_text).map_err(named)?,
            (false, Passphrase::Secret(_)) => {
                return Err(StateError::Invalid(
                    "the CA keys were created without a passphrase; start with --insecure-no-passphrase".into(),
                ));
            }
        };
        let authority = Authority::new(&cluster.cluster, root, intermediate, key)
            .map_err(|e| StateError::Invalid(e.to_string()))?;
        Ok((authority, cluster))
    }
}

pub(crate) fn read_cert(path: &Path) -> Result<Vec<u8>, StateError> {
    let text = files::read_to_string(path)?;
    inspect::certs_from_pem(&text)
        .map_err(|e| StateError::Invalid(format!("{}: {e}", path.display())))?
        .into_iter()
        .next()
        .ok_or_else(|| StateError::Invalid(format!("{} holds no certificate", path.display())))
}

/// Why the state directory could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{} already holds a CA; refusing to overwrite it (use another --state-dir)", .0.display())]
    AlreadyInitialized(PathBuf),
    #[error("{} holds no CA: run `ca-server init --state-dir {}` first", .0.display(), .0.display())]
    NotInitialized(PathBuf),
    #[error(
        "the CA keys are encrypted: give the passphrase with --passphrase-file or DTCA_PASSPHRASE"
    )]
    PassphraseRequired,
    #[error("wrong passphrase: it does not decrypt the CA key")]
    WrongPassphrase,
    #[error(transparent)]
    Io(#[from] FileError),
    #[error("invalid CA state: {0}")]
    Invalid(String),
    #[error("database: {0}")]
    Store(String),
}

impl From<KeyError> for StateError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::WrongPassphrase => StateError::WrongPassphrase,
            other => StateError::Invalid(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Passphrase {
        Passphrase::Secret(Zeroizing::new(s.as_bytes().to_vec()))
    }

    #[tokio::test]
    async fn init_then_load_with_the_right_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("ca"));
        let report = state
            .init(
                "prod",
                KeyType::P256,
                &secret("pw"),
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        assert_eq!(report.cluster, "prod");
        let (authority, cluster) = state.load_authority(&secret("pw")).unwrap();
        assert_eq!(authority.cluster(), "prod");
        assert!(cluster.encrypted);
        use std::os::unix::fs::PermissionsExt;
        for key in ["root-key.pem", "intermediate-key.pem", "admin/key.pem"] {
            let mode = std::fs::metadata(dir.path().join("ca").join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let key_text = std::fs::read_to_string(dir.path().join("ca/intermediate-key.pem")).unwrap();
        assert!(key_text.contains("ENCRYPTED PRIVATE KEY"));
        Bundle::load(&state.admin_dir(), Layout::CLIENT).unwrap();
    }

    #[tokio::test]
    async fn refuses_wrong_or_missing_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state
            .init(
                "c",
                KeyType::Ed25519,
                &secret("pw"),
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        assert!(matches!(
            state.load_authority(&secret("nope")),
            Err(StateError::WrongPassphrase)
        ));
        assert!(matches!(
            state.load_authority(&Passphrase::InsecureNone),
            Err(StateError::PassphraseRequired)
        ));
    }

    #[tokio::test]
    async fn refuses_to_overwrite_an_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state
            .init("c", KeyType::P256, &secret("pw"), OffsetDateTime::now_utc())
            .await
            .unwrap();
        let before = std::fs::read(state.ca_pem()).unwrap();
        assert!(matches!(
            state
                .init("c", KeyType::P256, &secret("pw"), OffsetDateTime::now_utc())
                .await,
            Err(StateError::AlreadyInitialized(_))
        ));
        assert_eq!(std::fs::read(state.ca_pem()).unwrap(), before);
    }

    /// Regression: a truncated key file said "not a PEM private key of the expected
    /// kind" without saying which file.
    #[tokio::test]
    async fn a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state
            .init("c", KeyType::P256, &secret("pw"), OffsetDateTime::now_utc())
            .await
            .unwrap();
        let key = dir.path().join("intermediate-key.pem");
        let text = std::fs::read_to_string(&key).unwrap();
        std::fs::write(&key, &text[..text.len() / 2]).unwrap();
        let Err(StateError::Invalid(why)) = state.load_authority(&secret("pw")) else {
            panic!("a truncated key was loaded");
        };
        assert!(why.contains(&key.display().to_string()), "{why}");
    }

    #[tokio::test]
    async fn insecure_init_stores_keys_in_clear_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state
            .init(
                "c",
                KeyType::P256,
                &Passphrase::InsecureNone,
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        assert!(!state.cluster().unwrap().encrypted);
        state.load_authority(&Passphrase::InsecureNone).unwrap();
        assert!(matches!(
            state.load_authority(&secret("x")),
            Err(StateError::Invalid(_))
        ));
    }
}
