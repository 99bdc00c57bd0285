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

use crate::docker::{self, daemon_json, engine};
use crate::error::ClientError;
use crate::state::{ClientState, EngineMode, FailedSwitch};

/// What `check` found for one certificate, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Valid for longer than the warning window.
    Ok,
    /// Valid, but expires within the warning window.
    Expiring,
    /// Its validity starts in this machine's future: this clock is behind the CA's.
    NotYetValid,
    /// Expired.
    Expired,
    /// Unusable: the key does not belong to the certificate, a file does not parse or
    /// cannot be read.
    Broken,
    /// Not there.
    Missing,
}

impl Health {
    /// Exit code, in the Nagios convention monitoring systems read: 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    fn code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Expiring => 1,
            Health::NotYetValid | Health::Expired | Health::Broken => 2,
            Health::Missing => 3,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Expiring => "EXPIRING",
            Health::NotYetValid => "NOT YET VALID",
            Health::Expired => "EXPIRED",
            Health::Broken => "BROKEN",
            Health::Missing => "MISSING",
        }
    }
}

/// Judges one certificate at `now` with a warning window.
pub fn judge(leaf: &CertInfo, now: OffsetDateTime, warn_within: Duration) -> Health {
    if leaf.not_before > now {
        Health::NotYetValid
    } else if leaf.not_after <= now {
        Health::Expired
    } else if leaf.not_after - now <= warn_within {
        Health::Expiring
    } else {
        Health::Ok
    }
}

/// Checks the client certificate in `out` and, on a switched node, the pair dockerd
/// serves; prints one line each (or one JSON document) and returns the worst.
pub fn check(out: &Path, warn_within: Duration, now: OffsetDateTime, as_json: bool) -> Health {
    let mut places = vec![("client", out.to_path_buf(), Layout::CLIENT)];
    if let Ok(state) = ClientState::load(out)
        && let Some(d) = state.docker
    {
        places.push(("docker", d.tls_dir, Layout::DOCKERD));
    }
    let (worst, lines, values) = places.into_iter().fold(
        (Health::Ok, Vec::new(), Vec::new()),
        |(worst, mut lines, mut values), (what, dir, layout)| {
            let (health, line, value) = check_one(what, &dir, layout, warn_within, now);
            lines.push(line);
            values.push(value);
            (worst.max(health), lines, values)
        },
    );
    if as_json {
        let value = json!({
            "status": worst.word(),
            "exit_code": worst.code(),
            "expiring_within_seconds": warn_within.as_secs(),
            "certificates": values,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    worst
}

/// Judges the credentials of one place (`client`, `docker`) and says so in one line and
/// as JSON.
fn check_one(
    what: &str,
    dir: &Path,
    layout: Layout,
    warn_within: Duration,
    now: OffsetDateTime,
) -> (Health, String, serde_json::Value) {
    let value = |h: Health, leaf: Option<&CertInfo>, problem: Option<String>| {
        json!({
            "place": what,
            "dir": dir.display().to_string(),
            "status": h.word(),
            "identity": leaf.and_then(|l| l.identity.as_ref()).map(|i| i.uri()),
            "serial": leaf.map(|l| l.serial.to_string()),
            "not_before": leaf.map(|l| duration::rfc3339(l.not_before)),
            "not_after": leaf.map(|l| duration::rfc3339(l.not_after)),
            "seconds_left": leaf.map(|l| l.seconds_left(now)),
            "problem": problem,
        })
    };
    let leaf = match Bundle::load(dir, layout).and_then(|bundle| bundle.leaf()) {
        Ok(leaf) => leaf,
        Err(BundleError::Missing(path)) => {
            let problem = format!("{} is missing", path.display());
            return (
                Health::Missing,
                format!("MISSING {what} {}", path.display()),
                value(Health::Missing, None, Some(problem)),
            );
        }
        Err(e) => {
            return (
                Health::Broken,
                format!("BROKEN {what} {}: {e}", dir.display()),
                value(Health::Broken, None, Some(e.to_string())),
            );
        }
    };
    let h = judge(&leaf, now, warn_within);
    let line = format!(
        "{} {what} {} serial {} {}",
        h.word(),
        leaf.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
        leaf.serial,
        describe_validity(&leaf, now)
    );
    (h, line, value(h, Some(&leaf), None))
}

/// When the certificate is valid, as seen from `now`.
fn describe_validity(leaf: &CertInfo, now: OffsetDateTime) -> String {
    if leaf.not_before > now {
        return format!(
            "valid from {} (in {} by this machine's clock: is it behind?) until {}",
            duration::timestamp(leaf.not_before),
            duration::human((leaf.not_before - now).whole_seconds()),
            duration::timestamp(leaf.not_after)
        );
    }
    format!(
        "expires {} ({})",
        duration::timestamp(leaf.not_after),
        describe_left(leaf.seconds_left(now))
    )
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
    let engine = engine_status(&state, out).await;
    // A plan recorded for an earlier certificate is no plan for this one.
    let next = state.next_renewal_of(&leaf);
    let is_operator = leaf
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Operator);
    if as_json {
        let value = json!({
            "state_dir": out.display().to_string(),
            "identity": leaf.identity.as_ref().map(|i| i.uri()),
            "cluster": state.cluster,
            "access": is_operator.then(|| leaf.access.as_str()),
            "server": state.server,
            "serial": leaf.serial.to_string(),
            "names": names,
            "not_before": duration::rfc3339(leaf.not_before),
            "not_after": duration::rfc3339(leaf.not_after),
            "seconds_left": leaf.seconds_left(now),
            "validity": match judge(&leaf, now, Duration::ZERO) {
                Health::NotYetValid => "not-yet-valid",
                Health::Expired => "expired",
                _ => "valid",
            },
            "enrolled_at": machine_time(Some(&state.enrolled_at)),
            "last_renewal": machine_time(state.last_renewal.as_deref()),
            "next_renewal": next.and_then(|p| OffsetDateTime::from_unix_timestamp(p.at_unix).ok()).map(duration::rfc3339),
            "last_error": state.last_failure().map(|(_, what)| what),
            "last_error_at": state.last_failure().and_then(|(at, _)| at).map(duration::rfc3339),
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
    if is_operator {
        println!(
            "access:       {}",
            crate::operator::access_note(leaf.access)
        );
    }
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
    if leaf.not_before > now {
        println!(
            "not before:   {} (NOT YET VALID: starts in {} by this machine's clock; is it behind?)",
            duration::timestamp(leaf.not_before),
            duration::human((leaf.not_before - now).whole_seconds())
        );
    }
    println!(
        "not after:    {} ({})",
        duration::timestamp(leaf.not_after),
        describe_left(leaf.seconds_left(now))
    );
    println!(
        "last renewal: {}",
        state.last_renewal.as_deref().unwrap_or("never")
    );
    match next {
        Some(p) => {
            println!(
                "next renewal: {} ({})",
                p.at,
                describe_next(p.at_unix - now.unix_timestamp(), state.last_error.is_some())
            );
        }
        None => println!("next renewal: not planned yet (is `ca-client agent` running?)"),
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

/// When the planned renewal is, `seconds` from now: ahead, or overdue because the agent
/// is at it now or retrying after a failure (`retrying`, when the last attempt failed).
fn describe_next(seconds: i64, retrying: bool) -> String {
    match (seconds, retrying) {
        (s, _) if s > 0 => format!("in {}", duration::human(s)),
        (s, true) => format!("retrying, was due {} ago", duration::human(-s)),
        (0, false) => "now".to_string(),
        (s, false) => format!("now, was due {} ago", duration::human(-s)),
    }
}

/// What `status` says of an engine dtca does not manage.
fn unmanaged_summary(failed: Option<&FailedSwitch>) -> String {
    match failed {
        Some(f) if f.rolled_back => format!(
            "not switched: the last `enroll --docker` failed{} and was rolled back (see last error)",
            f.step
                .map(|s| format!(" at step `{s}`"))
                .unwrap_or_default()
        ),
        Some(f) => format!(
            "NOT SWITCHED AND NOT RESTORED: the last `enroll --docker` failed{} and its rollback did not complete (see last error)",
            f.step
                .map(|s| format!(" at step `{s}`"))
                .unwrap_or_default()
        ),
        None => "not managed by dtca (enrolled without --docker)".to_string(),
    }
}

/// A time recorded in the state file, in RFC 3339 (`None`, and unreadable ones, as null).
fn machine_time(recorded: Option<&str>) -> Option<String> {
    recorded
        .and_then(duration::parse_timestamp)
        .map(duration::rfc3339)
}

/// The engine as `status` shows it; every key is there in both shapes (null when it does
/// not apply).
async fn engine_status(state: &ClientState, out: &Path) -> serde_json::Value {
    let Some(d) = &state.docker else {
        return json!({
            "managed": false,
            "listen": null,
            "advertise": null,
            "hosts": null,
            "tlsverify": null,
            "swarm": null,
            "served_serial": null,
            "error": null,
            "summary": unmanaged_summary(state.failed_switch.as_ref()),
            "failed_switch": state.failed_switch.as_ref().map(|f| json!({
                "at": machine_time(Some(&f.at)),
                "step": f.step,
                "rolled_back": f.rolled_back,
                "error": f.error,
            })),
        });
    };
    let config = std::fs::read_to_string(&d.config).unwrap_or_default();
    let tlsverify = daemon_json::tlsverify_of(&config);
    let hosts = daemon_json::hosts_of(&config);
    let current = docker::served_pair(d, out).ok();
    let served = match (&current, engine::dial_addr(&d.listen).await) {
        (Some(bundle), Ok(addr)) => match docker::tls_name(bundle) {
            Some(name) => match engine::probe_tls(addr, &name, &bundle.roots, None).await {
                Ok(probe) => match probe.served {
                    Some(serial) => Ok(serial.to_string()),
                    None => Err(probe
                        .answered
                        .err()
                        .map_or_else(|| "no certificate served".to_string(), |e| e.to_string())),
                },
                Err(e) => Err(e.to_string()),
            },
            None => Err("no name in the certificate".into()),
        },
        (None, _) => Err(format!(
            "no certificate installed in {}",
            d.tls_dir.display()
        )),
        (_, Err(e)) => Err(e.to_string()),
    };
    let mode = match d.mode {
        EngineMode::Guard => "mutual TLS served by the agent's guard (guard mode)",
        EngineMode::Native if tlsverify => "mutual TLS (native mode)",
        EngineMode::Native => "NOT mutual TLS (daemon.json has no tlsverify)",
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
        "mode": d.mode.as_str(),
        "listen": d.listen.to_string(),
        "advertise": d.advertise.to_string(),
        "hosts": hosts,
        "tlsverify": tlsverify,
        "swarm": d.swarm,
        "served_serial": served.as_ref().ok(),
        "error": served.as_ref().err(),
        "summary": summary,
        "failed_switch": null,
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
            access: dtca_pki::access::Access::Full,
            subject_key_id: None,
            authority_key_id: None,
        }
    }

    /// Regression: `status` recognised a failed switch by searching the error text.
    #[test]
    fn a_failed_switch_is_told_from_its_record_not_its_text() {
        let failed = |rolled_back| FailedSwitch {
            at: "2026-12-07T10:00:00Z".into(),
            step: Some(crate::error::Step::Verify),
            rolled_back,
            error: "anything at all".into(),
            flags: None,
        };
        assert!(
            unmanaged_summary(Some(&failed(true))).contains("at step `verify` and was rolled back")
        );
        assert!(unmanaged_summary(Some(&failed(false))).contains("rollback did not complete"));
        assert!(unmanaged_summary(None).starts_with("not managed"));
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
        assert!(Health::Missing > Health::Expired && Health::Expired > Health::Expiring);
    }

    /// Regression: `check` called a certificate whose validity starts in the future (a
    /// clock behind the CA's) EXPIRED.
    #[test]
    fn a_certificate_from_the_future_is_not_yet_valid_not_expired() {
        let now = OffsetDateTime::now_utc();
        let week = Duration::from_secs(7 * 86_400);
        let early = leaf(
            now + time::Duration::minutes(5),
            now + time::Duration::days(30),
        );
        assert_eq!(judge(&early, now, week), Health::NotYetValid);
        assert_eq!(Health::NotYetValid.word(), "NOT YET VALID");
        assert_eq!(Health::NotYetValid.exit_code(), ExitCode::from(2));
        let text = describe_validity(&early, now);
        assert!(
            text.contains("in 5m 00s") || text.contains("in 4m 59s"),
            "{text}"
        );
        assert!(!text.contains("expired"), "{text}");
    }

    /// Regression: `check` printed "EXPIRED" for a key that does not belong to its
    /// certificate; it is broken, not expired (the exit code, 2, was right).
    #[test]
    fn a_key_that_does_not_match_is_broken_not_expired() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = dtca_common::bundle::sample("c", dtca_pki::Role::Node, "n", &["n.example"]);
        let other = dtca_common::bundle::sample("c", dtca_pki::Role::Node, "m", &["m.example"]);
        cert.save(tmp.path(), Layout::CLIENT).unwrap();
        let week = Duration::from_secs(7 * 86_400);
        let now = OffsetDateTime::now_utc();
        let (health, line, _) = check_one("client", tmp.path(), Layout::CLIENT, week, now);
        assert_eq!(health, Health::Expiring, "{line}"); // a one-hour sample
        std::fs::write(tmp.path().join("key.pem"), other.key.to_pem()).unwrap();
        let (health, line, _) = check_one("client", tmp.path(), Layout::CLIENT, week, now);
        assert_eq!(health, Health::Broken);
        assert!(line.starts_with("BROKEN client "), "{line}");
        assert!(line.contains("does not belong to"), "{line}");
        assert_eq!(health.exit_code(), ExitCode::from(2));
        std::fs::remove_file(tmp.path().join("key.pem")).unwrap();
        let (health, line, _) = check_one("client", tmp.path(), Layout::CLIENT, week, now);
        assert_eq!(health, Health::Missing);
        assert!(line.starts_with("MISSING client "), "{line}");
    }

    /// Regression: `status` showed "next renewal … (in -3s)" while the agent retried.
    #[test]
    fn an_overdue_renewal_is_described_honestly() {
        assert_eq!(describe_next(90, false), "in 1m 30s");
        assert_eq!(describe_next(-3, true), "retrying, was due 3s ago");
        assert_eq!(describe_next(0, true), "retrying, was due 0s ago");
        assert_eq!(describe_next(0, false), "now");
        assert_eq!(describe_next(-3, false), "now, was due 3s ago");
    }
}
