//! The embedded store under faults, with the real binaries: sustained load (the WAL stays
//! bounded), a disk that fills up during load (refused with its own reason, recovered
//! from without a restart, nothing lost), a damaged file (refused at start, restored from
//! a backup), and a client whose clock is ten minutes behind (refused before its
//! single-use token is spent).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Sampling a WAL file on a real clock, from plain threads and the test's runtime.
#![allow(clippy::disallowed_types)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::cli::{expect_exit, run, stderr, stdout, text, token};
use dtca_tests::load::Load;
use dtca_tests::process::wait_until;
use dtca_tests::serve::{ServeProcess, health, init_insecure};

const MIB: u64 = 1 << 20;
/// The WAL never grows past this under load...
const WAL_BOUND: u64 = 256 * MIB;
/// ...and is back under this soon after the load stops.
const WAL_AFTER_LOAD: u64 = 64 * MIB;
/// How long the sustained load runs: the minute in which the WAL of builds before the
/// bound grew to 4 GB; the WAL starts over many times in it (and, without that, would pass
/// its bound) even in a debug build on two shared cores.
const SUSTAINED: Duration = Duration::from_secs(60);

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The WAL header's checkpoint sequence number: it changes each time the WAL starts over.
fn wal_sequence(wal: &Path) -> Option<u32> {
    let bytes = std::fs::read(wal).ok()?;
    Some(u32::from_be_bytes(bytes.get(12..16)?.try_into().ok()?))
}

/// A free loopback port for `--metrics-listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One value of the CA's Prometheus metrics.
fn metric(port: u16, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Every serial in the store at `db`, after `PRAGMA integrity_check` said ok.
fn checked_serials(db: &Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", db.display());
    let mut stmt = conn.prepare("SELECT serial FROM certificates").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Regression: under continuous load the WAL never started over (4 GB after 60 s) and
/// did not shrink while `serve` ran; a clean stop left 157 MB behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_sustained_load_and_empties_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init_insecure(&state);
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut serve = ServeProcess::start(
        &state,
        &["--insecure-no-passphrase", "--metrics-listen", &metrics],
        &[],
    );
    let token = token(&state, &["--role", "node", "--uses", "1000000"]);
    let wal = state.join("store.db-wal");

    let load = Load::start(&serve.addr, &token, 64, 8, 256).await;
    let started = Instant::now();
    let (mut largest, mut sequences) = (0, HashSet::new());
    while started.elapsed() < SUSTAINED {
        largest = largest.max(size(&wal));
        sequences.extend(wal_sequence(&wal));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = load.finish().await;
    let written = metric(port, "dtca_store_wal_written_bytes_total").unwrap();
    let resets = metric(port, "dtca_store_wal_resets_total").unwrap();
    let stopped = Instant::now();
    let settled = wait_until(Duration::from_secs(10), || size(&wal) < WAL_AFTER_LOAD);
    let settle_time = stopped.elapsed();
    // With nothing to write, the WAL is emptied altogether.
    let emptied = wait_until(Duration::from_secs(10), || size(&wal) == 0);
    let summary = format!(
        "{} certificates in {SUSTAINED:?}, {} MiB written to the WAL, {resets} resets, \
         {} distinct WAL headers seen, largest WAL {} MiB, refusals {:?} {:?}",
        tally.delivered.len(),
        written / MIB,
        sequences.len(),
        largest / MIB,
        tally.refused,
        tally.messages
    );
    println!(
        "{summary}; under {} MiB {settle_time:?} after the load",
        WAL_AFTER_LOAD / MIB
    );
    assert!(tally.refused.is_empty(), "{summary}");
    assert!(largest <= WAL_BOUND, "{summary}");
    assert!(
        settled,
        "the WAL stayed at {} MiB after the load",
        size(&wal) / MIB
    );
    assert!(
        emptied,
        "the WAL was not emptied while idle: {} bytes",
        size(&wal)
    );
    // The bound held because the WAL started over, again and again: it never held more
    // than a fraction of what went through it.
    assert!(resets >= 3 && sequences.len() >= 3, "{summary}");
    assert!(largest * 2 < written, "{summary}");

    // A clean stop leaves no WAL behind, and every certificate delivered is recorded
    // (plus the admin's and the server's own).
    serve.proc.stop();
    assert!(
        size(&wal) == 0,
        "{} bytes of WAL after a clean stop",
        size(&wal)
    );
    let serials = checked_serials(&state.join("store.db"));
    assert_eq!(serials.len(), tally.delivered.len() + 2, "{summary}");
    assert!(tally.delivered.iter().all(|s| serials.contains(s)));
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount a tmpfs (the test runs as root, as CI does): {}",
            text(&out)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {}", text(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `file` by writing to it until the disk is full.
fn fill(file: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x5a_u8; 256 * 1024];
    let mut written = 0;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = f.sync_all();
    written
}

/// Regression: when the WAL filled an 8 MB file system every enroll failed as
/// "unavailable, retry later", health stayed SERVING, and `serve` stayed stuck after
/// the load stopped (a checkpoint was only tried after a successful commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_during_load_is_refused_with_its_reason_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("fs"), "48m");
    let state = fs.0.join("state");
    init_insecure(&state);
    let log = dir.path().join("serve.log");
    let mut serve = ServeProcess::start_logged(
        &state,
        &log,
        "127.0.0.1:0",
        &["--insecure-no-passphrase", "--store-reserve", "8MiB"],
        &[],
    );
    assert!(state.join("store.db.reserve").exists());
    let token = token(&state, &["--role", "node", "--uses", "1000000"]);
    let load = Load::start(&serve.addr, &token, 16, 4, 128).await;
    let delivered = || load.delivered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(30), || delivered() >= 200));

    // Something else fills the disk while certificates are being issued.
    let filler = fs.0.join("filler");
    let f = filler.clone();
    tokio::task::spawn_blocking(move || fill(&f)).await.unwrap();
    let full = async {
        for _ in 0..300 {
            if let Some((false, Some(Reason::StoreFull))) = health(&serve.addr, &state).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        full.await,
        "health never said NOT_SERVING store-full: {}",
        serve.log_text()
    );
    let refused_before = load.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused_before > 0, "nothing was refused");

    // Room again: it recovers by itself, no restart.
    fs.resize("256m");
    let serving = async {
        for _ in 0..300 {
            if let Some((true, None)) = health(&serve.addr, &state).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(serving.await, "never SERVING again: {}", serve.log_text());
    let after = delivered();
    assert!(
        wait_until(Duration::from_secs(30), || delivered() >= after + 200),
        "no issuance after the disk had room again"
    );
    let tally = load.finish().await;
    assert!(serve.proc.try_wait().is_none(), "serve exited");
    serve.proc.stop();

    let summary = format!(
        "{} delivered, refusals {:?} {:?}",
        tally.delivered.len(),
        tally.refused,
        tally.messages
    );
    println!("{summary}");
    assert!(tally.refused(Reason::StoreFull) > 0, "{summary}");
    assert_eq!(
        tally.refused.len(),
        1,
        "only store-full refusals: {summary}"
    );
    let message = &tally.messages[Reason::StoreFull.as_str()];
    assert!(message.contains("disk is full"), "{message}");
    let logged = std::fs::read_to_string(&log).unwrap();
    for line in logged.lines().filter(|l| !l.contains("enrolled")) {
        println!("serve: {line}");
    }
    assert!(logged.contains("store-full"), "{logged}");
    assert!(logged.contains("writes resume"), "{logged}");
    // Nothing lost: every certificate delivered is recorded, in a sound file.
    let serials = checked_serials(&state.join("store.db"));
    assert!(
        tally.delivered.iter().all(|s| serials.contains(s)),
        "{summary}"
    );
    assert_eq!(serials.len(), tally.delivered.len() + 2, "{summary}");
    drop(fs);
}

/// Regression: `serve` started and said SERVING on a damaged store.db; a damaged index
/// page then made renewals fail with "not in this CA's inventory".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_damaged_store_naming_it_and_starts_again_from_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init_insecure(&state);
    let mut serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let token = token(&state, &["--role", "node", "--uses", "1000"]);
    let load = Load::start(&serve.addr, &token, 8, 2, 64).await;
    assert!(wait_until(Duration::from_secs(30), || {
        load.delivered.load(std::sync::atomic::Ordering::Relaxed) >= 300
    }));
    let tally = load.finish().await;

    // An online backup, while serve runs.
    let backup = dir.path().join("backups").join("store-1.db");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let out = run(
        "ca-server",
        &[
            "store",
            "backup",
            "--state-dir",
            state.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("integrity check: ok"),
        "{}",
        text(&out)
    );
    serve.proc.stop();

    // The root page of the serial index, overwritten with noise.
    let db = state.join("store.db");
    let (page_size, root): (i64, i64) = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        (
            conn.query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap(),
            conn.query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_certificates_1'",
                [],
                |r| r.get(0),
            )
            .unwrap(),
        )
    };
    let mut bytes = std::fs::read(&db).unwrap();
    let at = usize::try_from(page_size * (root - 1)).unwrap();
    let noise = ring_noise(usize::try_from(page_size).unwrap());
    bytes[at..at + noise.len()].copy_from_slice(&noise);
    std::fs::write(&db, bytes).unwrap();

    let state_arg = state.to_str().unwrap();
    let refused = run(
        "ca-server",
        &[
            "serve",
            "--state-dir",
            state_arg,
            "--insecure-no-passphrase",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    expect_exit(&refused, Reason::StoreCorrupt);
    let said = stderr(&refused);
    assert!(said.contains(&db.display().to_string()), "{said}");
    assert!(said.contains("store backup"), "{said}");
    // A backup of a damaged store is refused too, and leaves nothing behind.
    let second = dir.path().join("backups").join("store-2.db");
    let out = run(
        "ca-server",
        &[
            "store",
            "backup",
            "--state-dir",
            state_arg,
            "--out",
            second.to_str().unwrap(),
        ],
    );
    expect_exit(&out, Reason::StoreCorrupt);
    assert!(!second.exists());
    assert_eq!(
        std::fs::read_dir(second.parent().unwrap()).unwrap().count(),
        1,
        "a partial backup was left behind"
    );

    // Restored as the backup command said: the CA starts and holds what it issued.
    for leftover in ["store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(state.join(leftover));
    }
    std::fs::copy(&backup, &db).unwrap();
    let serials = checked_serials(&db);
    assert!(tally.delivered.iter().all(|s| serials.contains(s)));
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    assert_eq!(health(&serve.addr, &state).await.map(|h| h.0), Some(true));
}

/// A page of noise (not all zero: a zeroed page can pass for an empty one).
fn ring_noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `faketime OFFSET ca-client ARGS...`: a client whose clock is off by OFFSET.
fn skewed_client(offset: &str, args: &[&str]) -> std::process::Output {
    Command::new("faketime")
        .args(["-f", offset])
        .arg(bin("ca-client"))
        .args(args)
        .output()
        .expect("faketime (Debian's faketime package; scripts/install-deps.sh installs it)")
}

fn uses_of_the_only_node_token(state: &Path) -> u64 {
    let out = run(
        "ca-server",
        &[
            "token",
            "list",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let tokens = list.as_array().cloned().unwrap_or_default();
    let node: Vec<_> = tokens.iter().filter(|t| t["role"] == "node").collect();
    assert_eq!(node.len(), 1, "{list}");
    node[0]["uses"].as_u64().unwrap()
}

/// Regression: a client ten minutes behind enrolled, the CA spent the token's use, the
/// client refused the not-yet-valid certificate (exit 27), and the retry with the right
/// clock got "no uses left"; `check` called that certificate EXPIRED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ten_minutes_behind_is_refused_before_its_token_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init_insecure(&state);
    let creds = dir.path().join("node");
    let enroll = |server: &str, token: &str| {
        vec![
            "enroll".to_string(),
            "--server".into(),
            server.into(),
            "--token".into(),
            token.into(),
            "--out".into(),
            creds.display().to_string(),
            "--no-default-sans".into(),
            "--name".into(),
            "skewed".into(),
            "--san".into(),
            "skewed.example.com".into(),
        ]
    };

    // A CA started just now: its own TLS certificate (backdated five minutes) is not
    // valid yet for this client; the handshake fails, in words, before anything is sent.
    {
        let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
        let single = token(&state, &["--role", "node"]);
        let out = skewed_client("-10m", &args(&enroll(&serve.addr, &single)));
        expect_exit(&out, Reason::ClockSkew);
        let said = stderr(&out);
        assert!(said.contains("clock is behind"), "{said}");
        assert!(
            !said.contains("Context") && !said.contains("UnixTime"),
            "{said}"
        );
        assert_eq!(uses_of_the_only_node_token(&state), 0);
        // The same token, with the right clock.
        let out = run("ca-client", &args(&enroll(&serve.addr, &single)));
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(uses_of_the_only_node_token(&state), 1);
        // A clock ten minutes behind sees a certificate that is not valid yet.
        let check = skewed_client("-10m", &["check", "--out", creds.to_str().unwrap()]);
        assert_eq!(check.status.code(), Some(2), "{}", text(&check));
        assert!(
            stdout(&check).starts_with("NOT YET VALID client "),
            "{}",
            text(&check)
        );
        let status = skewed_client("-10m", &["status", "--out", creds.to_str().unwrap()]);
        assert!(
            stdout(&status).contains("NOT YET VALID"),
            "{}",
            text(&status)
        );
        assert!(!stdout(&status).contains("EXPIRED"), "{}", text(&status));
    }

    // A CA whose clock is ten minutes ahead of this client's, with a TLS certificate the
    // client accepts (issued before the CA's clock moved on): the trust bundle tells the
    // client the CA's time, and it refuses before it enrolls.
    let other = dir.path().join("other");
    init_insecure(&other);
    let serve = ServeProcess::start(
        &other,
        &["--insecure-no-passphrase"],
        &[
            ("LD_PRELOAD", &libfaketime()),
            ("FAKETIME", "+10m"),
            ("FAKETIME_START_AFTER_SECONDS", "3"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let single = token(&other, &["--role", "node"]);
    // Its clock has moved on once first contact (which reads the trust bundle and spends
    // nothing) says this client is behind.
    let pin = single.parse::<dtca_pki::token::JoinToken>().unwrap().root;
    let addr = dtca_common::tls::ServerAddr::parse(&serve.addr).unwrap();
    let mut moved = false;
    for _ in 0..200 {
        match ca_client::ca::first_contact(&addr, pin).await {
            Err(e) if e.reason() == Reason::ClockSkew => {
                moved = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("first contact: {e}"),
        }
    }
    assert!(moved, "the CA's clock never moved: {}", serve.log_text());
    let _ = std::fs::remove_dir_all(&creds);
    let out = run("ca-client", &args(&enroll(&serve.addr, &single)));
    expect_exit(&out, Reason::ClockSkew);
    let said = stderr(&out);
    assert!(said.contains("behind the CA's"), "{said}");
    assert!(said.contains("nothing was spent"), "{said}");
    assert!(!creds.join("cert.pem").exists());
    assert_eq!(uses_of_the_only_node_token(&other), 0);
    // With the CA's time, the same token works.
    let out = skewed_client("+10m", &args(&enroll(&serve.addr, &single)));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(uses_of_the_only_node_token(&other), 1);
}

/// Debian's libfaketime, for a server whose clock moves after it started.
fn libfaketime() -> String {
    for candidate in [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ] {
        if Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!("libfaketime not found (apt-get install faketime)");
}
