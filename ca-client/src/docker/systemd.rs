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
/// Our drop-in's file name (sorts late so it wins).
pub const DROPIN: &str = "99-dtca-tls.conf";

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
}

impl Scan {
    /// The command line without the `-H` flags, when there were any.
    pub fn without_hosts(&self) -> Option<Vec<String>> {
        let args = self.exec_start.as_ref()?;
        if self.hosts.is_empty() {
            return None;
        }
        Some(strip_hosts(args).0)
    }
}

/// Reads `docker.service` and its drop-ins from `dirs` (highest priority first).
pub fn scan(dirs: &[PathBuf]) -> Scan {
    let mut scan = Scan::default();
    if let Some(unit) = dirs.iter().map(|d| d.join(UNIT)).find(|p| p.is_file()) {
        scan.files.push(unit);
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
    scan.files.extend(dropins.into_iter().map(|(_, p)| p));

    let mut exec: Option<String> = None;
    for file in &scan.files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for value in exec_start_values(&text) {
            exec = if value.trim().is_empty() {
                None
            } else {
                Some(value)
            };
        }
    }
    if let Some(line) = exec {
        let words = split_words(&line);
        let (_, hosts) = strip_hosts(&words);
        scan.config_file = config_file(&words);
        scan.hosts = hosts;
        scan.exec_start = Some(words);
    }
    scan
}

/// The drop-in that clears `ExecStart` and restarts dockerd with `args`.
pub fn dropin_text(args: &[String]) -> String {
    let command: Vec<String> = args.iter().map(|a| quote(a)).collect();
    format!(
        "# Written by `ca-client enroll --docker` (dtca).\n\
         # dockerd refuses `hosts` in daemon.json together with -H on its command line, so\n\
         # the -H flags of docker.service moved to daemon.json and are cleared here; every\n\
         # other flag is kept. Remove this file together with the hosts in daemon.json to undo.\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={}\n",
        command.join(" ")
    )
}

/// `ExecStart=` values of a unit file's `[Service]` section, continuation lines joined.
fn exec_start_values(text: &str) -> Vec<String> {
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
        if key.trim() != "ExecStart" {
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
fn split_words(line: &str) -> Vec<String> {
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

/// Separates `-H X`, `-HX`, `-H=X`, `--host X`, `--host=X` from the other words.
fn strip_hosts(words: &[String]) -> (Vec<String>, Vec<String>) {
    let mut rest = Vec::new();
    let mut hosts = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if i > 0 && (w == "-H" || w == "--host") {
            if let Some(v) = words.get(i + 1) {
                hosts.push(v.clone());
            }
            i += 2;
            continue;
        }
        if i > 0 {
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

fn config_file(words: &[String]) -> Option<PathBuf> {
    words.iter().enumerate().find_map(|(i, w)| {
        if w == "--config-file" {
            words.get(i + 1).map(PathBuf::from)
        } else {
            w.strip_prefix("--config-file=").map(PathBuf::from)
        }
    })
}

fn quote(word: &str) -> String {
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
        let text = dropin_text(&strip_hosts(&words).0);
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
