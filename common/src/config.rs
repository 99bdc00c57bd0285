//! Config files: the third layer of `flag > env > file > default`.
//!
//! Every binary declares its flags with clap (each with an environment variable) as
//! `Option`s, and a TOML struct with the same field names. A value missing from both the
//! flag and the environment is taken from the file, then from the default.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Reads a TOML config file. A missing file is an empty config when `required` is false
/// (the default path need not exist); unknown keys are refused (when `T` says
/// `deny_unknown_fields`, as every config struct of ours does) so typos are caught.
///
/// # Errors
/// [`ConfigError`] naming the file and the problem.
pub fn load<T: DeserializeOwned + Default>(path: &Path, required: bool) -> Result<T, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(T::default()),
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    };
    parse(&text, path)
}

/// Reads the TOML `text` of the config file at `path` (named in errors), refusing unknown
/// keys as [`load`] does.
///
/// # Errors
/// [`ConfigError`] naming the file and the problem.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.message())))
}

/// A config problem (or several, one per line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Collects every problem of a config before giving up, so users fix them in one go.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>, usize);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Records a required setting that was not given.
    pub fn missing(&mut self, problem: impl Into<String>) {
        self.1 += 1;
        self.push(problem);
    }

    /// Whether every problem is a required setting not given: a usage error (exit 64,
    /// as clap's own missing arguments), not a bad configuration.
    pub fn only_missing(&self) -> bool {
        self.1 > 0 && self.1 == self.0.len()
    }

    /// Keeps the value of `result`, or records its error and returns `None`.
    pub fn check<T, E: std::fmt::Display>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e.to_string());
                None
            }
        }
    }

    /// `Ok` when nothing was recorded, else every problem joined into one error.
    ///
    /// # Errors
    /// The collected problems.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(self.0.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: Option<String>,
    }

    #[test]
    fn missing_optional_file_is_empty_and_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        assert_eq!(load::<Sample>(&path, false).unwrap(), Sample::default());
        assert!(load::<Sample>(&path, true).is_err());
        std::fs::write(&path, "listen = \"1.2.3.4:1\"\n").unwrap();
        assert_eq!(
            load::<Sample>(&path, true).unwrap().listen.as_deref(),
            Some("1.2.3.4:1")
        );
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        assert!(load::<Sample>(&path, true).unwrap_err().0.contains("lisen"));
    }

    #[test]
    fn problems_are_all_reported_together() {
        let mut p = Problems::default();
        p.push("a is wrong");
        let _ = p.check::<(), _>(Err("b is wrong"));
        let err = p.finish().unwrap_err();
        assert!(err.0.contains("a is wrong") && err.0.contains("b is wrong"));
    }

    #[test]
    fn only_missing_settings_make_a_usage_error() {
        let mut p = Problems::default();
        assert!(!p.only_missing());
        p.missing("--out is required");
        assert!(p.only_missing());
        p.push("--ttl: not a duration");
        assert!(!p.only_missing());
    }
}
