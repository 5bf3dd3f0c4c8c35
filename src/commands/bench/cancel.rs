//! Ctrl-C and hung runs.
//!
//! Every timed process runs in its own process group, so a Ctrl-C at the terminal reaches only
//! the bench: the first SIGINT/SIGTERM sets a flag, the run under way finishes (they last
//! milliseconds) and the bench stops and removes what it created. A second one kills the process
//! group of the run under way, for when that run hangs. A watchdog thread kills a run that
//! exceeds [`RUN_TIMEOUT`], which the bench then reports as that subject's failure.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

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

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only atomics and kill(2): both async-signal-safe.
    if CANCELLED.swap(true, Ordering::SeqCst) {
        let pgid = CURRENT_PGID.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill takes integers only; a negative pid names the run's process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers and starts the watchdog thread.
pub fn install() -> anyhow::Result<()> {
    base();
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `on_signal` only touches atomics and calls kill(2), which are
        // async-signal-safe; no other handler is replaced that the program relies on.
        unsafe { sigaction(sig, &action) }.context("Cannot install the Ctrl-C handler")?;
    }
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(watchdog)
        .context("Cannot start the benchmark's watchdog thread")?;
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
