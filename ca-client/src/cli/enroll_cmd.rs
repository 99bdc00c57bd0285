//! `enroll`: plain, or with the docker switch (recovery from a stale enrollment, the
//! dry run), and the summary it prints.

use std::process::ExitCode;

use dtca_pki::duration;

use super::settings;
use super::{EnrollArgs, FileConfig};
use crate::enroll;
use crate::error::ClientError;

pub(super) async fn enroll_command(
    args: EnrollArgs,
    file: &FileConfig,
) -> Result<ExitCode, ClientError> {
    let opts = settings::enroll_options(&args, file)?;
    // A failed switch kept the settings it was given: its retry needs none of them.
    let enrolled = crate::state::ClientState::load(&opts.out).ok();
    let remembered = enrolled
        .as_ref()
        .and_then(|s| s.failed_switch.clone())
        .and_then(|f| f.flags);
    if let Some(docker) =
        settings::docker_options(&args.docker, file, remembered.as_ref(), enrolled.as_ref())?
    {
        let Some(current) = docker_enrollment(&opts, &docker).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        if args.docker.dry_run {
            let plan = crate::dryrun::plan(&opts, &docker, current.as_ref()).await?;
            println!("dry run: nothing was changed and no token was spent; the switch would do:");
            print!("{plan}");
            return Ok(ExitCode::SUCCESS);
        }
        let obtained = crate::node::enroll_docker(&opts, &docker, current).await?;
        report("enrolled", &opts.out, &obtained);
        if let Some(d) = &obtained.state.docker {
            println!(
                "  engine:    switched to mutual TLS on {} (published as {}), {} mode{}",
                d.listen,
                d.advertise,
                d.mode,
                match d.mode {
                    crate::state::EngineMode::Guard =>
                        ": the agent serves it in front of dockerd's socket",
                    crate::state::EngineMode::Native => "",
                }
            );
            println!(
                "  operators: `ca-client login` gives a docker context for it (this node's own certificate is no docker client)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.docker.dry_run {
        return Err(
            crate::error::ConfigProblem::Settings(dtca_common::config::ConfigError(
                "--dry-run plans the docker switch: use it with --docker".into(),
            ))
            .into(),
        );
    }
    let obtained = enroll::enroll(&opts).await?;
    report("enrolled", &opts.out, &obtained);
    Ok(ExitCode::SUCCESS)
}

/// The enrollment `enroll --docker` switches with: `Some(Some(..))` the current one (a
/// renewal, no token spent), `Some(None)` a fresh one with the token, `None` nothing to
/// do (already switched). An explicit token wins over a stale enrollment (another CA's,
/// expired, revoked, unreadable) and, with `--force`, over a usable one.
async fn docker_enrollment(
    opts: &enroll::EnrollOptions,
    docker: &crate::docker::DockerOptions,
) -> Result<Option<Option<(crate::state::ClientState, dtca_common::bundle::Bundle)>>, ClientError> {
    use crate::recover::{Local, judge};
    let token = (!opts.token.is_empty())
        .then(|| opts.token.parse::<dtca_pki::token::JoinToken>())
        .transpose()?;
    let out = opts.out.display();
    let current = match judge(&opts.out, token.as_ref(), &opts.server).await {
        Local::Empty => None,
        Local::Usable(pair) => Some(*pair),
        Local::Stale(what) if token.is_some() => {
            println!("replacing {what} in {out}: enrolling afresh with the token");
            None
        }
        Local::Stale(what) => {
            return Err(crate::error::NotEnrolled::Stale {
                dir: opts.out.clone(),
                what,
            }
            .into());
        }
    };
    let Some((state, bundle)) = current else {
        return Ok(Some(None));
    };
    if docker.force && token.is_some() {
        println!(
            "--force: replacing the enrollment of {} in {out}: enrolling afresh with the token",
            state.identity
        );
        return Ok(Some(None));
    }
    let unused = if token.is_some() {
        " (the token was not used)"
    } else {
        ""
    };
    // Run again (at every boot by dtca-enroll.service): nothing to do once switched.
    if let Some(done) = state
        .docker
        .as_ref()
        .filter(|d| d.listen == docker.listen && d.mode == docker.mode)
        && !docker.force
    {
        println!(
            "already enrolled and switched: the engine listens on {} (mutual TLS, {} mode); nothing to do{unused}",
            done.listen, done.mode
        );
        return Ok(None);
    }
    if let Some(done) = state.docker.as_ref().filter(|d| d.mode != docker.mode) {
        println!(
            "moving the engine from {} mode to {} mode",
            done.mode, docker.mode
        );
    }
    println!(
        "already enrolled in {out} as {}: switching with a renewal of that certificate{unused}",
        state.identity
    );
    Ok(Some(Some((state, bundle))))
}

pub(super) fn report(what: &str, out: &std::path::Path, obtained: &enroll::Obtained) {
    let info = &obtained.info;
    let now = time::OffsetDateTime::now_utc();
    println!(
        "{what} as {} (serial {})",
        info.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
        info.serial
    );
    let mut names: Vec<String> = info.dns_names.clone();
    names.extend(info.ip_addresses.iter().map(ToString::to_string));
    if !names.is_empty() {
        println!("  names:     {}", names.join(" "));
    }
    if !obtained.left_out.is_empty() {
        println!(
            "  left out:  {} (names of this host the token does not allow)",
            obtained.left_out.join(" ")
        );
    }
    println!(
        "  valid to:  {} ({} left)",
        duration::timestamp(info.not_after),
        duration::human(info.seconds_left(now))
    );
    println!("  files:     {}/{{ca.pem,cert.pem,key.pem}}", out.display());
}
