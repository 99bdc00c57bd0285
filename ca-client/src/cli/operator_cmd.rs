//! The operator's commands: `login` (and `login --watch`), `env`, `nodes`, and what they
//! print, for people and as JSON.

use std::process::ExitCode;

use dtca_pki::duration;
use serde_json::json;

use super::settings;
use super::{EnvArgs, FileConfig, LoginArgs, NodesArgs};
use crate::contexts::{self, Outcome};
use crate::error::ClientError;
use crate::operator::{self, LoginReport, NodeView};

pub(super) async fn login_command(
    args: LoginArgs,
    file: &FileConfig,
) -> Result<ExitCode, ClientError> {
    let docker_config = contexts::docker_config_dir();
    let json = args.json || file.json == Some(true);
    let watch = args.watch || file.watch == Some(true);
    let renew = args.renew || file.renew == Some(true);
    let cluster = args.cluster.clone().or_else(|| file.cluster.clone());
    let server = args.server.clone().or_else(|| file.server.clone());
    // --watch without a token watches the current login; with one, it logs in first.
    let token_given = args.token.is_some() || args.token_file.is_some();
    let first = if renew {
        Some(operator::renew(&docker_config, cluster.as_deref(), server.as_deref()).await?)
    } else if !watch || token_given {
        let opts = settings::login_options(&args, file, docker_config.clone())?;
        Some(operator::login(&opts).await?)
    } else {
        None
    };
    let what = if renew { "renewed login" } else { "logged in" };
    let cluster = match &first {
        Some(report) => {
            print_login(what, report, json);
            Some(report.cluster.clone())
        }
        None => cluster,
    };
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let opts = crate::freshness::WatchOptions {
        docker_config,
        cluster,
        server,
        retry_base: std::time::Duration::from_secs(5),
        retry_cap: settings::duration_or(
            args.retry_cap.as_deref(),
            file.retry_cap.as_deref(),
            "5m",
            "--retry-cap",
        )?,
    };
    if !json {
        println!(
            "Watching: the login renews itself while this runs (ctrl-c or SIGTERM stops it; revocation cuts it off)"
        );
    }
    crate::freshness::watch(&opts, dtca_common::cli::wait_for_signal(), |report| {
        print_login("renewed login", report, json);
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// What a login or renewal made: text with the next steps, or one JSON object (one line,
/// so that `--watch --json` prints one line per renewal).
fn print_login(what: &str, report: &LoginReport, as_json: bool) {
    let info = &report.info;
    let usable: Vec<&str> = report
        .contexts
        .iter()
        .filter(|(_, _, o)| !matches!(o, Outcome::SkippedForeign(_)))
        .map(|(name, _, _)| name.as_str())
        .collect();
    if as_json {
        let contexts: Vec<_> = report
            .contexts
            .iter()
            .map(|(name, endpoint, outcome)| {
                let (word, owner) = match outcome {
                    Outcome::Created => ("created", None),
                    Outcome::Updated => ("updated", None),
                    Outcome::SkippedForeign(owner) => ("skipped", owner.clone()),
                };
                json!({"name": name, "endpoint": endpoint, "outcome": word, "owner_cluster": owner})
            })
            .collect();
        let value = json!({
            "result": what,
            "identity": info.identity.as_ref().map(|i| i.uri()),
            "cluster": report.cluster,
            "serial": info.serial.to_string(),
            "access": is_operator(info).then(|| info.access.as_str()),
            "not_before": duration::rfc3339(info.not_before),
            "not_after": duration::rfc3339(info.not_after),
            "credentials": report.dir.display().to_string(),
            "contexts": contexts,
            "unreachable": report.unreachable,
        });
        println!("{value}");
        return;
    }
    let now = time::OffsetDateTime::now_utc();
    println!(
        "{what} as {} until {} ({} left)",
        info.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
        duration::timestamp(info.not_after),
        duration::human(info.seconds_left(now))
    );
    if is_operator(info) {
        println!("  access: {}", operator::access_note(info.access));
    }
    println!(
        "  credentials: {}/{{ca.pem,cert.pem,key.pem}}",
        report.dir.display()
    );
    for (name, endpoint, outcome) in &report.contexts {
        let what = match outcome {
            Outcome::Created => "created".to_string(),
            Outcome::Updated => "updated".to_string(),
            Outcome::SkippedForeign(None) => {
                "SKIPPED (a context of that name exists and is not dtca's)".to_string()
            }
            Outcome::SkippedForeign(Some(other)) => {
                format!("SKIPPED (a context of that name belongs to dtca cluster {other:?})")
            }
        };
        println!("  context {name:<24} {endpoint:<32} {what}");
    }
    for name in &report.unreachable {
        println!(
            "  node {name}: no engine address reported yet (is it switched with `enroll --docker`?)"
        );
    }
    if usable.is_empty() {
        println!(
            "No docker context yet: nodes appear once switched (ca-client login --renew adds them)"
        );
    } else {
        println!("Contexts made: {}", usable.join(" "));
        let name = usable[0];
        println!("Try: docker --context {name} ps");
        println!(
            "  or: eval \"$(ca-client env {name})\"   (undo: eval \"$(ca-client env --unset)\")"
        );
    }
    if info
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Admin)
    {
        println!(
            "Admin: ca-server cert list --admin-dir {} --server <ca>",
            report.dir.display()
        );
    }
    println!(
        "Renew before it expires: ca-client login --renew (or keep it fresh: ca-client login --watch)"
    );
}

pub(super) fn env_command(args: &EnvArgs, as_json: bool) -> Result<ExitCode, ClientError> {
    let docker_config = contexts::docker_config_dir();
    if args.unset {
        if as_json {
            println!("{}", json!({"unset": operator::ENV_VARIABLES}));
        } else {
            print!("{}", operator::env_unset());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(node) = &args.node else {
        let all = contexts::all(&docker_config);
        if as_json {
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        } else if all.is_empty() {
            println!(
                "no dtca contexts in {}: run `ca-client login` first",
                docker_config.display()
            );
        } else {
            println!("{:<24} {:<16} HOST", "NODE", "CLUSTER");
            for c in &all {
                println!("{:<24} {:<16} {}", c.name, c.cluster, c.host);
            }
            println!("Use one: eval \"$(ca-client env {})\"", all[0].name);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let exports = operator::env(&docker_config, node)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&exports).unwrap_or_default()
        );
    } else {
        print!("{}", exports.shell());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn nodes_command(
    args: &NodesArgs,
    file: &FileConfig,
    as_json: bool,
) -> Result<ExitCode, ClientError> {
    let docker_config = contexts::docker_config_dir();
    let cluster = args.cluster.clone().or_else(|| file.cluster.clone());
    let server = args.server.clone().or_else(|| file.server.clone());
    let nodes = operator::nodes(&docker_config, cluster.as_deref(), server.as_deref()).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&nodes).unwrap_or_default()
        );
    } else {
        print!("{}", nodes_table(&nodes));
    }
    Ok(ExitCode::SUCCESS)
}

fn nodes_table(nodes: &[NodeView]) -> String {
    let mut out = format!(
        "{:<20} {:<28} {:<7} {:<34} {:<21} {}\n",
        "NAME", "ENGINE", "MODE", "SERIAL", "EXPIRES", "LAST REPORT"
    );
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for n in nodes {
        out.push_str(&format!(
            "{:<20} {:<28} {:<7} {:<34} {:<21} {}\n",
            n.name,
            or_dash(&n.endpoint),
            or_dash(&n.mode),
            or_dash(&n.serial),
            or_dash(&n.not_after),
            or_dash(&n.last_report),
        ));
    }
    if nodes.is_empty() {
        out.push_str("(no enrolled nodes)\n");
    }
    out
}

fn is_operator(info: &dtca_pki::CertInfo) -> bool {
    info.identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Operator)
}
