//! `ca-server token create | list | revoke`. `create` makes a join token and prints, as `docker swarm join-token`
//! does, the command that uses it: `ca-client enroll --docker ...` for a node token,
//! `ca-client login ...` for an operator or admin token (`--quiet`: the token alone).

use dtca_common::Reason;
use dtca_pki::duration;
use dtca_proto::v1;
use serde_json::json;

use super::admin::{
    access_arg, access_shown, connect, print_json, role_arg, role_name, status_error, timestamp,
    token_json,
};
use super::hint::Hint;
use super::offline::Offline;
use super::settings::FileConfig;
use super::target::Target;
use super::{CliError, TokenCommand, TokenCreateArgs};
use time::OffsetDateTime;

pub(super) async fn run(cmd: TokenCommand, file: &FileConfig) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create(args) => create(args, file).await,
        TokenCommand::List(admin) => {
            let tokens = match connect(&admin, file).await {
                Ok(mut client) => {
                    client
                        .list_tokens(v1::ListTokensRequest {})
                        .await
                        .map_err(status_error)?
                        .into_inner()
                        .tokens
                }
                Err(e) => Offline::instead_of(&admin, file, e)?.tokens()?,
            };
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

async fn create(args: TokenCreateArgs, file: &FileConfig) -> Result<(), CliError> {
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
    let (server, note) = client_address(&Target::of(&args.admin, file));
    let command = match role {
        v1::Role::Node => Hint::new(&["ca-client", "enroll", "--docker"]),
        _ => Hint::new(&["ca-client", "login"]),
    }
    .arg("--server", &server)
    .arg("--token", &response.token);
    if args.admin.wants_json(file) {
        let mut value = response
            .info
            .as_ref()
            .map(token_json)
            .unwrap_or_else(|| json!({}));
        value["token"] = json!(response.token);
        value["server"] = json!(server);
        value["command"] = json!(command.to_string());
        print_json(&value);
        return Ok(());
    }
    if args.quiet || file.quiet == Some(true) {
        // The token alone, so `TOKEN=$(ca-server token create --quiet ...)` works.
        println!("{}", response.token);
        return Ok(());
    }
    if let Some(info) = &response.info {
        println!(
            "Token {} for role {}{}: {} use(s), expires {}{}.",
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
    match role {
        v1::Role::Node => println!(
            "To enroll a node and move its Docker engine to mutual TLS, run on it as root:"
        ),
        v1::Role::Admin => println!(
            "To get an admin certificate (in ~/.docker/dtca/<cluster>), run on the admin's machine:"
        ),
        _ => println!(
            "To get an operator certificate and a docker context per node, run on the operator's machine:"
        ),
    }
    println!("\n    {command}\n");
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(())
}

/// The CA address clients use, and a note when it had to be guessed: the advertised
/// address `serve` recorded, else the address this command reached it at when named,
/// else the recorded listen address (this host's name for a wildcard one).
fn client_address(target: &Target) -> (String, Option<String>) {
    let record = target.state.server_record();
    if let Some(advertise) = record.as_ref().and_then(|r| r.advertise.clone()) {
        return (advertise, None);
    }
    if target.named
        && let Some(server) = &target.server
    {
        return (server.clone(), None);
    }
    let host = dtca_common::net::fqdn().unwrap_or_else(dtca_common::net::hostname);
    match record {
        Some(r) => match r.client_address(&host) {
            (addr, true) => {
                let note = format!(
                    "the CA listens on {} (every address) with no --advertise: the command names this host, {host}; start `ca-server serve` with --advertise HOST:PORT to print the address clients use",
                    r.listen
                );
                (addr, Some(note))
            }
            (addr, false) => (addr, None),
        },
        None => (target.server.clone().unwrap_or_default(), None),
    }
}
