//! Parsing a command line the way both binaries do, and reporting its final error.
//!
//! - A boolean flag's environment variable takes `1`/`0`, `true`/`false`, `yes`/`no`,
//!   `on`/`off` in any case; any other value is refused naming the variable (clap would
//!   name the flag, which the user never typed).
//! - Every usage error (a missing required flag included) exits 64.
//! - `completions SHELL` and `man [DIR]` (hidden) print what [`super::docs`] makes.
//! - The final error is one `error:` line, or a JSON line under `--log-format json`.

use std::ffi::OsString;
use std::fmt::Display;
use std::process::ExitCode;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Command};

use super::{FORMAT, LogFormat};
use crate::reason::Reason;

/// The words a boolean environment variable may hold, as the error lists them.
const BOOLEAN_FORMS: &str = "1/0, true/false, yes/no or on/off";

/// Parses this process's command line into `C` with the shared conventions. `Err` holds
/// the exit code when the process should stop here: a usage error (64, already reported),
/// `--help` or `--version` (0), or a hidden `completions`/`man` command that was served.
///
/// # Errors
/// The exit code to stop with.
pub fn parse<C: clap::Parser>() -> Result<C, ExitCode> {
    parse_from::<C>(std::env::args_os().collect())
}

/// [`parse`] of a given command line (the first word is the program).
///
/// # Errors
/// The exit code to stop with, as [`parse`].
pub fn parse_from<C: clap::Parser>(argv: Vec<OsString>) -> Result<C, ExitCode> {
    let cmd = conventions(C::command());
    if let Some(code) = super::docs::serve(&cmd, &argv) {
        return Err(code);
    }
    if let Some(problem) = invalid_boolean_env(&cmd, &argv, |var| std::env::var_os(var)) {
        return Err(fail(&problem, Reason::Usage));
    }
    let parsed = cmd
        .try_get_matches_from(argv)
        .and_then(|matches| C::from_arg_matches(&matches));
    parsed.map_err(|e| {
        if !e.use_stderr() {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        if requested_format() == LogFormat::Json {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            fail(&first.trim_start_matches("error: "), Reason::Usage)
        } else {
            let _ = e.print();
            ExitCode::from(Reason::Usage.exit_code())
        }
    })
}

/// Prints the final error, as one `error:` line or, under `--log-format json`, as one
/// JSON line shaped like the log's (`level`, `fields.message`, `fields.reason`,
/// `fields.exit_code`), and returns the exit code of `reason`.
pub fn fail(message: &dyn Display, reason: Reason) -> ExitCode {
    let code = reason.exit_code();
    if requested_format() == LogFormat::Json {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": "ERROR",
            "fields": {
                "message": message.to_string(),
                "reason": reason.as_str(),
                "exit_code": code,
            },
            "target": program(),
        });
        eprintln!("{line}");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}

/// The log format set up, else the one asked for on the command line or in
/// `DTCA_LOG_FORMAT` (a failure before logging starts, like a bad config file, is
/// reported in the format asked for all the same).
fn requested_format() -> LogFormat {
    if let Some(format) = FORMAT.get() {
        return *format;
    }
    let argv: Vec<String> = std::env::args().collect();
    let from_args = argv.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--log-format=")
            .or_else(|| (a == "--log-format").then(|| argv.get(i + 1).map(String::as_str))?)
    });
    let from_env = std::env::var("DTCA_LOG_FORMAT").ok();
    match from_args.or(from_env.as_deref()) {
        Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

fn program() -> String {
    std::env::args()
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

/// The clap settings every command of both binaries shares: boolean flags read the usual
/// forms from their environment variables.
pub fn conventions(cmd: Command) -> Command {
    let mut cmd = cmd.mut_args(|arg| {
        if is_boolean_with_env(&arg) {
            arg.value_parser(BoolishValueParser::new())
        } else {
            arg
        }
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, conventions);
    }
    cmd
}

fn is_boolean_with_env(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue) && arg.get_env().is_some()
}

/// The first boolean environment variable, among the flags of the commands `argv` names,
/// whose value is none of the accepted forms, as the error to print.
fn invalid_boolean_env(
    cmd: &Command,
    argv: &[OsString],
    env: impl Fn(&std::ffi::OsStr) -> Option<OsString>,
) -> Option<String> {
    let mut path = vec![cmd];
    for word in argv.iter().skip(1) {
        let word = word.to_string_lossy();
        if word.starts_with('-') {
            continue;
        }
        if let Some(sub) = path.last().and_then(|c| c.find_subcommand(word.as_ref())) {
            path.push(sub);
        }
    }
    path.iter()
        .flat_map(|c| c.get_arguments())
        .filter(|a| is_boolean_with_env(a))
        .find_map(|arg| {
            let var = arg.get_env()?;
            let value = env(var)?;
            let text = value.to_string_lossy();
            (boolean(&text).is_none()).then(|| {
                format!(
                    "environment variable {}={text:?} is not a boolean: use {BOOLEAN_FORMS}",
                    var.to_string_lossy()
                )
            })
        })
}

/// A boolean in one of the accepted forms, any case (what `BoolishValueParser` takes).
pub fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "y" | "t" => Some(true),
        "0" | "false" | "no" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

    #[derive(Debug, Parser)]
    struct Sample {
        #[arg(long, env = "SAMPLE_TOP")]
        top: bool,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        List {
            #[arg(long, env = "SAMPLE_JSON")]
            json: bool,
        },
        Other {
            #[arg(long, env = "SAMPLE_OTHER")]
            other: bool,
        },
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn accepts_the_usual_boolean_forms_in_any_case() {
        for (text, value) in [
            ("1", true),
            ("TRUE", true),
            ("Yes", true),
            ("on", true),
            ("0", false),
            ("false", false),
            ("NO", false),
            ("Off", false),
        ] {
            assert_eq!(boolean(text), Some(value), "{text}");
        }
        assert_eq!(boolean("maybe"), None);
        assert_eq!(boolean(""), None);
    }

    #[test]
    fn names_the_variable_of_an_invalid_boolean_on_the_command_path() {
        let cmd = conventions(Sample::command());
        let env = |var: &std::ffi::OsStr| match var.to_str() {
            Some("SAMPLE_JSON") => Some(OsString::from("maybe")),
            Some("SAMPLE_TOP") => Some(OsString::from("on")),
            _ => None,
        };
        let problem = invalid_boolean_env(&cmd, &argv(&["sample", "list"]), env).unwrap();
        assert!(problem.contains("SAMPLE_JSON=\"maybe\""), "{problem}");
        assert!(!problem.contains("--json"), "{problem}");
        // Another subcommand's variable is not this command's business.
        assert_eq!(
            invalid_boolean_env(&cmd, &argv(&["sample", "other"]), env),
            None
        );
    }

    #[test]
    fn boolean_flags_parse_the_usual_forms() {
        let cmd = conventions(Sample::command());
        let m = cmd
            .try_get_matches_from(argv(&["sample", "list", "--json"]))
            .unwrap();
        let parsed = Sample::from_arg_matches(&m).unwrap();
        assert!(matches!(parsed.command, Sub::List { json: true }));
    }
}
