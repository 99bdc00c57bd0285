//! Admin subcommands: they reach the running server over gRPC with the admin bundle.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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

use super::offline::Offline;
use super::settings::FileConfig;
use super::target::Target;
use super::{AdminArgs, AuditArgs, CertCommand, CliError};
pub(super) use crate::service::{rfc3339, role_name, timestamp};

/// `--access` for a token of `role`: operators only (whatever the level), `full` or
/// `read-only`.
pub(super) fn access_arg(role: v1::Role, text: Option<&str>) -> Result<Option<Access>, CliError> {
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
pub(super) fn role_arg(text: &str) -> Result<v1::Role, CliError> {
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

pub(super) async fn cert(cmd: CertCommand, file: &FileConfig) -> Result<ExitCode, CliError> {
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
            let request = v1::ListCertificatesRequest {
                expiring_within_seconds: within,
                include_inactive: all,
                limit: limit.unwrap_or(0),
            };
            let certs = match connect(&admin, file).await {
                Ok(mut client) => {
                    client
                        .list_certificates(request)
                        .await
                        .map_err(status_error)?
                        .into_inner()
                        .certificates
                }
                Err(e) => Offline::instead_of(&admin, file, e)?.certificates(&request)?,
            };
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
            // A monitoring job alerts on the exit code: something expires soon.
            if expiring_within.is_some() && !certs.is_empty() {
                return Ok(ExitCode::from(Reason::Expiring.exit_code()));
            }
            Ok(ExitCode::SUCCESS)
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
            Ok(ExitCode::SUCCESS)
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn audit(args: AuditArgs, file: &FileConfig) -> Result<(), CliError> {
    let limit = args.limit.or(file.limit).unwrap_or(50);
    let events = match connect(&args.admin, file).await {
        Ok(mut client) => {
            client
                .list_audit(v1::ListAuditRequest { limit })
                .await
                .map_err(status_error)?
                .into_inner()
                .events
        }
        Err(e) => Offline::instead_of(&args.admin, file, e)?.audit(limit)?,
    };
    if args.admin.wants_json(file) {
        let rows: Vec<_> = events
            .iter()
            .map(|e| json!({"at": rfc3339(e.at_unix), "kind": e.kind, "actor": e.actor, "subject": e.subject, "detail": e.detail}))
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
///
/// # Errors
/// [`Reason::NotRunning`] when the state dir says no server runs (nothing recorded, or
/// nothing answers at the recorded address), else why the connection failed.
pub(super) async fn connect(
    args: &AdminArgs,
    file: &FileConfig,
) -> Result<AdminClient<Channel>, CliError> {
    let target = Target::of(args, file);
    let admin_dir: PathBuf = args
        .admin_dir
        .clone()
        .or_else(|| file.admin_dir.clone())
        .unwrap_or_else(|| target.state.admin_dir());
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
    let Some(server) = target.server.clone() else {
        return Err(target.not_running());
    };
    let addr = ServerAddr::parse(&server).map_err(|e| CliError::new(e.reason(), e.to_string()))?;
    let config = tls::client_config(
        Trust::Roots(bundle.roots.clone()),
        Some(bundle.client_identity()),
    )
    .map_err(|e| CliError::new(e.reason(), e.to_string()))?;
    let channel = tls::connect(&addr, config).await.map_err(|e| {
        if e.reason() == Reason::Unreachable && !target.named {
            // A server killed without stopping leaves its address behind.
            target.not_running()
        } else {
            CliError::new(e.reason(), e.to_string())
        }
    })?;
    super::admin_bundle::refresh(&admin_dir, &bundle, channel.clone()).await;
    Ok(AdminClient::new(channel))
}

pub(super) fn status_error(status: tonic::Status) -> CliError {
    CliError::new(
        reason::of_status_or_code(&status),
        status.message().to_string(),
    )
}

/// An operator's level as lists show it (`-` for roles that have none).
pub(super) fn access_shown(role: i32, access: &str) -> &str {
    match (v1::Role::try_from(role), access) {
        (Ok(v1::Role::Operator), "") => "full",
        (Ok(v1::Role::Operator), level) => level,
        _ => "-",
    }
}

pub(super) fn token_json(t: &v1::TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id, "role": role_name(t.role), "name": t.name, "uses": t.uses, "max_uses": t.max_uses,
        "expires": rfc3339(t.expires_unix), "revoked": t.revoked, "allow_dns": t.allow_dns, "allow_ip": t.allow_ip,
        "replace": t.replace, "access": access_shown(t.role, &t.access),
    })
}

fn cert_json(c: &v1::CertificateSummary) -> serde_json::Value {
    json!({
        "serial": c.serial, "role": role_name(c.role), "name": c.name, "identity": c.identity,
        "not_before": rfc3339(c.not_before_unix), "not_after": rfc3339(c.not_after_unix),
        "status": c.status, "dns_names": c.dns_names, "ip_addresses": c.ip_addresses,
        "forked": c.forked, "access": access_shown(c.role, &c.access),
    })
}

/// Prints `value` as pretty JSON and a newline, through one buffer on the locked stdout
/// (the fleet view is megabytes).
///
/// # Panics
/// When stdout fails, as `println!` does, so `quiet_broken_pipe` still applies.
pub(super) fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        panic!("failed printing to stdout: {e}");
    }
}
