//! Ctrl-C and hung runs.
//!
//! Every timed process runs in its own process group, so a Ctrl-C at the terminal reaches only
//! the bench: the first SIGINT/SIGTERM sets a flag, the run under way finishes (they last
//! milliseconds) and the bench stops and removes what it created. A second one kills the process
//! group of the run under way, for when that run hangs, and those of the instances the memory,
//! density and net benchmarks keep running ([`track`]): everything stops at once. A watchdog
//! thread kills a run that exceeds [`RUN_TIMEOUT`], which the bench then reports as that
//! subject's failure.

use std::process::Child;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use super::error::{BenchError, Step};
use super::reap;

/// The longest one run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest the bench waits for a run: [`RUN_TIMEOUT`], then time for the watchdog's kill
/// to take effect. A run still there after that is stopped and left behind
/// ([`super::reap::stop`]).
pub const WAIT_LIMIT: Duration = Duration::from_secs(75);

static CANCELLED: AtomicBool = AtomicBool::new(false);
/// Process group of the run under way; 0 when none.
static CURRENT_PGID: AtomicI32 = AtomicI32::new(0);
/// When the run under way must be killed, in ns since [`base`].
static DEADLINE_NS: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicBool = AtomicBool::new(false);
/// How many runs the watchdog has killed so far.
static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
/// Set by the second Ctrl-C: every tracked process group is killed, and any tracked later too.
static KILLED: AtomicBool = AtomicBool::new(false);
/// Most instances running at once (density's largest N is far below).
const MAX_INSTANCES: usize = 1024;
/// Process groups of the running instances ([`track`]); 0 is a free slot.
static INSTANCES: [AtomicI32; MAX_INSTANCES] = [const { AtomicI32::new(0) }; MAX_INSTANCES];

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only atomics and kill(2): both async-signal-safe.
    if CANCELLED.swap(true, Ordering::SeqCst) {
        KILLED.store(true, Ordering::SeqCst);
        kill_group(CURRENT_PGID.load(Ordering::SeqCst));
        kill_tracked();
    }
}

/// SIGKILL to process group `pgid` (none when 0). Async-signal-safe.
fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill takes integers only; a negative pid names a process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Kills the process group of every tracked instance. Async-signal-safe.
fn kill_tracked() {
    for slot in &INSTANCES {
        kill_group(slot.load(Ordering::SeqCst));
    }
}

/// Tracks the instance whose process group leader is `pid` until [`untrack`], for the second
/// Ctrl-C; after that one, kills it at once.
pub fn track(pid: u32) {
    let pgid = pid as i32;
    // Untracked when all slots are taken: then only the first Ctrl-C's orderly stop ends it.
    let _ = INSTANCES.iter().find(|slot| {
        slot.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    // Stored before this check, so the handler sees the slot or this sees the flag.
    if KILLED.load(Ordering::SeqCst) {
        kill_group(pgid);
    }
}

/// Stops tracking the instance `pid` (it ended).
pub fn untrack(pid: u32) {
    let pgid = pid as i32;
    for slot in &INSTANCES {
        let _ = slot.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Installs the SIGINT/SIGTERM handlers and starts the watchdog thread.
pub fn install() -> Result<(), BenchError> {
    base();
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `on_signal` only touches atomics and calls kill(2), which are
        // async-signal-safe; no other handler is replaced that the program relies on.
        unsafe { sigaction(sig, &action) }.step(|| "Cannot install the Ctrl-C handler".into())?;
    }
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(watchdog)
        .step(|| "Cannot start the benchmark's watchdog thread".into())?;
    Ok(())
}

/// True once the user asked the bench to stop.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Watches the run whose process group leader is `pid` until [`disarm`].
pub fn arm(pid: u32) {
    let deadline = base().elapsed() + RUN_TIMEOUT;
    TIMED_OUT.store(false, Ordering::SeqCst);
    DEADLINE_NS.store(deadline.as_nanos() as u64, Ordering::SeqCst);
    CURRENT_PGID.store(pid as i32, Ordering::SeqCst);
}

/// Stops watching; returns true when the watchdog killed the run.
pub fn disarm() -> bool {
    CURRENT_PGID.store(0, Ordering::SeqCst);
    TIMED_OUT.swap(false, Ordering::SeqCst)
}

/// Ends the watch of a run ([`disarm`]) and says how it ended: what its wait gave (`ended`),
/// or an error when it was still running at its wait limit (`ended` is `None`: [`WAIT_LIMIT`];
/// it is stopped now, with [`reap::stop`], and `late` says what it did not do in time, e.g.
/// "the run did not finish") or when the watchdog killed it.
pub fn settle<T>(child: Child, ended: Option<T>, late: &str) -> Result<T, String> {
    let killed = disarm();
    let Some(ended) = ended else {
        return Err(format!(
            "{late} within {} s: {}",
            RUN_TIMEOUT.as_secs(),
            reap::stop(child)
        ));
    };
    if killed {
        return Err(format!(
            "the run did not finish within {} s and was killed",
            RUN_TIMEOUT.as_secs()
        ));
    }
    Ok(ended)
}

/// How many runs the watchdog has killed for exceeding [`RUN_TIMEOUT`] so far.
pub fn timeouts() -> u64 {
    TIMEOUTS.load(Ordering::SeqCst)
}

/// Counts a timeout as the watchdog does, for tests of what the bench does after one.
#[cfg(test)]
pub fn count_timeout() {
    TIMEOUTS.fetch_add(1, Ordering::SeqCst);
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let pgid = CURRENT_PGID.load(Ordering::SeqCst);
        if pgid > 0 && base().elapsed().as_nanos() as u64 > DEADLINE_NS.load(Ordering::SeqCst) {
            TIMED_OUT.store(true, Ordering::SeqCst);
            TIMEOUTS.fetch_add(1, Ordering::SeqCst);
            // A run that is not done after RUN_TIMEOUT is hung: kill its whole process group.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
            CURRENT_PGID.store(0, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command};

    /// An instance as the bench starts one: the leader of its own process group, here with a
    /// child of its own, which must go too. Returns it and its child's pid.
    fn spawn() -> (Child, u32) {
        let mut c = Command::new("sh")
            .args(["-c", "sleep 1000 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let children = format!("/proc/{}/task/{}/children", c.id(), c.id());
        for _ in 0..500 {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                return (c, pid.parse().unwrap());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(c.id() as i32);
        let _ = c.wait();
        panic!("sh started no sleep");
    }

    /// Whether `pid` still runs (a zombie or a vanished pid does not).
    fn runs(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, t)| t.split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    }

    #[test]
    fn a_run_past_its_wait_limit_is_stopped_and_reported_late() {
        let c = Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let e = settle::<()>(c, None, "the run did not finish").unwrap_err();
        assert_eq!(
            e,
            "the run did not finish within 60 s: stopped with SIGTERM"
        );
        let mut c = Command::new("true").spawn().unwrap();
        let st = c.wait().unwrap();
        assert_eq!(settle(c, Some(st), "the run did not finish"), Ok(st));
    }

    #[test]
    fn the_second_ctrl_c_kills_every_tracked_instance() {
        let mut tracked = [spawn(), spawn()];
        let (mut other, other_child) = spawn();
        for (c, _) in &tracked {
            track(c.id());
        }
        // The handler's work on a second signal (the flags are left alone: run_retrying's tests
        // in this binary read CANCELLED).
        kill_tracked();
        for (c, _) in &mut tracked {
            let st = c.wait().unwrap();
            untrack(c.id());
            assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
        }
        let untracked_ran = other.try_wait().unwrap().is_none() && runs(other_child);
        kill_group(other.id() as i32);
        other.wait().unwrap();
        assert!(untracked_ran, "an untracked group was killed");
        // The children went with their groups (SIGKILL is delivered to each member in turn).
        for (_, child) in &tracked {
            let mut n = 0;
            while runs(*child) && n < 500 {
                std::thread::sleep(Duration::from_millis(10));
                n += 1;
            }
            assert!(!runs(*child), "an instance's child survived");
        }
        assert!(INSTANCES.iter().all(|s| s.load(Ordering::SeqCst) == 0));
    }
}
