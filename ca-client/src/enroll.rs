//! `ca-client enroll` and `ca-client renew`, as library entry points.

use std::path::{Path, PathBuf};

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::identity::Role;
use dtca_pki::inspect::CertInfo;
use dtca_pki::key::KeyType;
use dtca_pki::token::JoinToken;
use dtca_proto::v1::ca_client::CaClient;
use time::OffsetDateTime;
use tonic::transport::Channel;

use crate::ca::{self, Allowance, Trusted};
use crate::error::ClientError;
use crate::sans::{Sans, Wanted};
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
    /// Detected names left out because the token does not allow them.
    pub left_out: Vec<String>,
}

/// An open first contact with the CA for a token: the root checked against the token,
/// and what the token allows (nothing spent yet).
#[derive(Debug)]
pub struct Contact {
    /// The CA's address.
    pub addr: ServerAddr,
    /// The token.
    pub token: JoinToken,
    /// The connection, pinned by the token's root digest.
    pub client: CaClient<Channel>,
    /// What the CA said about itself.
    pub trusted: Trusted,
    /// What the token allows; `None` from a CA too old to say.
    pub allowance: Option<Allowance>,
}

impl Contact {
    /// Parses the token, connects (checking the CA's root against it) and asks what the
    /// token allows. Spends nothing.
    ///
    /// # Errors
    /// [`ClientError`]: a malformed token, an unreachable or mis-rooted CA, or the CA's
    /// refusal of the token.
    pub async fn open(server: &str, token: &str) -> Result<Contact, ClientError> {
        let token: JoinToken = token.parse()?;
        let addr = ServerAddr::parse(server)?;
        let (mut client, trusted) = ca::first_contact(&addr, token.root).await?;
        let allowance = ca::token_allowance(&mut client, &token).await?;
        Ok(Contact {
            addr,
            token,
            client,
            trusted,
            allowance,
        })
    }
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
    let wanted = Wanted::collect(&opts.extra_sans, opts.default_sans)?;
    let contact = Contact::open(&opts.server, &opts.token).await?;
    obtain_with(opts, &wanted, contact).await
}

/// Enrolls over an open [`Contact`] with the names `wanted`, fitted to what the token
/// allows, without writing the credentials. The credential directory must be writable
/// first (a certificate that could not be stored would still spend a token use); when
/// the enrollment fails, a directory made for it is removed again.
///
/// # Errors
/// [`ClientError`]; [`Invalid::SanOutsideToken`] and [`Invalid::NoNameInsideToken`]
/// before anything is spent.
pub async fn obtain_with(
    opts: &EnrollOptions,
    wanted: &Wanted,
    contact: Contact,
) -> Result<Obtained, ClientError> {
    let Contact {
        addr,
        token,
        mut client,
        trusted,
        allowance,
    } = contact;
    let (sans, left_out) = match &allowance {
        Some(a) if a.role == Role::Node => {
            let fitted = wanted.fit(&a.policy)?;
            (fitted.sans, fitted.left_out)
        }
        _ => (wanted.all(), Vec::new()),
    };
    if !left_out.is_empty() {
        tracing::warn!(
            left_out = %left_out.join(" "),
            "names of this host that the token does not allow are left out"
        );
    }
    let made = MadeDirs::ensure(&opts.out)?;
    let bundle = ca::enroll(
        &mut client,
        &trusted,
        &token,
        &opts.name,
        &sans,
        opts.key_type,
    )
    .await;
    let bundle = match bundle {
        Ok(b) => b,
        Err(e) => {
            made.remove_if_empty();
            return Err(e);
        }
    };
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
        token_policy: allowance.filter(|a| a.role == Role::Node).map(|a| a.policy),
        restart_without_slot: None,
        access: None,
    };
    Ok(Obtained {
        bundle,
        info,
        state,
        left_out,
    })
}

/// The directories [`MadeDirs::ensure`] created for a credential directory, so that a
/// failed enrollment leaves none of them behind.
#[derive(Debug)]
struct MadeDirs {
    /// Created, deepest first.
    made: Vec<PathBuf>,
}

impl MadeDirs {
    /// Makes `out` (0700) and proves files can be created in it.
    fn ensure(out: &Path) -> Result<MadeDirs, ClientError> {
        let mut made = Vec::new();
        let mut at = Some(out);
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            made.push(dir.to_path_buf());
            at = dir.parent();
        }
        let dirs = MadeDirs { made };
        let ready = private_out(out).and_then(|()| {
            dtca_common::fs::ensure_writable_dir(out, 0o700).map_err(ClientError::from)
        });
        if let Err(e) = ready {
            dirs.remove_if_empty();
            return Err(e);
        }
        Ok(dirs)
    }

    /// Removes what was made, deepest first, while it is empty.
    fn remove_if_empty(&self) {
        for dir in &self.made {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
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
        left_out: Vec::new(),
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
