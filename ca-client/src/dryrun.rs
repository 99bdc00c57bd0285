//! `enroll --docker --dry-run`: the plan of the switch, from the same preflight and the
//! same file edits the switch makes, and nothing done. The CA is asked only what the
//! token allows; no token is spent, no file is written, no directory is made.

use std::fmt::Write as _;
use std::path::Path;

use dtca_common::bundle::Bundle;

use crate::docker::{self, DockerOptions, pairs::TlsDir, switch, systemd};
use crate::enroll::{Contact, EnrollOptions};
use crate::error::ClientError;
use crate::node;
use crate::sans::{Sans, Wanted};
use crate::state::ClientState;

/// The plan, as text for people.
///
/// `current` is the enrollment the switch would renew; `None`: a fresh one with the token.
///
/// # Errors
/// What the switch itself would refuse before spending anything: the preflight, the
/// token (unknown, used up...), names outside it.
pub async fn plan(
    opts: &EnrollOptions,
    docker_opts: &DockerOptions,
    current: Option<&(ClientState, Bundle)>,
) -> Result<String, ClientError> {
    let mut out = String::new();
    let backups = docker::backup_dir(&opts.out);
    if docker::backup::Backup::pending(&backups).is_some() {
        let _ = writeln!(
            out,
            "first:      roll back the interrupted switch recorded in {}",
            backups.display()
        );
    }
    let pre = docker::preflight(docker_opts).await?;
    let l = &pre.launcher;
    let _ = writeln!(out, "launcher:   {} ({})", l.kind, l.evidence);
    let _ = writeln!(
        out,
        "engine:     dockerd {} on unix://{}{}; config {}",
        pre.info.version,
        pre.socket.display(),
        if pre.info.swarm { ", swarm mode" } else { "" },
        pre.config.display()
    );
    let opts = node::with_engine_names(opts, docker_opts);
    let (sans, left_out, how) = match current {
        Some((state, bundle)) => {
            let leaf = bundle.leaf()?;
            (
                node::renewal_names(&leaf, &opts.extra_sans),
                Vec::new(),
                format!(
                    "a renewal of {} (serial {}) at {}; no token is used",
                    state.identity,
                    leaf.serial,
                    if opts.server.is_empty() {
                        &state.server
                    } else {
                        &opts.server
                    }
                ),
            )
        }
        None => {
            let wanted = Wanted::collect(&opts.extra_sans, opts.default_sans)?;
            let contact = Contact::open(&opts.server, &opts.token).await?;
            let how = format!(
                "a fresh enrollment with the token at {} (cluster {:?}, name {:?}); the token is spent only by the real run",
                contact.addr,
                contact.trusted.cluster,
                contact
                    .allowance
                    .as_ref()
                    .and_then(|a| a.name.clone())
                    .unwrap_or_else(|| opts.name.clone())
            );
            match contact
                .allowance
                .as_ref()
                .filter(|a| a.role == dtca_pki::Role::Node)
            {
                Some(a) => {
                    let fitted = wanted.fit(&a.policy)?;
                    (fitted.sans, fitted.left_out, how)
                }
                None => (wanted.all(), Vec::new(), how),
            }
        }
    };
    let _ = writeln!(out, "credential: {how}; written to {}", opts.out.display());
    let _ = writeln!(out, "names:      {}", names(&sans));
    if !left_out.is_empty() {
        let _ = writeln!(
            out,
            "left out:   {} (the token does not allow them)",
            left_out.join(" ")
        );
    }
    let (plan, dropin) = switch::planned(docker_opts, &pre)?;
    let tls = TlsDir::new(&docker_opts.tls_dir).paths();
    let _ = writeln!(out, "files:");
    let _ = writeln!(
        out,
        "  write {} (the root), {} and {} (0600), a new pair under {}/pairs/",
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display(),
        docker_opts.tls_dir.display()
    );
    file_change(&mut out, &pre.config, pre.existing.as_deref(), &plan.text);
    if let Some((path, args)) = &dropin {
        let old = std::fs::read_to_string(path).ok();
        file_change(&mut out, path, old.as_deref(), &systemd::dropin_text(args));
    }
    if let Some((path, text)) = &pre.env_edit {
        let old = std::fs::read_to_string(path).ok();
        file_change(&mut out, path, old.as_deref(), text);
    }
    let _ = writeln!(
        out,
        "  back up each of them first, into {}",
        docker::backup_dir(&opts.out).display()
    );
    if plan.live_restore && !pre.info.live_restore {
        let _ = writeln!(
            out,
            "reload:     SIGHUP dockerd first to turn live-restore on (containers survive the restart)"
        );
    }
    let _ = writeln!(out, "restart:    `{}`", pre.restart);
    let _ = writeln!(
        out,
        "then check: {} serves the new certificate with mutual TLS; a client without a certificate and the node's own certificate are refused{}; unix://{} answers; a dockerd gone for {} s after the restart is rolled back at once",
        docker_opts.listen,
        if plan.removed_tcp.is_empty() {
            String::new()
        } else {
            format!(
                "; {} no longer accept connections",
                plan.removed_tcp
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        plan.socket.as_ref().unwrap_or(&pre.socket).display(),
        docker::alive::GRACE.as_secs()
    );
    let _ = writeln!(
        out,
        "on failure: restore every backup, restart with the same command, and check the engine answers as before"
    );
    Ok(out)
}

fn names(sans: &Sans) -> String {
    let mut all: Vec<String> = sans.dns.clone();
    all.extend(sans.ips.iter().map(ToString::to_string));
    all.join(" ")
}

/// One file's change: a new file in full, an edit as a line diff, or "unchanged".
fn file_change(out: &mut String, path: &Path, old: Option<&str>, new: &str) {
    match old {
        Some(old) if old == new => {
            let _ = writeln!(out, "  unchanged {}", path.display());
        }
        Some(old) => {
            let _ = writeln!(out, "  edit {}:", path.display());
            out.push_str(&diff(old, new));
        }
        None => {
            let _ = writeln!(out, "  create {}:", path.display());
            out.push_str(&diff("", new));
        }
    }
}

/// A line diff of `old` to `new` (longest common subsequence): unchanged lines with two
/// spaces, removed with `-`, added with `+`, each indented.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "      {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "    - {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "    + {}", b[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_keep_common_lines_and_mark_the_rest() {
        let d = diff(
            "{\n  \"a\": 1,\n  \"b\": 2\n}\n",
            "{\n  \"a\": 1,\n  \"c\": 3\n}\n",
        );
        assert_eq!(
            d,
            "      {\n        \"a\": 1,\n    -   \"b\": 2\n    +   \"c\": 3\n      }\n"
        );
        assert_eq!(diff("", "x\n"), "    + x\n");
        assert_eq!(diff("x\n", "x\n"), "      x\n");
    }
}
