//! The hook thread: what happens when a limit starts to hold or goes back to normal, off the
//! flow path.
//!
//! Workers put [`Event`]s in a bounded queue, never blocking on it (when it is full, the
//! moving averages hold starts and ends and drop rewrites: see `Mavg::emit`). Scripts wait
//! in a lane per limit, and lanes take turns (see [`turns`]): a storm of one limit's alerts
//! does not hold up another limit's. A limit whose lane is full has its events parked in it
//! until it drains; this thread takes no event while too many are parked, so no script is
//! dropped (a stop leaves those still waiting: see [`HookHandle::stopping`]). It writes the
//! notification files
//! (created at start, rewritten every 3 seconds while the limit holds, deleted at
//! back-to-normal) and runs the action and back-to-normal scripts: directly (no shell) with
//! the original's argv, with a bound on how many run at once, a timeout after which a script
//! is killed, every exit status logged, and every child reaped.
//!
//! A notification file stays until its alert's back2norm script starts: whatever ends the
//! collector before that (a stop's grace over, a crash, a kill), the file is there, the next
//! start takes the alert up, and its back2norm script runs when it ends. A mitigation an
//! action script started is never left on for want of its back2norm script.

pub mod lua;
pub mod lua_pool;
pub mod turns;

use crate::fsutil::{rewrite_in_place, write_atomically};
use crate::log;
use crate::objects::mavg::{Event, LimitKind, Phase};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A script waiting longer than this is logged (once per this time at most): the alerts its
/// limit starts are reacted to that late.
const BEHIND: Duration = Duration::from_secs(60);

/// From this many `max-scripts` on, the last free slot is kept for a limit with no script
/// running (see `Hooks::next_script`).
const RESERVE_FROM: usize = 4;

/// How long a stopping collector lets queued Lua hook calls run before dropping them.
const LUA_GRACE: Duration = Duration::from_secs(5);

/// How long a stopping collector lets the hook thread go on taking alert events it is behind
/// on (a backlog of thousands of starts can take minutes of scripts): after that, those still
/// coming are left (see [`HookHandle::stopping`]).
pub const EVENT_GRACE: Duration = Duration::from_secs(5);

/// Hook settings.
#[derive(Clone, Debug)]
pub struct HookConfig {
    pub notifications_dir: PathBuf,
    /// A script still running after this is killed.
    pub script_timeout: Duration,
    /// Scripts running at once; more wait in a queue.
    pub max_scripts: usize,
    /// Scripts waiting at most per limit; the limit's further events are parked until its
    /// scripts drain (see [`turns`]).
    pub max_queued: usize,
    /// Events parked at most, in all limits; while that many are, no event is taken (see
    /// `Hooks::run`).
    pub max_parked: usize,
    /// Lua hooks' limits and writable directories.
    pub lua: lua::LuaConfig,
    /// Threads running Lua hooks (each object's hooks always on the same one).
    pub lua_threads: usize,
    /// Lua calls waiting per Lua thread beyond which they are dropped (counted).
    pub lua_queue: usize,
    /// How long a stop waits for a backlog of events ([`EVENT_GRACE`] in the collector).
    pub stop_grace: Duration,
    /// The exporters silent now (see [`SilentExporters`]); `None` in a replay.
    pub silent_exporters: Option<SilentExporters>,
}

/// The exporters whose silence the collector has logged and that have not sent since, with
/// the seconds since their last datagram. Their traffic is missing from every average, so an
/// underlimit that starts meanwhile may be theirs rather than a host's: its log line says so,
/// scripts find them in `XENOEYE_SILENT_EXPORTERS` and Lua hooks in `ev.silent_exporters`.
#[derive(Clone)]
pub struct SilentExporters(pub Arc<dyn Fn() -> Vec<SilentExporter> + Send + Sync>);

/// A silent exporter's address and the seconds since its last datagram.
pub type SilentExporter = (std::net::IpAddr, u64);

impl std::fmt::Debug for SilentExporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SilentExporters")
    }
}

/// Counters of the hook thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub events: u64,
    pub scripts_started: u64,
    pub scripts_ok: u64,
    pub scripts_failed: u64,
    pub scripts_timed_out: u64,
    pub scripts_dropped: u64,
    pub notifications_written: u64,
    pub notifications_removed: u64,
    pub notification_errors: u64,
    /// Events that did not match the alert's state here (see `Hooks::reconcile`): a start
    /// of an alert already on, an end of one not on, a rewrite of one not on.
    pub events_reconciled: u64,
    /// Events a stopping collector left, past its grace ([`HookHandle::stopping`]).
    pub events_left_at_stop: u64,
    /// Scripts still waiting when a stopping collector's grace was over: not started.
    pub scripts_left_at_stop: u64,
    /// Scripts waiting for their turn and running, now (how far behind the hooks are).
    pub scripts_waiting: u64,
    pub scripts_running: u64,
    /// Events parked behind their limit's full lane of scripts, now (see [`turns`]).
    pub events_waiting: u64,
    /// Notification rewrites skipped for coming while their limit's events were parked.
    pub rewrites_skipped: u64,
    /// Lua calls not made yet (waiting or running), now.
    pub lua_unfinished: u64,
    /// How long the oldest script waiting has waited, in ms (0: none waits): how far behind
    /// the hooks are, in time.
    pub oldest_wait_ms: u64,
    pub lua: lua::LuaStats,
}

impl HookStats {
    /// [`HookStats::oldest_wait_ms`] in whole seconds, as the status page and metrics show it.
    pub fn oldest_wait_s(&self) -> u64 {
        self.oldest_wait_ms / 1000
    }
}

/// The running hook thread.
pub struct HookHandle {
    thread: std::thread::JoinHandle<HookStats>,
    pub stats: Arc<Mutex<HookStats>>,
    stop_asked: Arc<OnceLock<Instant>>,
}

impl HookHandle {
    /// The collector is stopping: the hook thread takes the alert events it is behind on for
    /// its `stop_grace` ([`EVENT_GRACE`]) more, then leaves the rest, so that a backlog never
    /// holds a stop up for minutes (a service manager would kill the collector first). What
    /// it leaves is as a stop between the event and its handling: the notification files
    /// stay as the scripts last saw them, and the next start takes the alerts they name up
    /// again (an alert whose start was left is found again by its traffic; one whose end was
    /// left ends after its back2norm-time). It leaves the scripts still waiting then too:
    /// the files are made to say which alerts' action scripts started (see
    /// `Hooks::leave_queued`), and the stop waits only for the scripts running.
    pub fn stopping(&self) {
        let _ = self.stop_asked.set(Instant::now());
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn join(self) -> std::thread::Result<HookStats> {
        self.thread.join()
    }
}

struct Running {
    child: Child,
    started: Instant,
    what: String,
    /// Its limit's lane (see [`turns`]).
    lane: String,
}

/// A script waiting for its turn.
struct Queued {
    script: PathBuf,
    args: Vec<String>,
    /// The script and its arguments, for the log.
    what: String,
    /// Its alert's notification file name.
    alert: String,
    /// An action script (else a back2norm one).
    action: bool,
    /// Its limit's kind (for `XENOEYE_KIND`).
    kind: LimitKind,
    /// The exporters silent when its event came, space-separated (`XENOEYE_SILENT_EXPORTERS`).
    silent: String,
    /// When it was queued.
    since: Instant,
}

struct Hooks {
    cfg: HookConfig,
    lua: lua_pool::LuaPool,
    /// Scripts waiting, by limit, and events parked behind them.
    turns: turns::Turns<Queued, Event>,
    running: Vec<Running>,
    stats: HookStats,
    shared: Arc<Mutex<HookStats>>,
    /// Problems with notification files and dumps, and with scripts, are logged up to 20 per
    /// 10 seconds each (a broken script or a full disk during a flood of alerts would
    /// otherwise log a line per alert).
    file_problems: log::RateLimit,
    script_problems: log::RateLimit,
    /// When hooks behind by more than [`BEHIND`] were last logged (once per [`BEHIND`]; the
    /// check runs every loop, so a rate limit's count of lines held back would mean nothing).
    behind_told: Option<Instant>,
    /// When the collector began to stop (see [`HookHandle::stopping`]): events are left
    /// from `stop_grace` after it.
    stop_asked: Arc<OnceLock<Instant>>,
    /// The alerts on, by notification file name: started here (their action script run),
    /// or on at the start (their files were there), and not ended since.
    on: HashSet<String>,
    /// The alerts whose start has taken effect (their action script started, or they have
    /// none) and whose end has not (their back2norm script has not started, or they have
    /// none and ended): what the notification files must say when scripts are left.
    in_effect: HashSet<String>,
}

/// See [`Hooks::file_problems`].
fn problem_limit() -> log::RateLimit {
    log::RateLimit::with_burst(Duration::from_secs(10), 20)
}

/// Starts the hook thread; it ends when every event sender is gone and its scripts finished
/// (or were killed at their timeout).
pub fn spawn(cfg: HookConfig, rx: Receiver<Event>, exports: Option<Receiver<crate::export::ExportEvent>>) -> HookHandle {
    let shared = Arc::new(Mutex::new(HookStats::default()));
    let stats = shared.clone();
    let stop_asked = Arc::new(OnceLock::new());
    let stop_asked_here = stop_asked.clone();
    let thread = std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || {
            let lua = lua_pool::LuaPool::spawn(&cfg.lua, cfg.lua_threads, cfg.lua_queue);
            let (file_problems, script_problems) = (problem_limit(), problem_limit());
            let on = alerts_on(&cfg.notifications_dir);
            let in_effect = on.clone();
            let turns = turns::Turns::new(cfg.max_queued);
            let mut h = Hooks { cfg, lua, turns, running: Vec::new(), stats: HookStats::default(), shared, file_problems, script_problems, behind_told: None, stop_asked: stop_asked_here, on, in_effect };
            h.run(rx, exports);
            h.stats
        })
        .expect("spawn hook thread");
    HookHandle { thread, stats, stop_asked }
}

/// The alerts on when the hook thread starts: one per file in the notifications directory
/// (left by an earlier run; taken up again by their moving averages, or listed as not).
fn alerts_on(dir: &std::path::Path) -> HashSet<String> {
    let names = std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()?.file_name().into_string().ok());
    names.collect()
}

/// An event's lane: its limit's (see [`turns`]), named by its notification files' prefix.
fn lane_of(ev: &Event) -> &str {
    &ev.limit_spec().prefix
}

/// Silent exporters' addresses, as Lua hooks and scripts get them.
fn addresses(silent: &[SilentExporter]) -> Vec<String> {
    silent.iter().map(|(ip, _)| ip.to_string()).collect()
}

/// Local time as ctime(3) writes it, without the newline: `Wed Jan 25 23:10:25 2023`.
pub fn ctime(unix: u64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers given, of the sizes given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 64];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c"%a %b %e %H:%M:%S %Y".as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Rates and thresholds go to scripts and files as whole numbers.
fn whole(v: f64) -> String {
    if v.is_finite() {
        format!("{}", v.round() as i64)
    } else {
        "0".into()
    }
}

impl Hooks {
    fn run(&mut self, rx: Receiver<Event>, exports: Option<Receiver<crate::export::ExportEvent>>) {
        loop {
            // Scripts running are polled for their end and timeout; with none, the thread
            // sleeps until an event comes (exports' Lua hooks wait at most 100 ms), so an idle
            // collector wakes it a few times a second, not fifty. While scripts wait for a
            // free slot, a finished one is replaced within 2 ms (at 20 ms, quick scripts ran
            // at most `max-scripts` per 20 ms: 800 a second, half of what fork allows).
            let busy = !self.running.is_empty() || self.turns.queued() > 0 || self.lua.backlog() > 0;
            let wait = Duration::from_millis(match (self.turns.queued() > 0, busy, exports.is_some()) {
                (true, ..) => 2,
                (false, true, _) => 20,
                (false, false, true) => 100,
                (false, false, false) => 250,
            });
            // While `max_parked` events are parked, no event is taken: the queue before this
            // thread fills and the moving averages hold the starts and ends (see `Mavg::emit`),
            // rather than this thread dropping scripts.
            if self.grace_over() {
                // Stopping, and the grace for a backlog is over: what still comes is left.
                match rx.recv_timeout(wait) {
                    Ok(_) => self.stats.events_left_at_stop += 1,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else if self.turns.parked() >= self.cfg.max_parked {
                std::thread::sleep(wait);
            } else {
                match rx.recv_timeout(wait) {
                    Ok(ev) => {
                        self.event(ev);
                        // A flood: handle what is queued, then hand its Lua calls over at once.
                        for _ in 0..1023 {
                            if self.turns.parked() >= self.cfg.max_parked {
                                break;
                            }
                            match rx.try_recv() {
                                Ok(ev) => self.event(ev),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if let Some(ex) = &exports {
                while let Ok(e) = ex.try_recv() {
                    self.export(e);
                }
            }
            self.lua.flush();
            self.reap();
            self.start_queued();
            self.publish();
            self.log_held_back(false);
        }
        // Collection has stopped: the last exports' hooks, then what is queued and running.
        if let Some(ex) = &exports {
            while let Ok(e) = ex.recv_timeout(Duration::from_secs(15)) {
                self.export(e);
            }
        }
        self.lua.finish(LUA_GRACE);
        while self.turns.queued() > 0 || !self.running.is_empty() {
            self.start_queued();
            // As in the loop above: a finished script is replaced within 2 ms.
            std::thread::sleep(Duration::from_millis(if self.turns.queued() > 0 { 2 } else { 20 }));
            self.reap();
        }
        if self.stats.events_left_at_stop > 0 {
            log::warn(&format!(
                "stop: {} alert events left unhandled after {:.1} s of hook backlog; notification files stay as the scripts last saw them, and the next start takes their alerts up",
                self.stats.events_left_at_stop,
                self.cfg.stop_grace.as_secs_f64()
            ));
        }
        self.publish();
        self.log_held_back(true);
    }

    /// Whether the collector is stopping and its grace for a backlog is over.
    fn grace_over(&self) -> bool {
        self.stop_asked.get().is_some_and(|t| t.elapsed() >= self.cfg.stop_grace)
    }

    /// A stop's grace is over: the scripts waiting are not started, and the events parked
    /// behind them are left. The notification files of their alerts are made to say whether
    /// each alert's start took effect: an alert whose action script did not start loses its
    /// file (the next start finds it again by its traffic and runs the action script then);
    /// one whose back2norm script did not start keeps it (the next start takes it up, and its
    /// back2norm script runs when it ends). A parked event was not handled: as one not taken.
    fn leave_queued(&mut self) {
        let (left, parked) = self.turns.drain();
        self.stats.events_left_at_stop += parked.len() as u64;
        let actions = left.iter().filter(|q| q.action).count();
        self.stats.scripts_left_at_stop += left.len() as u64;
        for q in &left {
            if !self.in_effect.contains(&q.alert) {
                self.remove_notification(&self.cfg.notifications_dir.join(&q.alert));
            }
        }
        log::warn(&format!(
            "stop: {} scripts still waiting were not started ({actions} action, {} back2norm); the notification files say which alerts are on, and the next start takes them up",
            left.len(),
            left.len() - actions
        ));
    }

    /// Sums up the problems not logged one by one (see [`Hooks::file_problems`]).
    fn log_held_back(&mut self, at_end: bool) {
        self.file_problems.log_held_back(log::error, "notification/dump file errors", at_end);
        self.script_problems.log_held_back(log::warn, "script failures", at_end);
    }

    fn publish(&mut self) {
        self.stats.lua = self.lua.stats();
        self.stats.lua_unfinished = self.lua.unfinished() as u64;
        (self.stats.scripts_waiting, self.stats.scripts_running) = (self.turns.queued() as u64, self.running.len() as u64);
        self.stats.events_waiting = self.turns.parked() as u64;
        self.stats.oldest_wait_ms = self.tell_if_behind().as_millis() as u64;
        let mut s = self.shared.lock();
        if *s != self.stats {
            *s = self.stats.clone();
        }
    }

    /// How long the oldest script waiting has waited; past [`BEHIND`], logged (rate-limited)
    /// with its limit and what waits.
    fn tell_if_behind(&mut self) -> Duration {
        let oldest = self.turns.fronts().map(|(_, q, n)| (q.since.elapsed(), &q.what, n)).max_by_key(|(waited, ..)| *waited);
        let Some((waited, what, n)) = oldest else { return Duration::ZERO };
        if waited >= BEHIND && self.behind_told.is_none_or(|t| t.elapsed() >= BEHIND) {
            self.behind_told = Some(Instant::now());
            let (all, parked) = (self.turns.queued(), self.turns.parked());
            log::warn(&format!(
                "hooks behind: {what} has waited {} s to start ({n} scripts of its limit waiting, {all} in all, {parked} alert events parked); see README, troubleshooting",
                waited.as_secs()
            ));
        }
        waited
    }

    /// Hands a written window to its `export-lua` function, if it names one.
    fn export(&mut self, e: crate::export::ExportEvent) {
        if e.spec.export_lua.is_some() {
            self.lua.submit(lua_pool::LuaJob::Export(e));
        }
    }

    /// Hands an event to its Lua function, if its limit names one.
    fn lua_event(&mut self, ev: &Event, file: &std::path::Path, silent: &[SilentExporter]) {
        if lua::hook_function(ev).is_some() {
            self.lua.submit(lua_pool::LuaJob::Event(ev.clone(), file.to_path_buf(), addresses(silent)));
        }
    }

    /// An alert's event as this thread applies it, so that its action and back2norm runs
    /// alternate whatever order events of two generations of a moving average arrive in (a
    /// reload's old and new versions both speak for an alert for a moment, and a backlog
    /// here makes the notification files lag what the averages know): a start of an alert
    /// already on only rewrites its file; a rewrite of one not on (ended meanwhile, while
    /// its average still finds it over) starts it again; an end of one not on is skipped.
    fn reconcile(&mut self, ev: Event, name: &str) -> Option<Event> {
        let on = self.on.contains(name);
        let phase = match (ev.phase, on) {
            (Phase::Start, true) => Phase::Update,
            (Phase::Update, false) => Phase::Start,
            (Phase::Back2Norm, false) => {
                self.stats.events_reconciled += 1;
                return None;
            }
            _ => return Some(ev),
        };
        self.stats.events_reconciled += 1;
        Some(Event { phase, ..ev })
    }

    /// An event from the moving averages: handled now, or parked behind its limit's full lane
    /// of scripts (a dump, which runs no script, is written now).
    ///
    /// A notification rewrite of a limit whose events are parked is skipped: it comes again
    /// 3 seconds later, and a lane long full (a storm with slow scripts) would otherwise park
    /// a rewrite of each of its alerts every 3 seconds.
    fn event(&mut self, ev: Event) {
        if self.may_wait(&ev) && self.turns.must_park(lane_of(&ev)) {
            if ev.phase == Phase::Update {
                self.stats.rewrites_skipped += 1;
                return;
            }
            let lane = lane_of(&ev).to_string();
            return self.turns.park(&lane, ev);
        }
        self.handle(ev);
    }

    /// Whether an event may have to be parked: it is a limit's (not a dump), and that limit
    /// runs scripts or some events are parked (a reload may have taken a limit's scripts
    /// away while its events were parked).
    fn may_wait(&self, ev: &Event) -> bool {
        if matches!(ev.phase, Phase::Dump { .. }) {
            return false;
        }
        let limit = ev.limit_spec();
        limit.action_script.is_some() || limit.back2norm_script.is_some() || self.turns.parked() > 0
    }

    /// Applies an event: notification file, log, Lua hook, script queued.
    fn handle(&mut self, ev: Event) {
        self.stats.events += 1;
        if let Phase::Dump { rewrite, append } = ev.phase {
            return self.dump(&ev, rewrite, append);
        }
        let name = ev.notification_name();
        let Some(ev) = self.reconcile(ev, &name) else { return };
        match ev.phase {
            Phase::Start => self.on.insert(name.clone()),
            Phase::Back2Norm => self.on.remove(&name),
            _ => false,
        };
        let file = self.cfg.notifications_dir.join(&name);
        match ev.phase {
            Phase::Start => {
                self.write_notification(&ev, &file);
                let silent = self.silent_exporters();
                self.started(&ev, &name, &file, &silent);
            }
            Phase::Update => self.write_notification(&ev, &file),
            Phase::Back2Norm => {
                let silent = self.silent_exporters();
                self.back_to_normal(&ev, &name, &file, &silent);
            }
            Phase::Dump { .. } => {}
        }
    }

    /// Writes (or rewrites) an alert's notification file: its keys, value and threshold.
    fn write_notification(&mut self, ev: &Event, file: &std::path::Path) {
        let text = format!("{} {} {}\n", ev.keys.join(" "), whole(ev.value), whole(ev.threshold));
        match rewrite_in_place(file, text.as_bytes()) {
            Ok(()) => self.stats.notifications_written += 1,
            Err(e) => {
                self.stats.notification_errors += 1;
                self.file_problems.log(log::error, || format!("notification {}: {e}", file.display()));
            }
        }
    }

    /// An alert started: logged, its Lua hook called and its action script queued (the
    /// start takes effect when the script starts). `silent`: the exporters silent now, which
    /// an underlimit's log line names.
    fn started(&mut self, ev: &Event, name: &str, file: &std::path::Path, silent: &[SilentExporter]) {
        let limit = ev.limit_spec();
        self.lua_event(ev, file, silent);
        let relation = if limit.kind == LimitKind::Over { ">" } else { "<" };
        let mut line = format!("{} {} {}: {} {relation} {}", limit.kind.name(), ev.limit_path(), ev.keys.join(" "), whole(ev.value), whole(ev.threshold));
        if limit.kind == LimitKind::Under && !silent.is_empty() {
            let each: Vec<String> = silent.iter().map(|(ip, idle_s)| format!("{ip} ({idle_s} s)")).collect();
            line.push_str(&format!(" (exporters silent: {}; the drop may be theirs)", each.join(", ")));
        }
        log::info(&line);
        match &limit.action_script {
            Some(script) => self.enqueue(script.clone(), ev, name, file, true, silent),
            None => {
                self.in_effect.insert(name.to_string());
            }
        }
    }

    /// An alert ended: logged, its Lua hook called, and its back-to-normal script queued (its
    /// notification file is deleted when the script starts) or, without one, its file
    /// deleted now.
    fn back_to_normal(&mut self, ev: &Event, name: &str, file: &std::path::Path, silent: &[SilentExporter]) {
        log::info(&format!("back to normal {} {}", ev.limit_path(), ev.keys.join(" ")));
        self.lua_event(ev, file, silent);
        match &ev.limit_spec().back2norm_script {
            Some(script) => self.enqueue(script.clone(), ev, name, file, false, silent),
            None => {
                self.in_effect.remove(name);
                self.remove_notification(file);
            }
        }
    }

    /// An alert's end takes effect: its back2norm script starts. Its notification file goes,
    /// unless the alert started again meanwhile (the file is then the new start's).
    fn end_takes_effect(&mut self, alert: &str) {
        self.in_effect.remove(alert);
        if !self.on.contains(alert) {
            self.remove_notification(&self.cfg.notifications_dir.join(alert));
        }
    }

    /// Deletes a notification file (one already gone is no error).
    fn remove_notification(&mut self, file: &std::path::Path) {
        match std::fs::remove_file(file) {
            Ok(()) => self.stats.notifications_removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.file_problems.log(log::error, || format!("notification {}: {e}", file.display())),
        }
    }

    /// Writes `<mavg>.dump` and/or appends to `<mavg>.adump` in the object's directory.
    fn dump(&mut self, ev: &Event, rewrite: bool, append: bool) {
        let m = &ev.mavg;
        let text = m.dump_text(ev.time_ms, &ctime(ev.time_ms / 1000));
        let result = (|| -> std::io::Result<()> {
            if rewrite {
                write_atomically(&m.dir.join(format!("{}.dump", m.name)), text.as_bytes())?;
            }
            if append {
                use std::io::Write;
                let path = m.dir.join(format!("{}.adump", m.name));
                std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(text.as_bytes())?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.file_problems.log(log::error, || format!("dump of {}/{}: {e}", m.object, m.name));
        }
    }

    /// The exporters silent now (see [`SilentExporters`]): looked up once per start or end,
    /// for its log line, Lua call and script alike.
    fn silent_exporters(&self) -> Vec<SilentExporter> {
        self.cfg.silent_exporters.as_ref().map_or_else(Vec::new, |silent| (silent.0)())
    }

    /// Queues a script with the original's argv:
    /// `object mavg limit notification-file key1 [key2 ...] value threshold`.
    fn enqueue(&mut self, script: PathBuf, ev: &Event, alert: &str, file: &std::path::Path, action: bool, silent: &[SilentExporter]) {
        let mut args = vec![
            crate::objects::flat_name(&ev.mavg.object),
            ev.mavg.name.clone(),
            ev.limit_spec().name.clone(),
            file.to_string_lossy().into_owned(),
        ];
        args.extend(ev.keys.iter().cloned());
        args.push(whole(ev.value));
        args.push(whole(ev.threshold));
        let what = format!("{} {}", script.display(), args.join(" "));
        let kind = ev.limit_spec().kind;
        let silent = addresses(silent).join(" ");
        if !self.turns.push(lane_of(ev), Queued { script, args, what, alert: alert.to_string(), action, kind, silent, since: Instant::now() }) {
            // Not reached (`event` parks the events of a full lane); a bound all the same.
            self.stats.scripts_dropped += 1;
        }
    }

    /// Starts waiting scripts while fewer than `max_scripts` run, lanes taking turns, and
    /// handles the events parked in a lane as it makes room; once a stop's grace is over,
    /// leaves them instead (see [`Hooks::leave_queued`]).
    fn start_queued(&mut self) {
        if self.grace_over() && self.turns.queued() + self.turns.parked() > 0 {
            return self.leave_queued();
        }
        while self.running.len() < self.cfg.max_scripts {
            let Some((Queued { script, args, what, alert, action, kind, silent, .. }, lane)) = self.next_script() else { break };
            // The alert's start or end takes effect now, whether the script can run or not.
            if action {
                self.in_effect.insert(alert);
            } else {
                self.end_takes_effect(&alert);
            }
            let event = if action { "start" } else { "back2norm" };
            let mut command = Command::new(&script);
            command.args(&args).env("XENOEYE_KIND", kind.name()).env("XENOEYE_EVENT", event).env("XENOEYE_SILENT_EXPORTERS", silent);
            command.stdin(Stdio::null()).stdout(Stdio::null());
            match crate::child::spawn(&mut command) {
                Ok(child) => {
                    self.stats.scripts_started += 1;
                    self.running.push(Running { child, started: Instant::now(), what, lane: lane.clone() });
                }
                Err(e) => {
                    self.stats.scripts_failed += 1;
                    self.script_problems.log(log::error, || format!("cannot run {what}: {e}"));
                }
            }
            // The lane has room: the events parked in it are handled (after this script's
            // alert took effect: they came after it).
            while let Some(ev) = self.turns.unpark(&lane) {
                self.handle(ev);
            }
        }
    }

    /// The script to start in a free slot: the next in turn, but with `max_scripts` 4 or more
    /// the last free slot goes only to a limit with no script running, so that a storm of
    /// slow scripts (a mitigation API taking seconds) never holds every slot while another
    /// limit's alert waits. (With fewer slots, keeping one back would cost a storm too much.)
    fn next_script(&mut self) -> Option<(Queued, String)> {
        if self.cfg.max_scripts < RESERVE_FROM || self.running.len() + 1 < self.cfg.max_scripts {
            return self.turns.pop();
        }
        let running = &self.running;
        self.turns.pop_first(|lane| running.iter().all(|r| r.lane != lane))
    }

    /// Collects finished scripts (no zombies) and kills those past their timeout.
    fn reap(&mut self) {
        let timeout = self.cfg.script_timeout;
        let (stats, problems) = (&mut self.stats, &mut self.script_problems);
        self.running.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    stats.scripts_ok += 1;
                } else {
                    stats.scripts_failed += 1;
                    problems.log(log::warn, || format!("{} exited with {status}", r.what));
                }
                false
            }
            Ok(None) if r.started.elapsed() >= timeout => {
                crate::child::kill(&mut r.child);
                stats.scripts_timed_out += 1;
                problems.log(log::warn, || format!("{} killed after {} s", r.what, timeout.as_secs()));
                false
            }
            Ok(None) => true,
            Err(e) => {
                problems.log(log::error, || format!("{}: {e}", r.what));
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::json;
    use crate::objects::mavg::{self, Mavg};
    use std::path::Path;
    use std::sync::mpsc::sync_channel;
    use crate::testdir::TestDir;

    fn setup(tag: &str, script_body: &str) -> (TestDir, Arc<Mavg>) {
        let d = TestDir::new(&format!("hooks-{tag}"));
        std::fs::create_dir_all(d.join("notifications")).unwrap();
        let script = d.join("hook.sh");
        // The back2norm script logs "end KEY" beside what the action script does.
        let end = d.join("end.sh");
        for (path, body) in [(&script, script_body), (&end, "echo \"end $5\" >> \"$(dirname \"$0\")/log\"")] {
            std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let conf = format!(
            r#"{{"name": "m", "fields": ["dst host", "octets"], "overlimit": [{{"name": "l", "default": [1], "action-script": "{}", "back2norm-script": "{}"}}]}}"#,
            script.display(),
            end.display()
        );
        let file = d.join("mo.conf");
        std::fs::write(&file, &conf).unwrap();
        let node = json::parse(&conf, &file).unwrap();
        let mavg = Arc::new(mavg::parse(&file, "o", &d, &node, 0).unwrap());
        (d, mavg)
    }

    /// Settings for a test in `d`: notifications in `d`/notifications, one Lua thread.
    fn hook_config(d: &Path, script_timeout: Duration, max_scripts: usize, max_queued: usize) -> HookConfig {
        HookConfig {
            notifications_dir: d.join("notifications"),
            script_timeout,
            max_scripts,
            max_queued,
            max_parked: 1 << 18,
            lua: lua::LuaConfig::default(),
            lua_threads: 1,
            lua_queue: 100,
            stop_grace: EVENT_GRACE,
            silent_exporters: None,
        }
    }

    fn start_event(m: &Arc<Mavg>, key: u32) -> Event {
        Event {
            phase: Phase::Start,
            mavg: m.clone(),
            limit: 0,
            keys: vec![std::net::Ipv4Addr::from(key).to_string()],
            field: 0,
            value: 1500.0,
            threshold: 1000.0,
            time_ms: 0,
            start_ms: 0,
        }
    }

    fn run(d: &Path, m: &Arc<Mavg>, max_scripts: usize, timeout_ms: u64, n: u32) -> HookStats {
        let (tx, rx) = sync_channel(100);
        let cfg = hook_config(d, Duration::from_millis(timeout_ms), max_scripts, 100);
        let h = spawn(cfg, rx, None);
        for k in 0..n {
            tx.send(start_event(m, k)).unwrap();
        }
        drop(tx);
        h.join().unwrap()
    }

    #[test]
    fn scripts_run_with_bounded_concurrency_and_the_argv() {
        let (d, m) = setup("bound", &format!("echo \"+ $*\" >> {0}/log; sleep 0.2; echo - >> {0}/log", "$(dirname $0)"));
        let stats = run(&d, &m, 2, 5000, 5);
        assert_eq!((stats.scripts_started, stats.scripts_ok, stats.scripts_failed), (5, 5, 0));
        let log = std::fs::read_to_string(d.join("log")).unwrap();
        let mut running = 0i32;
        let mut most = 0;
        for l in log.lines() {
            running += if l.starts_with('+') { 1 } else { -1 };
            most = most.max(running);
        }
        assert_eq!(most, 2, "never more than max-scripts at once: {log}");
        let notif = d.join("notifications/o-m-l-0.0.0.3");
        assert!(log.contains(&format!("+ o m l {} 0.0.0.3 1500 1000", notif.display())), "{log}");
        assert_eq!(std::fs::read_to_string(notif).unwrap(), "0.0.0.3 1500 1000\n");
    }

    #[test]
    fn each_alerts_action_and_back2norm_runs_alternate() {
        let (d, m) = setup("alternate", "echo \"start $5\" >> \"$(dirname \"$0\")/log\"");
        // 0.0.0.9 was on when the collector stopped: its file is there.
        std::fs::write(d.join("notifications/o-m-l-0.0.0.9"), "0.0.0.9 1500 1000\n").unwrap();
        let (tx, rx) = sync_channel(100);
        let cfg = hook_config(&d, Duration::from_secs(5), 1, 100);
        let h = spawn(cfg, rx, None);
        let event = |phase: Phase, key: u32| Event { phase, ..start_event(&m, key) };
        let events = [
            event(Phase::Start, 1),
            event(Phase::Start, 1),     // already on: the file is rewritten, nothing runs
            event(Phase::Back2Norm, 1),
            event(Phase::Back2Norm, 1), // not on: skipped
            event(Phase::Update, 2),    // not on, though its average finds it over: started
            event(Phase::Update, 2),
            event(Phase::Start, 9),     // on from the start
            event(Phase::Back2Norm, 9),
            event(Phase::Back2Norm, 2),
        ];
        for ev in events {
            tx.send(ev).unwrap();
        }
        drop(tx);
        let stats = h.join().unwrap();
        let log = std::fs::read_to_string(d.join("log")).unwrap();
        assert_eq!(log.lines().collect::<Vec<_>>(), ["start 0.0.0.1", "end 0.0.0.1", "start 0.0.0.2", "end 0.0.0.9", "end 0.0.0.2"]);
        assert_eq!((stats.events, stats.events_reconciled), (9, 4));
        assert_eq!(std::fs::read_dir(d.join("notifications")).unwrap().count(), 0, "every alert ended, every file gone");
    }

    #[test]
    fn scripts_beyond_the_queue_bound_wait_instead_of_being_dropped() {
        // Room for 2 waiting scripts and 3 parked events, 1 running: 12 events are taken as
        // scripts finish.
        let (d, m) = setup("backlog", &format!("echo \"$*\" >> {0}/log; sleep 0.05", "$(dirname $0)"));
        let (tx, rx) = sync_channel(100);
        let cfg = HookConfig { max_parked: 3, ..hook_config(&d, Duration::from_secs(5), 1, 2) };
        let h = spawn(cfg, rx, None);
        for k in 0..12 {
            tx.send(start_event(&m, k)).unwrap();
        }
        drop(tx);
        let stats = h.join().unwrap();
        assert_eq!((stats.scripts_started, stats.scripts_ok, stats.scripts_dropped), (12, 12, 0));
        let log = std::fs::read_to_string(d.join("log")).unwrap();
        let keys: Vec<&str> = log.lines().map(|l| l.split(' ').nth(4).unwrap()).collect();
        let want: Vec<String> = (0..12).map(|k| std::net::Ipv4Addr::from(k as u32).to_string()).collect();
        assert_eq!(keys, want, "in order");
    }

    /// The moving average of `setup` in `d`, of another object (`p`): another limit.
    fn of_another_object(d: &Path) -> Arc<Mavg> {
        let file = d.join("mo.conf");
        let node = json::parse(&std::fs::read_to_string(&file).unwrap(), &file).unwrap();
        Arc::new(mavg::parse(&file, "p", d, &node, 0).unwrap())
    }

    #[test]
    fn a_storm_of_one_limits_alerts_does_not_hold_up_another_limits_script() {
        // One script at a time, 10 ms each: 100 starts of o's limit, then one of p's. Ten of
        // o's scripts wait in its lane, the rest of its events are parked behind them.
        let (d, storm) = setup("turns", &format!("sleep 0.01; echo \"$1 $5\" >> {0}/log", "$(dirname $0)"));
        let other = of_another_object(&d);
        let (tx, rx) = sync_channel(1000);
        let h = spawn(hook_config(&d, Duration::from_secs(5), 1, 10), rx, None);
        for k in 0..100 {
            tx.send(start_event(&storm, k)).unwrap();
        }
        tx.send(start_event(&other, 9)).unwrap();
        drop(tx);
        let stats = h.join().unwrap();
        let log = std::fs::read_to_string(d.join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let at = lines.iter().position(|l| *l == "p 0.0.0.9").expect("p's script ran");
        assert!(at < 5, "p's script waited for {at} of the storm's: {log}");
        // The storm's scripts ran in order, every alert has its file, nothing is left parked.
        let storm_keys: Vec<String> = lines.iter().filter_map(|l| l.strip_prefix("o ")).map(String::from).collect();
        let want: Vec<String> = (0..100).map(|k| std::net::Ipv4Addr::from(k as u32).to_string()).collect();
        assert_eq!(storm_keys, want);
        assert_eq!((stats.events, stats.scripts_started, stats.scripts_ok, stats.events_waiting, stats.oldest_wait_ms), (101, 101, 101, 0, 0));
        assert_eq!(std::fs::read_dir(d.join("notifications")).unwrap().count(), 101);
    }

    #[test]
    fn the_last_free_slot_is_kept_for_a_limit_with_no_script_running() {
        // Four slots, o's scripts taking a second: three of them run, and p's start, 0.2 s
        // later, takes the fourth at once instead of waiting for one of o's to end.
        let (d, storm) = setup("reserve", &format!("echo \"$1 $5\" >> {0}/log; sleep 1", "$(dirname $0)"));
        let other = of_another_object(&d);
        let (tx, rx) = sync_channel(100);
        for k in 0..6 {
            tx.send(start_event(&storm, k)).unwrap();
        }
        let h = spawn(hook_config(&d, Duration::from_secs(5), 4, 100), rx, None);
        std::thread::sleep(Duration::from_millis(200));
        tx.send(start_event(&other, 9)).unwrap();
        drop(tx);
        let stats = h.join().unwrap();
        let log = std::fs::read_to_string(d.join("log")).unwrap();
        let mut lines: Vec<&str> = log.lines().collect();
        // The three started together log in any order.
        lines[..3].sort();
        assert_eq!(lines[..4], ["o 0.0.0.0", "o 0.0.0.1", "o 0.0.0.2", "p 0.0.0.9"], "{log}");
        assert_eq!((stats.scripts_ok, lines.len()), (7, 7));
    }

    #[test]
    fn the_oldest_waiting_script_says_how_far_behind_the_hooks_are() {
        // One script at a time, 1 s each: the second start's script waits about a second.
        let (d, m) = setup("behind", "sleep 1");
        let (tx, rx) = sync_channel(10);
        let h = spawn(hook_config(&d, Duration::from_secs(5), 1, 10), rx, None);
        for k in 0..2 {
            tx.send(start_event(&m, k)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let seen = loop {
            let s = h.stats.lock().clone();
            if s.oldest_wait_ms >= 300 || Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(seen.oldest_wait_ms >= 300 && seen.oldest_wait_ms < 1500, "{seen:?}");
        assert_eq!((seen.scripts_waiting, seen.scripts_running), (1, 1));
        drop(tx);
        let stats = h.join().unwrap();
        assert_eq!((stats.scripts_ok, stats.oldest_wait_ms), (2, 0), "none waits at the end");
    }

    #[test]
    fn a_full_lane_parks_starts_and_ends_in_order_and_skips_rewrites() {
        // Room for one waiting script: the events are all queued before the hook thread
        // starts, so it takes them in one go, before any script starts.
        let (d, m) = setup("parked", "echo \"start $5\" >> \"$(dirname \"$0\")/log\"");
        let (tx, rx) = sync_channel(100);
        let event = |phase: Phase, key: u32| Event { phase, ..start_event(&m, key) };
        let events = [
            event(Phase::Start, 1),     // its script waits: the lane is full
            event(Phase::Start, 2),     // parked
            event(Phase::Update, 1),    // skipped: it comes again
            event(Phase::Update, 2),    // skipped
            event(Phase::Back2Norm, 1), // parked
        ];
        for ev in events {
            tx.send(ev).unwrap();
        }
        drop(tx);
        let stats = spawn(hook_config(&d, Duration::from_secs(5), 1, 1), rx, None).join().unwrap();
        let log = std::fs::read_to_string(d.join("log")).unwrap();
        assert_eq!(log.lines().collect::<Vec<_>>(), ["start 0.0.0.1", "start 0.0.0.2", "end 0.0.0.1"]);
        assert_eq!((stats.events, stats.rewrites_skipped, stats.events_waiting), (3, 2, 0));
        assert_eq!(notification_keys(&d), ["0.0.0.2"]);
    }

    #[test]
    fn a_stop_leaves_the_events_it_is_behind_on_and_the_files_match_the_scripts_run() {
        // A backlog at a stop: one script at a time, two waiting, each 50 ms; 40 starts sent,
        // the sender blocking as the hooks fall behind. With no grace, what the hook thread
        // has not taken when the stop comes is left.
        let (d, m) = setup("stop", &format!("echo \"$5\" >> {0}/log; sleep 0.05", "$(dirname $0)"));
        let (tx, rx) = sync_channel(4);
        let cfg = HookConfig { stop_grace: Duration::ZERO, ..hook_config(&d, Duration::from_secs(5), 1, 2) };
        let h = spawn(cfg, rx, None);
        let sender = std::thread::spawn(move || (0..40).for_each(|k| tx.send(start_event(&m, k)).unwrap()));
        while !d.join("log").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        h.stopping();
        sender.join().unwrap();
        let stats = h.join().unwrap();
        assert_eq!(stats.events + stats.events_left_at_stop, 40);
        assert!(stats.events >= 1 && stats.events_left_at_stop >= 30, "{stats:?}");
        // Each alert whose script ran has its file; those left, and those whose script was
        // still waiting, have neither, as if the stop had come before them.
        let mut ran: Vec<String> = std::fs::read_to_string(d.join("log")).unwrap().lines().map(String::from).collect();
        ran.sort();
        assert_eq!(ran, notification_keys(&d));
        assert_eq!(ran.len() as u64, stats.scripts_started);
        assert_eq!(stats.scripts_started + stats.scripts_left_at_stop, stats.events);
        assert_eq!(stats.scripts_ok, stats.scripts_started);
    }

    /// The keys of the notification files in `d`, sorted.
    fn notification_keys(d: &Path) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(d.join("notifications")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap().replace("o-m-l-", "")).collect();
        files.sort();
        files
    }

    #[test]
    fn a_stop_leaves_waiting_scripts_and_keeps_the_files_of_alerts_whose_end_did_not_start() {
        // One script at a time, 0.3 s each; a stop with no grace while three wait.
        let (d, m) = setup("stop-queued", &format!("echo \"start $5\" >> {0}/log; sleep 0.3", "$(dirname $0)"));
        std::fs::write(d.join("notifications/o-m-l-0.0.0.9"), "0.0.0.9 1500 1000\n").unwrap();
        let (tx, rx) = sync_channel(100);
        let cfg = HookConfig { stop_grace: Duration::ZERO, ..hook_config(&d, Duration::from_secs(5), 1, 100) };
        let h = spawn(cfg, rx, None);
        let event = |phase: Phase, key: u32| Event { phase, ..start_event(&m, key) };
        // 1 starts (its script runs), 9 (on from before) ends, 2 starts, 1 ends: three wait.
        for ev in [event(Phase::Start, 1), event(Phase::Back2Norm, 9), event(Phase::Start, 2), event(Phase::Back2Norm, 1)] {
            tx.send(ev).unwrap();
        }
        while h.stats.lock().events < 4 || !d.join("log").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Until its back2norm script starts, an ended alert keeps its file.
        assert_eq!(notification_keys(&d), ["0.0.0.1", "0.0.0.2", "0.0.0.9"]);
        let now = h.stats.lock().clone();
        assert_eq!((now.scripts_waiting, now.scripts_running), (3, 1));
        h.stopping();
        drop(tx);
        let stats = h.join().unwrap();
        assert_eq!((stats.scripts_started, stats.scripts_ok, stats.scripts_left_at_stop), (1, 1, 3));
        assert_eq!(std::fs::read_to_string(d.join("log")).unwrap(), "start 0.0.0.1\n");
        // 1 and 9: their back2norm scripts did not start, so their files stay (the next start
        // takes them up and ends them with their scripts). 2: its action script did not
        // start, so its file goes (its traffic starts it again).
        assert_eq!(notification_keys(&d), ["0.0.0.1", "0.0.0.9"]);
    }

    #[test]
    fn slow_scripts_are_killed_and_failures_counted() {
        // The sleep is the script's child (as curl would be): it goes with it.
        let (d, m) = setup("slow", "sleep 31 & echo $! >> \"$(dirname \"$0\")/sleep.pids\"; wait; touch \"$(dirname \"$0\")/survived\"");
        let t = Instant::now();
        let stats = run(&d, &m, 4, 200, 2);
        assert_eq!((stats.scripts_started, stats.scripts_timed_out), (2, 2));
        assert!(t.elapsed() < Duration::from_secs(20), "killed, not waited for");
        assert_eq!(crate::testdir::processes_ended(&d.join("sleep.pids")), Ok(()), "the scripts' children were killed too");
        assert!(!d.join("survived").exists());

        let (d, m) = setup("fail", "exit 3");
        let stats = run(&d, &m, 4, 5000, 3);
        assert_eq!((stats.scripts_started, stats.scripts_failed, stats.scripts_ok), (3, 3, 0));
    }
}
