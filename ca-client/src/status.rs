//! `ca-client check` and `ca-client status`: what the local certificates and the engine
//! look like, for monitoring, scripts and people.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use dtca_common::bundle::{Bundle, BundleError, Layout};
use dtca_pki::duration;
use dtca_pki::inspect::CertInfo;
use serde_json::json;
use time::OffsetDateTime;

use crate::docker::{self, daemon_json, engine, pairs::TlsDir};
use crate::error::ClientError;
use crate::state::ClientState;

/// What `check` found for one certificate, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Valid for longer than the warning window.
    Ok,
    /// Valid, but expires within the warning window.
    Expiring,
    /// Expired, not yet valid, or unusable (key does not match, unreadable).
    Expired,
    /// Not there.
    Missing,
}

impl Health {
    /// Exit code, in the Nagios convention monitoring systems read: 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Health::Ok => 0,
            Health::Expiring => 1,
            Health::Expired => 2,
            Health::Missing => 3,
        })
    }

    fn word(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Expiring => "EXPIRING",
            Health::Expired => "EXPIRED",
            Health::Missing => "MISSING",
        }
    }
}

/// Judges one certificate at `now` with a warning window.
pub fn judge(leaf: &CertInfo, now: OffsetDateTime, warn_within: Duration) -> Health {
    if leaf.not_after <= now || leaf.not_before > now {
        Health::Expired
    } else if leaf.not_after - now <= warn_within {
        Health::Expiring
    } else {
        Health::Ok
    }
}

/// Checks the client certificate in `out` and, on a switched node, the pair dockerd
/// serves; prints one line each and returns the worst.
pub fn check(out: &Path, warn_within: Duration, now: OffsetDateTime) -> Health {
    let mut worst = Health::Ok;
    let mut places = vec![("client", out.to_path_buf(), Layout::CLIENT)];
    if let Ok(state) = ClientState::load(out)
        && let Some(d) = state.docker
    {
        places.push(("docker", d.tls_dir, Layout::DOCKERD));
    }
    for (what, dir, layout) in places {
        let health = match Bundle::load(&dir, layout) {
            Ok(bundle) => match bundle.leaf() {
                Ok(leaf) => {
                    let h = judge(&leaf, now, warn_within);
                    println!(
                        "{} {what} {} serial {} expires {} ({})",
                        h.word(),
                        leaf.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
                        leaf.serial,
                        duration::timestamp(leaf.not_after),
                        describe_left(leaf.seconds_left(now))
                    );
                    h
                }
                Err(e) => {
                    println!("EXPIRED {what} {}: {e}", dir.display());
                    Health::Expired
                }
            },
            Err(BundleError::Missing(path)) => {
                println!("MISSING {what} {}", path.display());
                Health::Missing
            }
            Err(e) => {
                println!("EXPIRED {what} {}: {e}", dir.display());
                Health::Expired
            }
        };
        worst = worst.max(health);
    }
    worst
}

fn describe_left(seconds: i64) -> String {
    if seconds >= 0 {
        format!("{} left", duration::human(seconds))
    } else {
        format!("expired {} ago", duration::human(-seconds))
    }
}

/// Prints what `status` shows.
///
/// # Errors
/// [`ClientError::NotEnrolled`] when `out` holds no enrollment.
pub async fn status(out: &Path, as_json: bool) -> Result<(), ClientError> {
    let state = ClientState::load(out)?;
    let bundle = Bundle::load(out, Layout::CLIENT)?;
    let leaf = bundle.leaf()?;
    let now = OffsetDateTime::now_utc();
    let mut names: Vec<String> = leaf.dns_names.clone();
    names.extend(leaf.ip_addresses.iter().map(ToString::to_string));
    let engine = engine_status(&state).await;
    if as_json {
        let value = json!({
            "identity": leaf.identity.as_ref().map(|i| i.uri()),
            "server": state.server,
            "serial": leaf.serial.to_string(),
            "names": names,
            "not_after": duration::timestamp(leaf.not_after),
            "seconds_left": leaf.seconds_left(now),
            "last_renewal": state.last_renewal,
            "next_renewal": state.next_renewal.as_ref().map(|p| p.at.clone()),
            "last_error": state.last_error,
            "engine": engine,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "identity:     {}",
        leaf.identity.as_ref().map(|i| i.uri()).unwrap_or_default()
    );
    println!("server:       {}", state.server);
    println!("serial:       {}", leaf.serial);
    println!(
        "names:        {}",
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(" ")
        }
    );
    println!(
        "not after:    {} ({})",
        duration::timestamp(leaf.not_after),
        describe_left(leaf.seconds_left(now))
    );
    println!(
        "last renewal: {}",
        state.last_renewal.as_deref().unwrap_or("never")
    );
    match &state.next_renewal {
        Some(p) if p.serial == leaf.serial.to_string() => {
            println!(
                "next renewal: {} (in {})",
                p.at,
                duration::human(p.at_unix - now.unix_timestamp())
            );
        }
        _ => println!("next renewal: not planned yet (is `ca-client agent` running?)"),
    }
    if let Some(e) = &state.last_error {
        println!("last error:   {e}");
    }
    println!(
        "engine:       {}",
        engine["summary"].as_str().unwrap_or("-")
    );
    Ok(())
}

async fn engine_status(state: &ClientState) -> serde_json::Value {
    let Some(d) = &state.docker else {
        return json!({"managed": false, "summary": "not managed by dtca (enrolled without --docker)"});
    };
    let config = std::fs::read_to_string(&d.config).unwrap_or_default();
    let tlsverify = daemon_json::tlsverify_of(&config);
    let hosts = daemon_json::hosts_of(&config);
    let tls = TlsDir::new(&d.tls_dir);
    let current = tls.load_current().ok();
    let served = match (&current, engine::dial_addr(&d.listen).await) {
        (Some(bundle), Ok(addr)) => match docker::tls_name(bundle) {
            Some(name) => engine::ping_tls(
                addr,
                &name,
                &bundle.root_der,
                Some(&bundle.client_identity()),
            )
            .await
            .map(|s| s.to_string())
            .map_err(|e| e.to_string()),
            None => Err("no name in the certificate".into()),
        },
        (None, _) => Err(format!(
            "no certificate installed in {}",
            d.tls_dir.display()
        )),
        (_, Err(e)) => Err(e.to_string()),
    };
    let mode = if tlsverify {
        "mutual TLS"
    } else {
        "NOT mutual TLS (daemon.json has no tlsverify)"
    };
    let summary = match &served {
        Ok(serial) => format!(
            "{} {mode}, answering with certificate {serial}{}",
            d.listen,
            if d.swarm { ", swarm mode" } else { "" }
        ),
        Err(e) => format!("{} {mode}, NOT answering: {e}", d.listen),
    };
    json!({
        "managed": true,
        "listen": d.listen,
        "advertise": d.advertise,
        "hosts": hosts,
        "tlsverify": tlsverify,
        "swarm": d.swarm,
        "served_serial": served.as_ref().ok(),
        "error": served.as_ref().err(),
        "summary": summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertInfo {
        CertInfo {
            serial: "01".parse().unwrap(),
            identity: None,
            dns_names: vec![],
            ip_addresses: vec![],
            not_before,
            not_after,
            is_ca: false,
            subject: String::new(),
            issuer: String::new(),
            public_key_der: vec![],
            server_auth: false,
            client_auth: true,
            subject_key_id: None,
            authority_key_id: None,
        }
    }

    #[test]
    fn judges_ok_expiring_and_expired() {
        let now = OffsetDateTime::now_utc();
        let week = Duration::from_secs(7 * 86_400);
        let day = time::Duration::days(1);
        assert_eq!(
            judge(&leaf(now - day, now + day * 20), now, week),
            Health::Ok
        );
        assert_eq!(
            judge(&leaf(now - day, now + day * 3), now, week),
            Health::Expiring
        );
        assert_eq!(
            judge(&leaf(now - day * 2, now - day), now, week),
            Health::Expired
        );
        assert_eq!(
            judge(&leaf(now + day, now + day * 2), now, week),
            Health::Expired
        );
        assert!(Health::Missing > Health::Expired && Health::Expired > Health::Expiring);
    }
}
