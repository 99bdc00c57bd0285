//! Admin subcommands: they reach the running server over gRPC with the admin bundle.

use std::path::PathBuf;

use dtca_common::Reason;
use dtca_common::bundle::{Bundle, BundleError, Layout};
use dtca_common::reason;
use dtca_common::tls::{self, ServerAddr, Trust};
use dtca_pki::access::{Access, UnknownAccess};
use dtca_pki::duration;
use dtca_proto::v1::{self, admin_client::AdminClient};
use serde_json::json;
use time::OffsetDateTime;
use tonic::transport::Channel;

use super::settings::{self, FileConfig};
use super::{AdminArgs, AuditArgs, CertCommand, CliError, TokenCommand, TokenCreateArgs};
use crate::state::StateDir;

pub(super) async fn token(cmd: TokenCommand, file: &FileConfig) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create(args) => create_token(args, file).await,
        TokenCommand::List(admin) => {
            let mut client = connect(&admin, file).await?;
            let tokens = client
                .list_tokens(v1::ListTokensRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .tokens;
            if admin.wants_json(file) {
                let rows: Vec<_> = tokens.iter().map(token_json).collect();
                print_json(&json!(rows));
            } else {
                println!(
                    "{:<17} {:<9} {:<16} {:>9} {:<20} {:<8} {:<9}",
                    "ID", "ROLE", "NAME", "USES", "EXPIRES", "STATE", "ACCESS"
                );
                let now = OffsetDateTime::now_utc().unix_timestamp();
                for t in &tokens {
                    let state = if t.revoked {
                        "revoked"
                    } else if t.expires_unix <= now {
                        "expired"
                    } else if t.uses >= t.max_uses {
                        "used-up"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<17} {:<9} {:<16} {:>9} {:<20} {:<8} {:<9}",
                        t.id,
                        role_name(t.role),
                        if t.name.is_empty() { "-" } else { &t.name },
                        format!("{}/{}", t.uses, t.max_uses),
                        timestamp(t.expires_unix),
                        state,
                        access_shown(t.role, &t.access)
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id, admin } => {
            let mut client = connect(&admin, file).await?;
            client
                .revoke_token(v1::RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(status_error)?;
            println!("token {id} revoked");
            Ok(())
        }
    }
}

/// `--access` for a token of `role`: operators only (whatever the level), `full` or
/// `read-only`.
fn access_arg(role: v1::Role, text: Option<&str>) -> Result<Option<Access>, CliError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let access: Access = text
        .parse()
        .map_err(|e: UnknownAccess| CliError::new(Reason::Usage, format!("--access: {e}")))?;
    if role != v1::Role::Operator {
        return Err(CliError::new(
            Reason::AccessLevel,
            format!(
                "--access {access} is for operator tokens only: a {} certificate has no access level (leave --access out)",
                role.as_str_name()
                    .trim_start_matches("ROLE_")
                    .to_lowercase()
            ),
        ));
    }
    Ok(Some(access))
}

/// `--role` as the API names it.
fn role_arg(text: &str) -> Result<v1::Role, CliError> {
    match text {
        "node" => Ok(v1::Role::Node),
        "operator" => Ok(v1::Role::Operator),
        "admin" => Ok(v1::Role::Admin),
        other => Err(CliError::new(
            Reason::Usage,
            format!("--role {other:?}: use node, operator or admin"),
        )),
    }
}

async fn create_token(args: TokenCreateArgs, file: &FileConfig) -> Result<(), CliError> {
    let role = args.role.as_ref().or(file.role.as_ref()).ok_or_else(|| {
        CliError::new(Reason::Usage, "--role is required: node, operator or admin")
    })?;
    let role = role_arg(role)?;
    let or_file = |flag: &[String], file: &Option<Vec<String>>| {
        if flag.is_empty() {
            file.clone().unwrap_or_default()
        } else {
            flag.to_vec()
        }
    };
    let ttl = args.ttl.clone().or_else(|| file.ttl.clone());
    let cert_ttl = args.cert_ttl.clone().or_else(|| file.cert_ttl.clone());
    let uses = args.uses.or(file.uses);
    let access = access_arg(role, args.access.as_deref().or(file.access.as_deref()))?;
    let seconds = |flag: &str, text: &Option<String>| -> Result<i64, CliError> {
        match text {
            None => Ok(0),
            Some(t) => duration::parse(t)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .map_err(|e| CliError::new(Reason::Usage, format!("--{flag}: {e}"))),
        }
    };
    let request = v1::CreateTokenRequest {
        role: role.into(),
        ttl_seconds: seconds("ttl", &ttl)?,
        uses: uses.unwrap_or(0),
        name: args
            .name
            .clone()
            .or_else(|| file.name.clone())
            .unwrap_or_default(),
        allow_dns: or_file(&args.allow_dns, &file.allow_dns),
        allow_ip: or_file(&args.allow_ip, &file.allow_ip),
        cert_ttl_seconds: seconds("cert-ttl", &cert_ttl)?,
        replace: args.replace,
        access: access.map(|a| a.as_str().to_string()).unwrap_or_default(),
    };
    if uses == Some(0) {
        return Err(CliError::new(Reason::Usage, "--uses must be at least 1"));
    }
    let mut client = connect(&args.admin, file).await?;
    let response = client
        .create_token(request)
        .await
        .map_err(status_error)?
        .into_inner();
    if args.admin.wants_json(file) {
        let mut value = response
            .info
            .as_ref()
            .map(token_json)
            .unwrap_or_else(|| json!({}));
        value["token"] = json!(response.token);
        print_json(&value);
    } else {
        // The token alone on stdout, so `TOKEN=$(ca-server token create ...)` works;
        // the details go to stderr.
        println!("{}", response.token);
        if let Some(info) = &response.info {
            eprintln!(
                "token {} for role {}{}: {} use(s), expires {}{}",
                info.id,
                role_name(info.role),
                if info.access.is_empty() || info.access == "full" {
                    String::new()
                } else {
                    format!(" ({} access)", info.access)
                },
                info.max_uses,
                timestamp(info.expires_unix),
                if info.replace {
                    format!(
                        "; replaces {}: enrolling revokes every certificate of that identity",
                        info.name
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

pub(super) async fn cert(cmd: CertCommand, file: &FileConfig) -> Result<(), CliError> {
    match cmd {
        CertCommand::List {
            expiring_within,
            all,
            limit,
            admin,
        } => {
            let expiring_within = expiring_within.or_else(|| file.expiring_within.clone());
            let (all, limit) = (all || file.all == Some(true), limit.or(file.limit));
            let within = match &expiring_within {
                Some(t) => i64::try_from(
                    duration::parse(t)
                        .map_err(|e| {
                            CliError::new(Reason::Usage, format!("--expiring-within: {e}"))
                        })?
                        .as_secs(),
                )
                .unwrap_or(i64::MAX),
                None => 0,
            };
            let mut client = connect(&admin, file).await?;
            let certs = client
                .list_certificates(v1::ListCertificatesRequest {
                    expiring_within_seconds: within,
                    include_inactive: all,
                    limit: limit.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .certificates;
            if admin.wants_json(file) {
                let rows: Vec<_> = certs.iter().map(cert_json).collect();
                print_json(&json!(rows));
            } else {
                let now = OffsetDateTime::now_utc().unix_timestamp();
                println!(
                    "{:<34} {:<9} {:<20} {:<20} {:<8} {:>9} {:<9}",
                    "SERIAL", "ROLE", "NAME", "NOT AFTER", "STATUS", "LEFT", "ACCESS"
                );
                for c in &certs {
                    println!(
                        "{:<34} {:<9} {:<20} {:<20} {:<8} {:>9} {:<9}",
                        c.serial,
                        role_name(c.role),
                        c.name,
                        timestamp(c.not_after_unix),
                        if c.forked { "FORKED" } else { &c.status },
                        duration::human(c.not_after_unix - now),
                        access_shown(c.role, &c.access)
                    );
                }
                if certs.iter().any(|c| c.forked) {
                    eprintln!(
                        "FORKED: the identity has more than one valid certificate; the name belongs to another one (cert show, audit): revoke the one not in use"
                    );
                }
                if certs.is_empty() {
                    eprintln!("no certificates match");
                }
            }
            Ok(())
        }
        CertCommand::Show { serial, admin } => {
            let mut client = connect(&admin, file).await?;
            let d = client
                .show_certificate(v1::ShowCertificateRequest { serial })
                .await
                .map_err(status_error)?
                .into_inner();
            let s = d.summary.clone().unwrap_or_default();
            if admin.wants_json(file) {
                let mut value = cert_json(&s);
                value["pem"] = json!(d.pem);
                value["renewed_from"] = json!(d.renewed_from);
                value["token_id"] = json!(d.token_id);
                value["revocation_reason"] = json!(d.revocation_reason);
                print_json(&value);
            } else {
                println!("serial:     {}", s.serial);
                println!("identity:   {}", s.identity);
                if s.role == i32::from(v1::Role::Operator) {
                    println!("access:     {}", access_shown(s.role, &s.access));
                }
                println!("status:     {}", s.status);
                println!("not before: {}", timestamp(s.not_before_unix));
                println!("not after:  {}", timestamp(s.not_after_unix));
                println!("dns names:  {}", s.dns_names.join(" "));
                println!("ip addrs:   {}", s.ip_addresses.join(" "));
                if !d.token_id.is_empty() {
                    println!("enrolled with token {}", d.token_id);
                }
                if !d.renewed_from.is_empty() {
                    println!("renewed from {}", d.renewed_from);
                }
                if d.revoked_unix != 0 {
                    println!(
                        "revoked at {} ({})",
                        timestamp(d.revoked_unix),
                        d.revocation_reason
                    );
                }
                print!("{}", d.pem);
            }
            Ok(())
        }
        CertCommand::Revoke {
            serial,
            name,
            role,
            reason,
            admin,
        } => {
            let role = role.as_deref().map(role_arg).transpose()?;
            let target = match (serial, name) {
                (Some(s), None) => v1::revoke_certificate_request::Target::Serial(s),
                (None, Some(n)) => v1::revoke_certificate_request::Target::Name(n),
                _ => return Err(CliError::new(Reason::Usage, "give a SERIAL or --name NAME")),
            };
            let mut client = connect(&admin, file).await?;
            let revoked = client
                .revoke_certificate(v1::RevokeCertificateRequest {
                    target: Some(target),
                    reason: reason.unwrap_or_default(),
                    role: role.unwrap_or(v1::Role::Unspecified).into(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .serials;
            if admin.wants_json(file) {
                print_json(&json!({ "revoked": revoked }));
            } else if revoked.is_empty() {
                println!("nothing to revoke (already revoked or expired)");
            } else {
                for s in &revoked {
                    println!("revoked {s}");
                }
            }
            Ok(())
        }
    }
}

pub(super) async fn audit(args: AuditArgs, file: &FileConfig) -> Result<(), CliError> {
    let mut client = connect(&args.admin, file).await?;
    let events = client
        .list_audit(v1::ListAuditRequest {
            limit: args.limit.or(file.limit).unwrap_or(50),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .events;
    if args.admin.wants_json(file) {
        let rows: Vec<_> = events
            .iter()
            .map(|e| json!({"at": timestamp(e.at_unix), "kind": e.kind, "actor": e.actor, "subject": e.subject, "detail": e.detail}))
            .collect();
        print_json(&json!(rows));
    } else {
        for e in &events {
            println!(
                "{}  {:<13} {:<40} {} {}",
                timestamp(e.at_unix),
                e.kind,
                e.actor,
                e.subject,
                e.detail
            );
        }
    }
    Ok(())
}

/// Connects to the CA with the admin bundle (renewing it when due).
pub(super) async fn connect(
    args: &AdminArgs,
    file: &FileConfig,
) -> Result<AdminClient<Channel>, CliError> {
    let state = StateDir::new(settings::state_dir(&args.state, file));
    let admin_dir: PathBuf = args
        .admin_dir
        .clone()
        .or_else(|| file.admin_dir.clone())
        .unwrap_or_else(|| state.admin_dir());
    let server = args
        .server
        .clone()
        .or_else(|| file.server.clone())
        .or_else(|| state.server_addr())
        .unwrap_or_else(|| "127.0.0.1:8443".into());
    let bundle = Bundle::load(&admin_dir, Layout::CLIENT).map_err(|e| match e {
        BundleError::Missing(path) => CliError::new(
            Reason::NotInitialized,
            format!(
                "no admin bundle: {} is missing (use --admin-dir, or --state-dir of an initialised CA)",
                path.display()
            ),
        ),
        other => CliError::new(Reason::LocalIo, other.to_string()),
    })?;
    let addr = ServerAddr::parse(&server).map_err(|e| CliError::new(e.reason(), e.to_string()))?;
    let config = tls::client_config(
        Trust::Roots(bundle.roots.clone()),
        Some(bundle.client_identity()),
    )
    .map_err(|e| CliError::new(e.reason(), e.to_string()))?;
    let channel = tls::connect(&addr, config)
        .await
        .map_err(|e| CliError::new(e.reason(), e.to_string()))?;
    super::admin_bundle::refresh(&admin_dir, &bundle, channel.clone()).await;
    Ok(AdminClient::new(channel))
}

pub(super) fn status_error(status: tonic::Status) -> CliError {
    CliError::new(
        reason::of_status_or_code(&status),
        status.message().to_string(),
    )
}

pub(super) fn role_name(role: i32) -> &'static str {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Node) => "node",
        Ok(v1::Role::Operator) => "operator",
        Ok(v1::Role::Admin) => "admin",
        Ok(v1::Role::Ca) => "ca",
        _ => "-",
    }
}

/// An operator's level as lists show it (`-` for roles that have none).
fn access_shown(role: i32, access: &str) -> &str {
    match (v1::Role::try_from(role), access) {
        (Ok(v1::Role::Operator), "") => "full",
        (Ok(v1::Role::Operator), level) => level,
        _ => "-",
    }
}

pub(super) fn timestamp(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn token_json(t: &v1::TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id, "role": role_name(t.role), "name": t.name, "uses": t.uses, "max_uses": t.max_uses,
        "expires": timestamp(t.expires_unix), "revoked": t.revoked, "allow_dns": t.allow_dns, "allow_ip": t.allow_ip,
        "replace": t.replace, "access": access_shown(t.role, &t.access),
    })
}

fn cert_json(c: &v1::CertificateSummary) -> serde_json::Value {
    json!({
        "serial": c.serial, "role": role_name(c.role), "name": c.name, "identity": c.identity,
        "not_before": timestamp(c.not_before_unix), "not_after": timestamp(c.not_after_unix),
        "status": c.status, "dns_names": c.dns_names, "ip_addresses": c.ip_addresses,
        "forked": c.forked, "access": access_shown(c.role, &c.access),
    })
}

pub(super) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
