//! The commands `ca-server` prints for the next step: built word by word and quoted for
//! a POSIX shell, so each runs as printed (tests run them).

use std::fmt;
use std::path::Path;

use super::settings::{self, FileConfig, PASSPHRASE_ENV};
use super::{AdminArgs, PassphraseArgs};

/// A command line to print.
#[derive(Debug, Clone)]
pub(super) struct Hint(Vec<String>);

impl Hint {
    /// `program` and its subcommand words, like `ca-server serve`.
    pub(super) fn new(words: &[&str]) -> Self {
        Hint(words.iter().map(|w| (*w).to_string()).collect())
    }

    /// Adds a flag without a value.
    pub(super) fn flag(mut self, flag: &str) -> Self {
        self.0.push(flag.to_string());
        self
    }

    /// Adds a flag and its value.
    pub(super) fn arg(mut self, flag: &str, value: impl AsRef<str>) -> Self {
        self.0.push(flag.to_string());
        self.0.push(value.as_ref().to_string());
        self
    }

    /// Adds a flag and a path.
    pub(super) fn path(self, flag: &str, path: &Path) -> Self {
        self.arg(flag, path.to_string_lossy())
    }

    /// `--config FILE` when the settings came from a named file.
    pub(super) fn config(self, file: &FileConfig) -> Self {
        match &file.source {
            Some(source) => self.path("--config", source),
            None => self,
        }
    }

    /// The flags that reach the CA the way this admin command did: the config file, the
    /// state dir, and `--server` / `--admin-dir` when they were given.
    pub(super) fn admin(self, args: &AdminArgs, file: &FileConfig) -> Self {
        let hint = self
            .config(file)
            .path("--state-dir", &settings::state_dir(&args.state, file));
        let hint = match &args.server {
            Some(server) => hint.arg("--server", server),
            None => hint,
        };
        match &args.admin_dir {
            Some(dir) => hint.path("--admin-dir", dir),
            None => hint,
        }
    }

    /// The flags that give the CA keys' passphrase the way this command got it, and
    /// whether the command needs `DTCA_PASSPHRASE` in its environment besides.
    pub(super) fn passphrase(self, args: &PassphraseArgs, file: &FileConfig) -> (Self, bool) {
        let loose = args.insecure_passphrase_file_permissions
            || file.insecure_passphrase_file_permissions == Some(true);
        let hint = match args
            .passphrase_file
            .as_ref()
            .or(file.passphrase_file.as_ref())
        {
            Some(path) => self.path("--passphrase-file", path),
            None if args.insecure_no_passphrase || file.insecure_no_passphrase == Some(true) => {
                return (self.flag("--insecure-no-passphrase"), false);
            }
            None => return (self, std::env::var_os(PASSPHRASE_ENV).is_some()),
        };
        let hint = if loose {
            hint.flag("--insecure-passphrase-file-permissions")
        } else {
            hint
        };
        (hint, false)
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.0.iter().map(|w| quote(w)).collect();
        f.write_str(&words.join(" "))
    }
}

/// `word` as a POSIX shell reads it back: unchanged when it holds only safe characters,
/// else in single quotes.
pub(super) fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%*".contains(c));
    // `*` is safe only where no file name matches; a DNS pattern is quoted.
    if safe && !word.contains('*') {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_a_shell_would_split_or_expand() {
        assert_eq!(quote("/var/lib/dtca"), "/var/lib/dtca");
        assert_eq!(quote("ca.example.com:8443"), "ca.example.com:8443");
        assert_eq!(quote("my dir"), "'my dir'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("*.nodes.example.com"), "'*.nodes.example.com'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn prints_words_in_order() {
        let hint = Hint::new(&["ca-server", "serve"])
            .path("--state-dir", Path::new("/tmp/a b"))
            .flag("--insecure-no-passphrase");
        assert_eq!(
            hint.to_string(),
            "ca-server serve --state-dir '/tmp/a b' --insecure-no-passphrase"
        );
    }
}
