//! docker.service as the switch reads it: the unit, a drop-in and an EnvironmentFile, as
//! text. Whatever they say, the drop-in dtca would write leaves dockerd with no `-H` and
//! with every other word of its command line, and `$VAR` words keep their values.

use std::path::{Path, PathBuf};

use ca_client::docker::systemd::{self, DROPIN, Scan, UNIT};

/// Input: sections split by `--` lines: docker.service, one drop-in (`10-fuzz.conf`), and
/// the text of whatever EnvironmentFile they name.
pub fn run(data: &[u8]) {
    let parts = super::sections(data);
    let part = |i: usize| parts.get(i).cloned();
    let (unit, dropin, env) = (part(0), part(1), part(2));
    let unit_path = PathBuf::from("/lib/systemd/system").join(UNIT);
    let dropin_path = PathBuf::from("/etc/systemd/system")
        .join(format!("{UNIT}.d"))
        .join("10-fuzz.conf");
    let ours_path = PathBuf::from("/etc/systemd/system")
        .join(format!("{UNIT}.d"))
        .join(DROPIN);
    let mut files = vec![unit_path.clone()];
    if dropin.is_some() {
        files.push(dropin_path.clone());
    }
    let read = |ours: Option<&String>| {
        let (unit, dropin, env) = (unit.clone(), dropin.clone(), env.clone());
        let ours = ours.cloned();
        let (unit_path, dropin_path, ours_path) =
            (unit_path.clone(), dropin_path.clone(), ours_path.clone());
        move |path: &Path| -> Option<String> {
            if path == unit_path {
                unit.clone()
            } else if path == dropin_path {
                dropin.clone()
            } else if path == ours_path {
                ours.clone()
            } else {
                env.clone()
            }
        }
    };
    let scan = systemd::read_units(files.clone(), read(None));
    check_scan(&scan);
    // systemd refuses a variable as the program itself ("not an absolute path").
    if scan
        .exec_start
        .as_ref()
        .and_then(|w| w.first())
        .is_some_and(|p| p.starts_with('$'))
    {
        return;
    }
    let Some(args) = scan.without_hosts() else {
        assert!(scan.hosts.is_empty(), "hosts found but nothing to rewrite");
        return;
    };
    let text = systemd::dropin_text(&args);
    files.push(ours_path.clone());
    let after = systemd::read_units(files, read(Some(&text)));
    assert_eq!(
        after.exec_start.as_ref(),
        Some(&args),
        "our drop-in's ExecStart does not read back as written"
    );
    assert!(
        after.hosts.is_empty(),
        "-H left after our drop-in: {:?} (from {args:?})",
        after.hosts
    );
    assert_eq!(
        after.after_ours, None,
        "our own drop-in reported as overriding us"
    );
    let (Some(before), Some(now)) = (scan.expanded(), after.expanded()) else {
        panic!("a command line vanished");
    };
    assert!(
        is_subsequence(&now, &before),
        "our drop-in added words: {now:?} is not within {before:?}"
    );
}

fn check_scan(scan: &Scan) {
    if let Some(words) = &scan.exec_start {
        let first = words.first().map(String::as_str).unwrap_or("");
        assert!(
            !first.starts_with(['-', '@', ':', '+', '!']),
            "an ExecStart prefix was kept: {first:?}"
        );
    }
    if scan.exec_start.is_none() {
        assert!(scan.hosts.is_empty(), "hosts without a command line");
    }
}

/// Every word of `short` appears in `long`, in order.
fn is_subsequence(short: &[String], long: &[String]) -> bool {
    let mut rest = long.iter();
    short.iter().all(|w| rest.any(|l| l == w))
}
