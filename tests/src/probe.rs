//! A probe that runs `docker --context NAME version` once a second on a thread and
//! sorts what it sees: answered, the engine restarting (nothing listening for a moment),
//! and real failures (a certificate or TLS refusal, or anything else).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a probe saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Calls the engine answered.
    pub answered: u32,
    /// Calls that found nothing listening (the engine restarting), with when.
    pub restarting: Vec<Duration>,
    /// Anything else: the message of each.
    pub failures: Vec<String>,
}

/// A running probe; [`Probe::finish`] stops it and returns what it saw.
#[derive(Debug)]
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Seen>>,
}

/// Whether `docker`'s error text says only that nothing answered on the address.
pub fn nothing_listening(text: &str) -> bool {
    text.contains("connection refused")
        || text.contains("Cannot connect to the Docker daemon")
        || text.contains("connection reset by peer")
        || text.contains(": EOF")
}

impl Probe {
    /// Starts probing `context` with the docker CLI's config in `docker_config`.
    pub fn start(docker_config: &Path, context: &str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, config, context): (_, PathBuf, String) = (
            stop.clone(),
            docker_config.to_path_buf(),
            context.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let mut seen = Seen::default();
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let out = Command::new("docker")
                    .args([
                        "--context",
                        &context,
                        "version",
                        "--format",
                        "{{.Server.Version}}",
                    ])
                    .env("DOCKER_CONFIG", &config)
                    .env_remove("DOCKER_HOST")
                    .env_remove("DOCKER_CONTEXT")
                    .output();
                match out {
                    Ok(out) if out.status.success() => seen.answered += 1,
                    Ok(out) => {
                        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
                        if nothing_listening(&text) {
                            seen.restarting.push(start.elapsed());
                        } else {
                            seen.failures.push(format!("{:?}: {text}", start.elapsed()));
                        }
                    }
                    Err(e) => seen.failures.push(format!("cannot run docker: {e}")),
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(at.elapsed()));
            }
            seen
        });
        Probe {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the probe; what it saw.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
