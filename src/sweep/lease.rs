//! Claims on the shared volume: one lease file per attempt at a run, `RUN/lease-<gen>.json`.
//!
//! A worker claims a run by creating the next generation's file; creation is exclusive (a hard link of a fully
//! written temp file, so nobody reads it half-written), so of two workers racing for the same generation exactly
//! one wins. The holder rewrites its file with a fresh heartbeat every `lease_seconds / 4`. A lease is free when
//! it was released, when its heartbeat is older than `lease_seconds`, or, on the same host (same hostname, boot
//! and PID namespace), at once when its process is gone. A holder that finds a newer generation than its own was
//! taken over (it had stalled past `lease_seconds`) and exits at once without writing anything more.
//!
//! Heartbeats compare wall clocks across hosts: keep them NTP-synced, and keep `lease_seconds` well above the skew.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;

/// What a lease file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub gen: u64,
    pub host: String,
    /// Hostname, boot id and PID namespace: equal means `pid` can be checked from here.
    pub host_key: String,
    pub pid: u32,
    /// The process start time (clock ticks since boot), so a reused PID is not mistaken for the holder.
    pub proc_start: Option<u64>,
    pub started_unix_ms: u64,
    pub heartbeat_unix_ms: u64,
    #[serde(default)]
    pub released: bool,
}

/// Why a claim did not succeed.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// A live worker holds the run.
    Held(LeaseInfo),
    Io(PathBuf, std::io::Error),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The host's name for messages.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn host_key() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    format!("{}|{}|{}", hostname(), boot.trim(), ns)
}

/// Start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat), if it exists and has not
/// exited: a zombie (state `Z`, or `X`: dead, not yet reaped, e.g. a SIGKILLed worker whose launcher was killed
/// too) holds nothing.
pub(crate) fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

pub(super) fn lease_path(run_dir: &Path, gen: u64) -> PathBuf {
    run_dir.join(format!("lease-{gen:06}.json"))
}

/// The newest lease file of a run (highest generation), with its parsed contents when readable.
pub(crate) fn newest(run_dir: &Path) -> Option<(u64, PathBuf, Option<LeaseInfo>)> {
    let gen = std::fs::read_dir(run_dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("lease-")?.strip_suffix(".json")?.parse::<u64>().ok()
        })
        .max()?;
    let path = lease_path(run_dir, gen);
    let info = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    Some((gen, path, info))
}

/// Whether this lease still holds the run (see the module docs for the rules).
pub(crate) fn is_live(l: &LeaseInfo, lease_seconds: f64, now: u64) -> bool {
    if l.released {
        return false;
    }
    // The PID shortcut only where a PID means the same process here: same hostname, boot and PID namespace,
    // all of them known (Linux /proc). Elsewhere only the heartbeat counts.
    let here = host_key();
    let checkable = !here.contains("||") && !here.ends_with('|') && proc_start(std::process::id()).is_some();
    if checkable && l.host_key == here && (proc_start(l.pid).is_none() || proc_start(l.pid) != l.proc_start) {
        return false;
    }
    (now.saturating_sub(l.heartbeat_unix_ms) as f64) < lease_seconds * 1000.0
}

/// The live holder of a run, if any. A newest lease file that cannot be read or parsed counts as live (it may be
/// one being created on a file system without hard links) unless it is known to be older than `lease_seconds`.
pub(crate) fn holder(run_dir: &Path, lease_seconds: f64) -> Option<LeaseInfo> {
    let (gen, path, info) = newest(run_dir)?;
    let now = now_ms();
    match info {
        Some(l) => is_live(&l, lease_seconds, now).then_some(l),
        None => {
            let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            let stale = age.is_some_and(|a| a.as_secs_f64() >= lease_seconds);
            (!stale).then(|| LeaseInfo {
                gen,
                host: "(a lease file being written or unreadable)".into(),
                host_key: String::new(),
                pid: 0,
                proc_start: None,
                started_unix_ms: now,
                heartbeat_unix_ms: now,
                released: false,
            })
        }
    }
}

/// True while `gen` is still the newest lease generation of `run_dir` (nobody took the run over).
pub(crate) fn still_newest(run_dir: &Path, gen: u64) -> bool {
    newest(run_dir).is_none_or(|(g, _, _)| g <= gen)
}

/// A held lease; heartbeats on a background thread until released or dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    path: PathBuf,
    info: LeaseInfo,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Claims `run_dir` (which must exist) unless a live worker holds it.
    pub(crate) fn claim(run_dir: &Path, lease_seconds: f64) -> Result<Lease, ClaimError> {
        for _ in 0..5 {
            let gen = match newest(run_dir) {
                None => 1,
                Some((g, _, _)) => {
                    if let Some(l) = holder(run_dir, lease_seconds) {
                        return Err(ClaimError::Held(l));
                    }
                    g + 1
                }
            };
            let now = now_ms();
            let pid = std::process::id();
            let info = LeaseInfo {
                gen,
                host: hostname(),
                host_key: host_key(),
                pid,
                proc_start: proc_start(pid),
                started_unix_ms: now,
                heartbeat_unix_ms: now,
                released: false,
            };
            let path = lease_path(run_dir, gen);
            match create_exclusive(&path, &info) {
                Ok(()) => {
                    // Someone may have jumped a generation ahead between our look and our create.
                    if newest(run_dir).is_some_and(|(g, _, _)| g > gen) {
                        continue;
                    }
                    return Ok(Lease::start(path, info, lease_seconds));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ClaimError::Io(path, e)),
            }
        }
        match holder(run_dir, lease_seconds) {
            Some(l) => Err(ClaimError::Held(l)),
            None => Err(ClaimError::Io(run_dir.into(), std::io::Error::other("lost every race for the lease"))),
        }
    }

    fn start(path: PathBuf, info: LeaseInfo, lease_seconds: f64) -> Lease {
        let stop = Arc::new(AtomicBool::new(false));
        let (p, mut beat, s) = (path.clone(), info.clone(), Arc::clone(&stop));
        let every = Duration::from_secs_f64((lease_seconds / 4.0).max(0.2));
        let thread = std::thread::spawn(move || {
            let run_dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            while !s.load(Ordering::SeqCst) {
                sleep_unless(&s, every);
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if !still_newest(&run_dir, beat.gen) {
                    tell!(
                        "spotrun: lost the lease on {} to a newer claim (this worker stalled for longer than \
                         lease_seconds); stopping at once without writing anything",
                        run_dir.display()
                    );
                    // _exit: no atexit handlers or C++ static destructors while the main thread is in libtorch.
                    crate::ffi::exit_now(super::error::EXIT_BUSY as i32);
                }
                beat.heartbeat_unix_ms = now_ms();
                if let Ok(bytes) = serde_json::to_vec(&beat) {
                    let _ = write_atomic(&p, &bytes);
                }
            }
        });
        Lease { path, info, stop, thread: Some(thread) }
    }

    pub(crate) fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// Stops the heartbeat without touching the lease file: for a worker that found the run taken over.
    pub(crate) fn abandon(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops the heartbeat and marks the lease released, so the next claim need not wait.
    pub(crate) fn release(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let mut info = self.info.clone();
            info.released = true;
            info.heartbeat_unix_ms = now_ms();
            if let Ok(bytes) = serde_json::to_vec(&info) {
                let _ = write_atomic(&self.path, &bytes);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.finish();
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
}

/// Creates `path` with `info` only if it does not exist; readers never see a partial file where hard links work.
fn create_exclusive(path: &Path, info: &LeaseInfo) -> std::io::Result<()> {
    create_new_file(path, &serde_json::to_vec(info).map_err(std::io::Error::other)?)
}

/// Creates `path` holding `bytes` only if no file of that name exists (`AlreadyExists` otherwise): written and
/// fsynced under a temporary name, then hard-linked into place (`link(2)` is atomic, also on NFS), so the name
/// never shows a partial file. Where hard links fail (some FUSE volumes), an exclusive create, then the write.
pub(super) fn create_new_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", crate::checkpoint::unique_suffix()));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            // No hard links (some FUSE volumes): exclusive create, then write.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
            f.write_all(bytes)?;
            f.sync_all()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_wins_and_release_frees_the_run() {
        let d = tempfile::tempdir().unwrap();
        let a = Lease::claim(d.path(), 30.0).unwrap();
        assert_eq!(a.info().gen, 1);
        match Lease::claim(d.path(), 30.0) {
            Err(ClaimError::Held(l)) => assert_eq!(l.pid, std::process::id()),
            _ => panic!("second claim must see the first"),
        }
        a.release();
        let b = Lease::claim(d.path(), 30.0).unwrap();
        assert_eq!(b.info().gen, 2);
    }

    #[test]
    fn stale_and_dead_leases_are_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let now = now_ms();
        let other_host = LeaseInfo {
            gen: 3,
            host: "elsewhere".into(),
            host_key: "elsewhere|x|y".into(),
            pid: 1,
            proc_start: Some(1),
            started_unix_ms: now - 100_000,
            heartbeat_unix_ms: now - 100_000,
            released: false,
        };
        std::fs::write(lease_path(d.path(), 3), serde_json::to_vec(&other_host).unwrap()).unwrap();
        assert!(!is_live(&other_host, 60.0, now), "100 s old heartbeat, lease_seconds 60");
        let fresh = LeaseInfo { heartbeat_unix_ms: now, ..other_host.clone() };
        assert!(is_live(&fresh, 60.0, now), "a fresh lease from another host is live");
        let dead_here = LeaseInfo { host_key: host_key(), pid: u32::MAX - 1, heartbeat_unix_ms: now, ..other_host };
        assert!(!is_live(&dead_here, 60.0, now), "a lease of a dead process on this host is free at once");
        let l = Lease::claim(d.path(), 60.0).unwrap();
        assert_eq!(l.info().gen, 4);
    }

    #[test]
    fn an_exited_worker_not_yet_reaped_holds_no_lease() {
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let pid = child.id();
        let now = now_ms();
        let started = proc_start(pid);
        let lease = LeaseInfo {
            gen: 1,
            host: hostname(),
            host_key: host_key(),
            pid,
            proc_start: started,
            started_unix_ms: now,
            heartbeat_unix_ms: now,
            released: false,
        };
        assert!(started.is_some() && is_live(&lease, 60.0, now), "a running holder");
        let state = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let t0 = std::time::Instant::now();
        while !state().rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')) {
            assert!(t0.elapsed().as_secs() < 10, "the child never exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!is_live(&lease, 60.0, now_ms()), "a zombie (exited, not yet reaped) holds nothing");
        child.wait().unwrap();
    }
}
