//! Child processes that never outlive their test.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running child; dropped means stopped (SIGTERM, then SIGKILL after 10 s), by pid.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr going to `log` (a file path).
    pub fn spawn(name: &str, mut cmd: Command, log: &std::path::Path) -> Proc {
        let out = std::fs::File::create(log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether it has exited (and its status if so).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` and waits up to `timeout` for the exit.
    pub fn signal_and_wait(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = kill(
            Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
            signal,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops it: SIGTERM, then SIGKILL; returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let status = self
            .signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
            .or_else(|| self.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5)));
        self.child = None;
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Waits for `cond` to hold, polling every 20 ms, up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `t` is over. X.509 validity counts whole seconds, so a certificate is
/// still valid during the second of its `not_after`: this waits a little past it.
///
/// # Panics
/// When the clock does not get there within two minutes.
pub fn wait_past(t: time::OffsetDateTime) {
    assert!(wait_until(Duration::from_secs(120), || {
        time::OffsetDateTime::now_utc() > t + time::Duration::milliseconds(1500)
    }));
}
