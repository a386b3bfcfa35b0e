//! Logging to syslog (LOG_USER) and stderr, as the original collector does, plus a rate limiter
//! so that per-packet problems are summarised instead of logged one by one.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);
static OPEN: Once = Once::new();

/// Shows debug messages too (`-v`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Writes no message at all: for the fuzzers, whose millions of configurations (each with
/// its warnings) would flood syslog.
pub fn set_quiet(on: bool) {
    QUIET.store(on, Ordering::Relaxed);
}

/// A count for a log line, singular for one: `counted(1, "worker")` is "1 worker".
pub fn counted(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn emit(priority: libc::c_int, tag: &str, msg: &str) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
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

/// Lets through at most `burst` messages per interval; counts what it held back.
pub struct RateLimit {
    every: Duration,
    burst: u32,
    /// Start of the current interval, and the messages let through in it.
    since: Option<Instant>,
    passed: u32,
    pub suppressed: u64,
}

impl RateLimit {
    /// One message per interval.
    pub fn new(every: Duration) -> Self {
        Self::with_burst(every, 1)
    }

    /// `burst` messages per interval: single problems are each seen, a flood of them is not.
    pub fn with_burst(every: Duration, burst: u32) -> Self {
        RateLimit { every, burst: burst.max(1), since: None, passed: 0, suppressed: 0 }
    }

    /// True when a message may be logged now (then `suppressed` tells how many were held back).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.since {
            Some(t) if now.duration_since(t) < self.every => {
                let room = self.passed < self.burst;
                self.passed += room as u32;
                self.suppressed += !room as u64;
                room
            }
            _ => {
                (self.since, self.passed) = (Some(now), 1);
                true
            }
        }
    }

    /// Logs `msg()` with `log` (say [`warn`]) when allowed now, saying how many like it were
    /// held back since the last one logged.
    pub fn log(&mut self, log: fn(&str), msg: impl FnOnce() -> String) {
        if self.allow(Instant::now()) {
            let mut text = msg();
            if self.suppressed > 0 {
                text.push_str(&format!(" ({} more like this not logged)", self.suppressed));
                self.suppressed = 0;
            }
            log(&text);
        }
    }

    /// Logs how many messages about `what` were held back, once their interval is over (or
    /// `now` when `at_end`), so that a flood that stops is still summed up.
    pub fn log_held_back(&mut self, log: fn(&str), what: &str, at_end: bool) {
        let over = self.since.is_none_or(|t| t.elapsed() >= self.every);
        if self.suppressed > 0 && (over || at_end) {
            log(&format!("{} more {what} not logged", self.suppressed));
            (self.suppressed, self.since) = (0, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_interval_then_counted() {
        let t0 = Instant::now();
        let mut r = RateLimit::with_burst(Duration::from_secs(10), 3);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let got: Vec<bool> = [0, 1, 2, 3, 4, 9_999, 10_000, 10_001].iter().map(|&ms| r.allow(at(ms))).collect();
        assert_eq!(got, [true, true, true, false, false, false, true, true]);
        assert_eq!(r.suppressed, 3);
        let mut one = RateLimit::new(Duration::from_secs(10));
        assert_eq!([0, 5_000, 10_000].map(|ms| one.allow(at(ms))), [true, false, true]);
    }

    thread_local! {
        static LINES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn record(line: &str) {
        LINES.with(|l| l.borrow_mut().push(line.to_string()));
    }

    #[test]
    fn what_was_held_back_is_summed_up() {
        let mut r = RateLimit::with_burst(Duration::from_secs(3600), 2);
        for i in 0..5 {
            r.log(record, || format!("problem {i}"));
        }
        r.log_held_back(record, "problems", false);
        assert_eq!(LINES.with(|l| l.borrow().clone()), ["problem 0", "problem 1"], "the interval is not over");
        r.log_held_back(record, "problems", true);
        r.log(record, || "problem 5".into());
        assert_eq!(LINES.with(|l| l.borrow().clone()), ["problem 0", "problem 1", "3 more problems not logged", "problem 5"]);
    }
}
