//! The `-H` conflict: dockerd refuses to start when `hosts` is in daemon.json and `-H` is
//! on its command line (Debian's unit passes `-H fd://`; many fleets add
//! `-H tcp://0.0.0.0:2375`). This reads docker.service and its drop-ins as systemd would,
//! finds the effective `ExecStart`, and writes a drop-in that clears it and starts dockerd
//! with the same flags minus `-H`; the hosts move to daemon.json.

use std::path::{Path, PathBuf};

/// Systemd unit directories, highest priority first.
pub const DEFAULT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];
/// The unit dockerd runs as.
pub const UNIT: &str = "docker.service";
/// Our drop-in's file name. systemd applies drop-ins in file-name order, so it must sort
/// after every drop-in that sets `ExecStart` (`systemctl edit` writes `override.conf`).
pub const DROPIN: &str = "zz-dtca-tls.conf";

/// What the unit files say about dockerd's command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// Files read, in the order systemd applies them.
    pub files: Vec<PathBuf>,
    /// The effective `ExecStart`, split into words (prefix characters removed).
    pub exec_start: Option<Vec<String>>,
    /// `-H`/`--host` values on it.
    pub hosts: Vec<String>,
    /// `--config-file` on it, if any.
    pub config_file: Option<PathBuf>,
    /// A drop-in that sets `ExecStart` but sorts after ours, so ours could not win.
    pub after_ours: Option<PathBuf>,
    /// The unit's environment (`Environment=`, then `EnvironmentFile=` on top, as systemd
    /// applies them), for `$VAR` words of `ExecStart` such as Debian's `$DOCKER_OPTS`.
    pub env: Vec<(String, String)>,
}

impl Scan {
    /// The command line without the `-H` flags, when there were any. A `$VAR` word whose
    /// value carries `-H` is replaced by its value without them (a `$` in the value
    /// written as `$$`, so that systemd passes it on as it did); other words stay as
    /// written.
    pub fn without_hosts(&self) -> Option<Vec<String>> {
        let args = self.exec_start.as_ref()?;
        if self.hosts.is_empty() {
            return None;
        }
        let mut inlined = Vec::new();
        for (i, word) in args.iter().enumerate() {
            match expand(word, &self.env) {
                // Any -H in the value, even a last one that takes the next word of the
                // command line as its address.
                Some(values) if i > 0 && strip_hosts(&values, false).0.len() != values.len() => {
                    inlined.extend(values.into_iter().map(|v| v.replace('$', "$$")));
                }
                _ => inlined.push(word.clone()),
            }
        }
        Some(strip_hosts(&inlined, true).0)
    }

    /// The command line as dockerd sees it: `$VAR` words replaced by their values, and
    /// `$$` by `$`.
    pub fn expanded(&self) -> Option<Vec<String>> {
        let args = self.exec_start.as_ref()?;
        Some(
            args.iter()
                .flat_map(|w| expand(w, &self.env).unwrap_or_else(|| vec![w.replace("$$", "$")]))
                .collect(),
        )
    }
}

/// Reads `docker.service` and its drop-ins from `dirs` (highest priority first).
pub fn scan(dirs: &[PathBuf]) -> Scan {
    let mut files = Vec::new();
    if let Some(unit) = dirs.iter().map(|d| d.join(UNIT)).find(|p| p.is_file()) {
        files.push(unit);
    }
    // Drop-ins from every directory, by file name; a name in a higher-priority
    // directory masks the same name further down.
    let mut dropins: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join(format!("{UNIT}.d"))) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") && !dropins.iter().any(|(n, _)| *n == name) {
                dropins.push((name, entry.path()));
            }
        }
    }
    dropins.sort();
    files.extend(dropins.into_iter().map(|(_, p)| p));
    read_units(files, |path| std::fs::read_to_string(path).ok())
}

/// Reads the unit `files` (the unit first, then its drop-ins, in the order systemd applies
/// them) through `read`, which also reads the `EnvironmentFile=`s they name. [`scan`]
/// reads from the disk; tests and the fuzzer hand in text.
pub fn read_units(files: Vec<PathBuf>, read: impl Fn(&Path) -> Option<String>) -> Scan {
    let mut scan = Scan {
        files,
        ..Scan::default()
    };
    let mut exec: Option<String> = None;
    let mut environment: Vec<(String, String)> = Vec::new();
    let mut from_files: Vec<(String, String)> = Vec::new();
    for file in &scan.files {
        let Some(text) = read(file) else {
            continue;
        };
        let values = service_values(&text, "ExecStart");
        let late = file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().as_ref() > DROPIN);
        if late && !values.is_empty() && !is_ours(file) {
            scan.after_ours = Some(file.clone());
        }
        for value in values {
            exec = if value.trim().is_empty() {
                None
            } else {
                Some(value)
            };
        }
        for value in service_values(&text, "Environment") {
            environment.extend(
                split_words(&format!("x {value}"))
                    .into_iter()
                    .skip(1)
                    .filter_map(|a| {
                        a.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    }),
            );
        }
        for value in service_values(&text, "EnvironmentFile") {
            let path = value.trim().trim_start_matches('-');
            if let Some(text) = read(Path::new(path)) {
                from_files.extend(env_file(&text));
            }
        }
    }
    // Later assignments win; EnvironmentFile= overrides Environment=.
    environment.extend(from_files);
    scan.env = environment;
    if let Some(line) = exec {
        let words = split_words(&line);
        scan.exec_start = Some(words);
        let expanded = scan.expanded().unwrap_or_default();
        scan.config_file = config_file(&expanded);
        scan.hosts = strip_hosts(&expanded, true).1;
    }
    scan
}

/// `$VAR` (split on whitespace, as systemd does) or `${VAR}` (one word): the value's
/// words; `None` for any other word. An unset variable expands to nothing.
fn expand(word: &str, env: &[(String, String)]) -> Option<Vec<String>> {
    let (name, split) =
        if let Some(inner) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            (inner, false)
        } else {
            (word.strip_prefix('$')?, true)
        };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = env
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    Some(if split {
        split_words(&format!("x {value}"))
            .into_iter()
            .skip(1)
            .collect()
    } else {
        vec![value.to_string()]
    })
}

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped, one level
/// of quotes removed).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

/// The drop-in that clears `ExecStart` and restarts dockerd with `args`.
pub fn dropin_text(args: &[String]) -> String {
    let command: Vec<String> = args.iter().map(|a| quote(a)).collect();
    format!(
        "# Written by `ca-client enroll --docker` (dtca).\n\
         # dockerd refuses `hosts` in daemon.json together with -H on its command line, so\n\
         # the -H flags of docker.service moved to daemon.json and are cleared here; every\n\
         # other flag is kept (a variable such as $DOCKER_OPTS that carried -H is written out\n\
         # here without it). Remove this file together with the hosts in daemon.json to undo.\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={}\n",
        command.join(" ")
    )
}

/// Values of `key=` in a unit file's `[Service]` section, continuation lines joined.
fn service_values(text: &str, wanted: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<String> = None;
    for raw in text.lines() {
        if let Some(mut acc) = pending.take() {
            let line = raw.trim_end();
            match line.strip_suffix('\\') {
                Some(head) => {
                    acc.push(' ');
                    acc.push_str(head.trim());
                    pending = Some(acc);
                }
                None => {
                    acc.push(' ');
                    acc.push_str(line.trim());
                    out.push(acc);
                }
            }
            continue;
        }
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section != "[Service]" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != wanted {
            continue;
        }
        let value = value.trim().to_string();
        match value.strip_suffix('\\') {
            Some(head) => pending = Some(head.trim().to_string()),
            None => out.push(value),
        }
    }
    if let Some(acc) = pending {
        out.push(acc);
    }
    out
}

/// Splits a command line like systemd: whitespace-separated words, single and double
/// quotes, backslash escapes; the `-@:+!` prefixes of the first word are dropped.
pub(super) fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (Some(_), c) => word.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if let Some(first) = words.first_mut() {
        *first = first
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .to_string();
    }
    words
}

/// Separates `-H X`, `-HX`, `-H=X`, `--host X`, `--host=X` from the other words; the
/// first word is the command when `command_first`.
pub(super) fn strip_hosts(words: &[String], command_first: bool) -> (Vec<String>, Vec<String>) {
    let mut rest = Vec::new();
    let mut hosts = Vec::new();
    let mut i = 0;
    let first_flag = usize::from(command_first);
    while i < words.len() {
        let w = &words[i];
        if i >= first_flag && (w == "-H" || w == "--host") {
            if let Some(v) = words.get(i + 1) {
                hosts.push(v.clone());
            }
            i += 2;
            continue;
        }
        if i >= first_flag {
            if let Some(v) = w.strip_prefix("--host=").or_else(|| w.strip_prefix("-H=")) {
                hosts.push(v.to_string());
                i += 1;
                continue;
            }
            if let Some(v) = w
                .strip_prefix("-H")
                .filter(|v| !v.is_empty() && !w.starts_with("--"))
            {
                hosts.push(v.to_string());
                i += 1;
                continue;
            }
        }
        rest.push(w.clone());
        i += 1;
    }
    (rest, hosts)
}

pub(super) fn config_file(words: &[String]) -> Option<PathBuf> {
    words.iter().enumerate().find_map(|(i, w)| {
        if w == "--config-file" {
            words.get(i + 1).map(PathBuf::from)
        } else {
            w.strip_prefix("--config-file=").map(PathBuf::from)
        }
    })
}

pub(super) fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
    {
        word.to_string()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Where our drop-in goes: the first (highest-priority) unit directory.
pub fn dropin_path(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.first()
        .map(|d| d.join(format!("{UNIT}.d")).join(DROPIN))
}

/// Whether `path` is our own drop-in.
pub fn is_ours(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == DROPIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> Vec<PathBuf> {
        vec![root.join("etc"), root.join("lib")]
    }

    #[test]
    fn finds_hosts_in_the_seed_unit_and_keeps_other_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        std::fs::create_dir_all(&d[0]).unwrap();
        std::fs::write(
            d[0].join(UNIT),
            "[Unit]\nDescription=Docker\n[Service]\nType=notify\nExecStart=/usr/bin/dockerd -H fd:// -H tcp://0.0.0.0:2375 \\\n    --containerd=/run/containerd/containerd.sock\n",
        )
        .unwrap();
        let scan = scan(&d);
        assert_eq!(scan.hosts, vec!["fd://", "tcp://0.0.0.0:2375"]);
        assert_eq!(
            scan.without_hosts().unwrap(),
            vec![
                "/usr/bin/dockerd",
                "--containerd=/run/containerd/containerd.sock"
            ]
        );
    }

    #[test]
    fn drop_ins_override_in_order_and_empty_execstart_resets() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        std::fs::create_dir_all(d[1].join("docker.service.d")).unwrap();
        std::fs::create_dir_all(d[0].join("docker.service.d")).unwrap();
        std::fs::write(
            d[1].join(UNIT),
            "[Service]\nExecStart=/usr/sbin/dockerd -H fd://\n",
        )
        .unwrap();
        std::fs::write(
            d[0].join("docker.service.d/10-tcp.conf"),
            "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd --host=tcp://0.0.0.0:2375 -Hunix:///run/d.sock --config-file /srv/daemon.json\n",
        )
        .unwrap();
        let scan = scan(&d);
        assert_eq!(scan.files.len(), 2);
        assert_eq!(scan.hosts, vec!["tcp://0.0.0.0:2375", "unix:///run/d.sock"]);
        assert_eq!(scan.config_file, Some(PathBuf::from("/srv/daemon.json")));
        // Our drop-in, written after, wins: no hosts left.
        let text = dropin_text(&scan.without_hosts().unwrap());
        std::fs::write(dropin_path(&d).unwrap(), text).unwrap();
        let again = super::scan(&d);
        assert!(again.hosts.is_empty());
        assert_eq!(
            again.exec_start.unwrap(),
            vec!["/usr/sbin/dockerd", "--config-file", "/srv/daemon.json"]
        );
    }

    #[test]
    fn debian_docker_opts_with_h_are_found_and_written_out_without_it() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        std::fs::create_dir_all(&d[1]).unwrap();
        let defaults = tmp.path().join("default-docker");
        std::fs::write(
            &defaults,
            "# legacy\nDOCKER_OPTS=\"-H tcp://0.0.0.0:2375 --log-level warn\"\n",
        )
        .unwrap();
        std::fs::write(
            d[1].join(UNIT),
            format!(
                "[Service]\nEnvironmentFile=-{}\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS --containerd=/run/c.sock\n",
                defaults.display()
            ),
        )
        .unwrap();
        let scan = scan(&d);
        assert_eq!(scan.hosts, vec!["fd://", "tcp://0.0.0.0:2375"]);
        assert_eq!(
            scan.without_hosts().unwrap(),
            vec![
                "/usr/sbin/dockerd",
                "--log-level",
                "warn",
                "--containerd=/run/c.sock"
            ]
        );
        // Without -H in it, the variable stays a variable.
        std::fs::write(&defaults, "DOCKER_OPTS='--log-level warn'\n").unwrap();
        let scan = super::scan(&d);
        assert_eq!(scan.hosts, vec!["fd://"]);
        assert_eq!(
            scan.without_hosts().unwrap(),
            vec![
                "/usr/sbin/dockerd",
                "$DOCKER_OPTS",
                "--containerd=/run/c.sock"
            ]
        );
    }

    /// Found by the systemd fuzz target: a `$VAR` in the value of a variable that carried
    /// `-H` was inlined into our drop-in as it stood, where systemd expanded it again (and
    /// brought the `-H` back). systemd expands once; `$$` is its literal dollar.
    #[test]
    fn a_dollar_inside_an_inlined_value_stays_literal() {
        let files = vec![PathBuf::from("/lib/systemd/system/docker.service")];
        let unit = "[Service]\nEnvironment=\"OPTS=-H tcp://0.0.0.0:2375 --label=$OPTS\"\nExecStart=/usr/bin/dockerd $OPTS\n";
        let scan = read_units(files.clone(), |_| Some(unit.to_string()));
        assert_eq!(scan.hosts, vec!["tcp://0.0.0.0:2375"]);
        let args = scan.without_hosts().unwrap();
        assert_eq!(args, vec!["/usr/bin/dockerd", "--label=$$OPTS"]);
        let ours = PathBuf::from("/etc/systemd/system/docker.service.d").join(DROPIN);
        let dropin = dropin_text(&args);
        let after = read_units(vec![files[0].clone(), ours.clone()], |p| {
            Some(if p == ours {
                dropin.clone()
            } else {
                unit.to_string()
            })
        });
        assert!(after.hosts.is_empty(), "{after:?}");
        assert_eq!(
            after.expanded().unwrap(),
            vec!["/usr/bin/dockerd", "--label=$OPTS"]
        );
    }

    /// Found by the systemd fuzz target: `OPTS=... -H` with the address as the next word
    /// of ExecStart was not inlined (its value alone held no address), so dockerd still got
    /// a -H after our drop-in.
    #[test]
    fn a_variable_ending_in_h_is_inlined_with_the_address_after_it() {
        let files = vec![PathBuf::from("/lib/systemd/system/docker.service")];
        let unit = "[Service]\nEnvironment=\"OPTS=--debug -H\"\nExecStart=/usr/bin/dockerd $OPTS tcp://0.0.0.0:2375 --iptables=false\n";
        let scan = read_units(files, |_| Some(unit.to_string()));
        assert_eq!(scan.hosts, vec!["tcp://0.0.0.0:2375"]);
        assert_eq!(
            scan.without_hosts().unwrap(),
            vec!["/usr/bin/dockerd", "--debug", "--iptables=false"]
        );
    }

    #[test]
    fn override_conf_is_overridden_and_a_later_drop_in_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        std::fs::create_dir_all(d[0].join("docker.service.d")).unwrap();
        std::fs::write(
            d[0].join(UNIT),
            "[Service]\nExecStart=/usr/bin/dockerd -H fd://\n",
        )
        .unwrap();
        // What `systemctl edit docker` writes.
        std::fs::write(
            d[0].join("docker.service.d/override.conf"),
            "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H tcp://0.0.0.0:2375\n",
        )
        .unwrap();
        let scan = scan(&d);
        assert_eq!(scan.hosts, vec!["tcp://0.0.0.0:2375"]);
        assert_eq!(scan.after_ours, None);
        std::fs::write(
            dropin_path(&d).unwrap(),
            dropin_text(&scan.without_hosts().unwrap()),
        )
        .unwrap();
        let switched = super::scan(&d);
        assert!(switched.hosts.is_empty(), "{switched:?}");
        assert_eq!(switched.after_ours, None);

        std::fs::write(
            d[0].join("docker.service.d/zzz-late.conf"),
            "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd://\n",
        )
        .unwrap();
        assert_eq!(
            super::scan(&d).after_ours,
            Some(d[0].join("docker.service.d/zzz-late.conf"))
        );
    }

    #[test]
    fn no_unit_means_nothing_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let scan = scan(&dirs(tmp.path()));
        assert!(
            scan.exec_start.is_none() && scan.hosts.is_empty() && scan.without_hosts().is_none()
        );
    }

    #[test]
    fn quotes_survive_a_round_trip() {
        let words = split_words(r#"-/usr/bin/dockerd --label "a b" --x='c"d' -H fd://"#);
        assert_eq!(
            words,
            vec![
                "/usr/bin/dockerd",
                "--label",
                "a b",
                "--x=c\"d",
                "-H",
                "fd://"
            ]
        );
        let text = dropin_text(&strip_hosts(&words, true).0);
        let line = text
            .lines()
            .last()
            .unwrap()
            .strip_prefix("ExecStart=")
            .unwrap();
        assert_eq!(
            split_words(line),
            vec!["/usr/bin/dockerd", "--label", "a b", "--x=c\"d"]
        );
    }
}
