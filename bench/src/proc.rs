//! Child processes that never outlive the bench, and what `/proc` says about a process.
//!
//! Every process the bench starts is a [`Child`]: dropping it stops it by pid (SIGTERM,
//! then SIGKILL), so an error, a panic or ctrl-c (which drops the running future) leaves
//! nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running child process, stopped when dropped.
#[derive(Debug)]
pub struct Child {
    /// What it is, for messages.
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// What asks it to stop (SIGTERM unless set; PostgreSQL wants SIGINT).
    pub stop_signal: Signal,
    child: Option<std::process::Child>,
}

impl Child {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Child {
            name: name.to_string(),
            log: log.to_path_buf(),
            stop_signal: Signal::SIGTERM,
            child: Some(child),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Its exit status, when it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it: its stop signal, up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        let _ = kill(pid, self.stop_signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command to completion and returns its stdout.
///
/// # Errors
/// When it cannot start or exits non-zero (with its stderr in the message).
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for `cond`, polling every 20 ms, up to `timeout`.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `/proc` says about a process at one moment.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Context switches of its live threads, voluntary plus involuntary: every time a
    /// thread went to sleep and was woken, or was preempted.
    pub switches: u64,
    /// Live threads.
    pub threads: u64,
    /// Per live thread: (tid, context switches, CPU time in ns from `schedstat`).
    pub per_thread: Vec<(u64, u64, u64)>,
}

impl Usage {
    /// Reads `/proc/PID` (`"self"` for this process).
    ///
    /// # Errors
    /// When the process is gone.
    pub fn of(pid: &str) -> anyhow::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        let field = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name: utime is 14th, stime 15th overall.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let hz = clock_ticks();
        let cpu_ticks = ticks(11) + ticks(12);
        let mut per_thread = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let tid = task.file_name().to_string_lossy().parse().unwrap_or(0);
                if let Ok(s) = std::fs::read_to_string(task.path().join("status")) {
                    let n = field(&s, "voluntary_ctxt_switches:")
                        + field(&s, "nonvoluntary_ctxt_switches:");
                    let ns = std::fs::read_to_string(task.path().join("schedstat"))
                        .ok()
                        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
                        .unwrap_or(0);
                    per_thread.push((tid, n, ns));
                }
            }
        }
        Ok(Usage {
            rss_kib: field(&status, "VmRSS:"),
            hwm_kib: field(&status, "VmHWM:"),
            cpu: Duration::from_secs_f64(cpu_ticks as f64 / hz as f64),
            switches: per_thread.iter().map(|(_, n, _)| n).sum(),
            threads: field(&status, "Threads:"),
            per_thread,
        })
    }

    /// Context switches from `earlier` to `self`, thread by thread: threads that exited in
    /// between take their last counts with them (a lower bound then), new threads count
    /// from zero.
    pub fn switches_since(&self, earlier: &Usage) -> u64 {
        self.per_thread
            .iter()
            .map(|(tid, n, _)| n.saturating_sub(earlier.thread(*tid).0))
            .sum()
    }

    /// CPU time from `earlier` to `self`, thread by thread, with nanosecond resolution
    /// (the same caveat as [`Usage::switches_since`]).
    pub fn cpu_since(&self, earlier: &Usage) -> Duration {
        Duration::from_nanos(
            self.per_thread
                .iter()
                .map(|(tid, _, ns)| ns.saturating_sub(earlier.thread(*tid).1))
                .sum(),
        )
    }

    fn thread(&self, tid: u64) -> (u64, u64) {
        self.per_thread
            .iter()
            .find(|(t, _, _)| *t == tid)
            .map_or((0, 0), |(_, n, ns)| (*n, *ns))
    }
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// Peak RSS (KiB) of the largest child this process has waited for.
pub fn children_max_rss_kib() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|r| u64::try_from(r.max_rss()).unwrap_or(0))
        .unwrap_or(0)
}

/// CPU time spent by the whole machine (every process and the kernel) so far: the busy
/// columns of `/proc/stat` (user, nice, system, irq, softirq, steal).
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_wakeups_of_a_sleeping_process() {
        let before = Usage::of("self").unwrap_or_default();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let after = Usage::of("self").unwrap_or_default();
        assert!(
            after.switches >= before.switches + 5,
            "{before:?} {after:?}"
        );
        assert!(after.rss_kib > 0 && after.threads >= 1);
    }
}
