//! The lock a running agent holds on `<state-dir>/agent.pid`: how `ca-client renew`, the
//! guard switch and `doctor` find the agent of a state directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ClientError;

/// File in the state directory that a running agent holds locked, with its pid in it.
pub const AGENT_PID: &str = "agent.pid";

/// The lock a running agent holds on `<state-dir>/agent.pid`: it says that an agent runs
/// for the directory, and which. The kernel drops it when the agent exits, however it
/// exits, so a stale file never counts.
#[derive(Debug)]
pub struct AgentLock {
    file: File,
    path: PathBuf,
}

impl AgentLock {
    /// Takes the lock for this process and writes its pid. `Ok(None)` when another agent
    /// holds it (its pid is logged by the caller).
    ///
    /// # Errors
    /// [`ClientError::File`] when the file cannot be opened or written.
    pub fn take(out: &Path) -> Result<Result<AgentLock, Option<u32>>, ClientError> {
        let path = out.join(AGENT_PID);
        let io = |e| dtca_common::fs::FileError::new(&path, "lock", e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // `holder` takes a shared lock for a moment: a few tries before concluding that
        // another agent holds it.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => return Ok(Err(read_pid(&mut file))),
                Err(TryLockError::Error(e)) => return Err(io(e).into()),
            }
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Ok(AgentLock { file, path }))
    }

    /// The pid of the agent holding the lock of `out`, if one does.
    pub fn holder(out: &Path) -> Option<u32> {
        let mut file = File::open(out.join(AGENT_PID)).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => read_pid(&mut file),
            Err(TryLockError::Error(_)) => None,
        }
    }
}

impl Drop for AgentLock {
    fn drop(&mut self) {
        // Emptied, not removed: removing could race with the next agent's lock.
        let _ = self.file.set_len(0);
        tracing::debug!(path = %self.path.display(), "agent lock released");
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_lock_names_its_holder_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(AgentLock::holder(tmp.path()), None, "no file");
        let lock = AgentLock::take(tmp.path()).unwrap().unwrap();
        assert_eq!(AgentLock::holder(tmp.path()), Some(std::process::id()));
        // A second agent for the same directory is told who holds it.
        assert_eq!(
            AgentLock::take(tmp.path()).unwrap().unwrap_err(),
            Some(std::process::id())
        );
        drop(lock);
        assert_eq!(AgentLock::holder(tmp.path()), None, "released");
        // A file left behind (an agent killed by -9 leaves its pid) does not count.
        std::fs::write(tmp.path().join(AGENT_PID), "4242\n").unwrap();
        assert_eq!(AgentLock::holder(tmp.path()), None);
    }
}
