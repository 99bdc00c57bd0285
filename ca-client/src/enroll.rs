//! `ca-client enroll` and `ca-client renew`, as library entry points.

use std::path::{Path, PathBuf};

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::inspect::CertInfo;
use dtca_pki::key::KeyType;
use dtca_pki::token::JoinToken;
use time::OffsetDateTime;

use crate::ca;
use crate::error::ClientError;
use crate::sans::Sans;
use crate::state::ClientState;

/// What `enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// CA address, HOST:PORT.
    pub server: String,
    /// The join token.
    pub token: String,
    /// Identity name to ask for (ignored when the token fixes one).
    pub name: String,
    /// `--san` entries.
    pub extra_sans: Vec<String>,
    /// Include detected host names and addresses.
    pub default_sans: bool,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Credential directory.
    pub out: PathBuf,
}

/// A certificate obtained and written.
#[derive(Debug)]
pub struct Obtained {
    /// The credentials.
    pub bundle: Bundle,
    /// The leaf's fields.
    pub info: CertInfo,
    /// The updated state.
    pub state: ClientState,
}

/// Enrolls and writes `ca.pem`, `cert.pem`, `key.pem` and `client.toml` into `out`.
/// The token is parsed and the server's root checked against it before anything is sent.
///
/// # Errors
/// [`ClientError`] saying what failed; nothing is written then.
pub async fn enroll(opts: &EnrollOptions) -> Result<Obtained, ClientError> {
    let obtained = obtain(opts).await?;
    write(&opts.out, &obtained.bundle, &obtained.state)?;
    Ok(obtained)
}

/// Enrolls without writing anything (the docker switch writes elsewhere first).
///
/// # Errors
/// [`ClientError`].
pub async fn obtain(opts: &EnrollOptions) -> Result<Obtained, ClientError> {
    let token: JoinToken = opts.token.parse()?;
    let addr = ServerAddr::parse(&opts.server)?;
    let sans = Sans::collect(&opts.extra_sans, opts.default_sans)?;
    // A certificate that could not be stored would still spend a token use.
    private_out(&opts.out)?;
    dtca_common::fs::ensure_writable_dir(&opts.out, 0o700)?;
    let (mut client, trusted) = ca::first_contact(&addr, token.root).await?;
    let bundle = ca::enroll(
        &mut client,
        &trusted,
        &token,
        &opts.name,
        &sans,
        opts.key_type,
    )
    .await?;
    let info = bundle.leaf()?;
    let now = OffsetDateTime::now_utc();
    let state = ClientState {
        server: addr.to_string(),
        cluster: trusted.cluster,
        identity: info.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
        key_type: opts.key_type,
        enrolled_at: duration::timestamp(now),
        extra_sans: opts.extra_sans.clone(),
        default_sans: opts.default_sans,
        last_renewal: None,
        last_error: None,
        next_renewal: None,
        docker: None,
        failed_switch: None,
    };
    Ok(Obtained {
        bundle,
        info,
        state,
    })
}

/// Writes credentials and state into `out`.
///
/// # Errors
/// [`ClientError::File`] or [`ClientError::Bundle`] naming the path.
pub fn write(out: &Path, bundle: &Bundle, state: &ClientState) -> Result<(), ClientError> {
    bundle.save(out, Layout::CLIENT)?;
    state.save(out)
}

/// Renews the certificate in `out` with the current one: a new key, the same names, and
/// writes the result over the old pair.
///
/// # Errors
/// [`ClientError::NotEnrolled`] when `out` holds no enrollment; refusals from the CA
/// (expired, revoked); nothing is written then.
pub async fn renew(out: &Path, server: Option<&str>) -> Result<Obtained, ClientError> {
    let mut state = ClientState::load(out)?;
    private_out(out)?;
    let current = Bundle::load(out, Layout::CLIENT)?;
    let leaf = current.leaf()?;
    let sans = Sans {
        dns: leaf.dns_names.clone(),
        ips: leaf.ip_addresses.clone(),
    };
    let addr = ServerAddr::parse(server.unwrap_or(&state.server))?;
    let bundle = renew_with(&addr, &current, &sans, state.key_type).await?;
    let info = bundle.leaf()?;
    state.server = addr.to_string();
    state.last_renewal = Some(duration::timestamp(OffsetDateTime::now_utc()));
    state.last_error = None;
    write(out, &bundle, &state)?;
    Ok(Obtained {
        bundle,
        info,
        state,
    })
}

/// Makes the credential directory its owner's alone (0700): it holds the node's key, and
/// its state. An existing one open to others (made by hand, or by an earlier version) is
/// tightened, and the log says so.
///
/// # Errors
/// [`ClientError::File`] when its permissions cannot be changed.
pub fn private_out(out: &Path) -> Result<(), ClientError> {
    if let Some(mode) = dtca_common::fs::ensure_private_dir(out)? {
        tracing::warn!(dir = %out.display(), from = %format!("{mode:04o}"), "tightened the credential directory to 0700");
    }
    Ok(())
}

/// One renewal round trip, writing nothing.
///
/// # Errors
/// [`ClientError`].
pub async fn renew_with(
    addr: &ServerAddr,
    current: &Bundle,
    sans: &Sans,
    key_type: KeyType,
) -> Result<Bundle, ClientError> {
    let mut client = ca::authenticated(addr, current).await?;
    ca::renew(&mut client, current, sans, key_type).await
}
