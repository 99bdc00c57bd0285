//! Shell completions and man pages, made from the clap definitions so they never drift
//! from the flags: `PROGRAM completions bash|zsh|fish` prints a completion script,
//! `PROGRAM man DIR` writes `PROGRAM.1` and one page per subcommand into DIR (`PROGRAM
//! man` prints the main page). Both are hidden from `--help`; `scripts/install.sh`
//! installs their output.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;

use crate::reason::Reason;

/// Serves `completions` or `man` when `argv` asks for one of them; `None` otherwise.
pub(super) fn serve(cmd: &Command, argv: &[OsString]) -> Option<ExitCode> {
    let word = |i: usize| argv.get(i).map(|w| w.to_string_lossy().into_owned());
    let result = match word(1).as_deref() {
        Some("completions") => match word(2).as_deref().map(str::parse::<Shell>) {
            Some(Ok(shell @ (Shell::Bash | Shell::Zsh | Shell::Fish))) => {
                completions(cmd.clone(), shell, &mut std::io::stdout()).map_err(|e| e.to_string())
            }
            _ => Err(format!(
                "usage: {} completions bash|zsh|fish",
                cmd.get_name()
            )),
        },
        Some("man") => match word(2) {
            Some(dir) => man_pages(cmd.clone(), Path::new(&dir)).map(|files| {
                for f in files {
                    println!("{f}");
                }
            }),
            None => man_page(cmd.clone(), &mut std::io::stdout()).map_err(|e| e.to_string()),
        },
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        // `ca-server man | head`: the reader has what it wanted.
        Err(e) if e.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(e) => super::fail(&e, Reason::Usage),
    })
}

/// Writes the completion script of `cmd` for `shell`.
///
/// # Errors
/// When `out` cannot be written.
pub fn completions(
    mut cmd: Command,
    shell: Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut buffer = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buffer);
    out.write_all(&buffer)
}

/// Writes the main man page of `cmd` (roff).
///
/// # Errors
/// When `out` cannot be written.
pub fn man_page(cmd: Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).render(out)
}

/// Writes `NAME.1` and `NAME-SUB.1` for every visible subcommand into `dir` (made when
/// missing); returns the files written.
///
/// # Errors
/// The file or directory that could not be written, and why.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .map_err(|e| format!("cannot write man pages into {}: {e}", dir.display()))?;
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().display().to_string())
        .filter(|p| p.ends_with(".1"))
        .collect();
    files.sort();
    Ok(files)
}
