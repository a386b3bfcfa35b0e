//! Logging to syslog (LOG_USER) and stderr, as the original collector does, plus a rate limiter
//! so that per-packet problems are summarised instead of logged one by one.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static OPEN: Once = Once::new();

/// Shows debug messages too (`-v`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

fn emit(priority: libc::c_int, tag: &str, msg: &str) {
    OPEN.call_once(|| {
        // SAFETY: the identifier is a static NUL-terminated string that lives for the program.
        unsafe { libc::openlog(c"xenoeye".as_ptr(), libc::LOG_PID, libc::LOG_USER) };
    });
    eprintln!("xenoeye: {tag}{msg}");
    if let Ok(c) = CString::new(msg.replace('\0', " ")) {
        // SAFETY: "%s" with one NUL-terminated string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
    }
}

pub fn error(msg: &str) {
    emit(libc::LOG_ERR, "error: ", msg);
}

pub fn warn(msg: &str) {
    emit(libc::LOG_WARNING, "warning: ", msg);
}

pub fn info(msg: &str) {
    emit(libc::LOG_INFO, "", msg);
}

pub fn debug(msg: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        emit(libc::LOG_DEBUG, "debug: ", msg);
    }
}

/// A debug-priority line that is always written (the flow dump asked for by configuration).
pub fn debug_always(msg: &str) {
    emit(libc::LOG_DEBUG, "", msg);
}

/// Lets a message through at most once per interval; counts what it held back.
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    pub suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        RateLimit { every, last: None, suppressed: 0 }
    }

    /// True when a message may be logged now (then `suppressed` tells how many were held back).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}
