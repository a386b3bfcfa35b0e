//! The Lua hook threads: Lua calls run here, not on the hook thread that writes notification
//! files and starts scripts, so a slow hook (a long loop, a program it waits for) delays
//! neither the files and scripts of other alerts nor, through a full event queue, collection.
//!
//! Every object belongs to one Lua thread (chosen by a hash of its directory): its hooks run
//! in order and its `xe.state` lives in one Lua state. A thread runs its objects' calls in
//! turns (see [`turns`](super::turns)), so a storm of one object's alerts with slow hooks
//! does not hold up another object's on the same thread. Each thread holds a bounded number
//! of calls; the calls beyond wait here, on the hook thread, objects again taking turns, and
//! are handed over as the thread makes room. Past a bound on those (262,144), a call is
//! dropped, counted and logged (at most every 10 seconds) with the object and the limit — the
//! hook thread never waits for Lua. Calls are handed over in batches (one per thread each
//! time the hook thread has drained its queue), so a flood costs one wake-up per batch, not
//! per call.

use super::lua::{LuaConfig, LuaHooks, LuaStats};
use super::turns::Turns;
use crate::export::ExportEvent;
use crate::log;
use crate::objects::mavg::Event;
use parking_lot::Mutex;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls waiting on the hook thread for room in their Lua threads, at most (past it, dropped).
const MAX_WAITING_CALLS: usize = 1 << 18;

/// One Lua call to make.
pub enum LuaJob {
    /// An alert event, its notification file and the exporters silent when it came (see
    /// [`SilentExporters`](super::SilentExporters)).
    Event(Event, PathBuf, Vec<String>),
    /// An exported window for its `export-lua` function.
    Export(ExportEvent),
}

impl LuaJob {
    /// The object directory, which picks the thread (and the state) the call runs on.
    fn dir(&self) -> &Path {
        match self {
            LuaJob::Event(ev, ..) => &ev.mavg.dir,
            LuaJob::Export(ev) => &ev.spec.dir,
        }
    }

    /// The object the call is for (safe to ask of any job, unlike [`LuaJob::describe`]).
    fn object(&self) -> &str {
        match self {
            LuaJob::Event(ev, ..) => &ev.mavg.object,
            LuaJob::Export(ev) => &ev.spec.object,
        }
    }

    fn describe(&self) -> String {
        match self {
            LuaJob::Event(ev, ..) => ev.limit_path(),
            LuaJob::Export(ev) => format!("{} export of {}", ev.spec.object, ev.spec.table),
        }
    }
}

struct LuaThread {
    /// Batches of calls; `None` once the pool is finishing.
    jobs: Option<Sender<Vec<LuaJob>>>,
    /// Calls handed over and not yet returned (running or waiting).
    pending: Arc<AtomicUsize>,
    /// Calls collected since the last [`LuaPool::flush`].
    batch: Vec<LuaJob>,
    /// Calls that found the thread full, by object: handed over in turns as it makes room.
    waiting: Turns<LuaJob, ()>,
    stats: Arc<Mutex<LuaStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The Lua hook threads and their queues.
pub struct LuaPool {
    threads: Vec<LuaThread>,
    /// Tells the threads to skip what is left, and `xe.run` to stop waiting (see `finish`).
    stopping: Arc<AtomicBool>,
    /// Calls a thread may hold (running, waiting or batched) before new ones wait here.
    queue: usize,
    /// Calls waiting here, in all threads' `waiting`, and how many may (then they are dropped).
    waiting: usize,
    max_waiting: usize,
    dropped: u64,
    last_drop_log: Option<Instant>,
}

impl LuaPool {
    /// Starts `threads` Lua threads (at least one), each holding up to `queue` calls.
    pub fn spawn(cfg: &LuaConfig, threads: usize, queue: usize) -> LuaPool {
        let threads = (0..threads.max(1)).map(|i| LuaThread::spawn(i, cfg.clone())).collect();
        LuaPool { threads, stopping: cfg.stopping.clone(), queue: queue.max(1), waiting: 0, max_waiting: MAX_WAITING_CALLS, dropped: 0, last_drop_log: None }
    }

    /// Adds a call to its object's thread's next batch, or, when the thread already holds
    /// `queue` calls (or calls wait for it), to the calls waiting for it; past
    /// `max_waiting` of those, drops it (counted, logged). Nothing runs before
    /// [`LuaPool::flush`].
    pub fn submit(&mut self, job: LuaJob) {
        let n = thread_of(job.dir(), self.threads.len());
        let t = &mut self.threads[n];
        if t.jobs.is_some() {
            if t.waiting.queued() == 0 && t.room(self.queue) > 0 {
                t.batch.push(job);
                return;
            }
            if self.waiting < self.max_waiting {
                let object = job.object().to_string();
                t.waiting.push(&object, job);
                self.waiting += 1;
                return;
            }
        }
        self.dropped += 1;
        if self.last_drop_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.last_drop_log = Some(Instant::now());
            log::warn(&format!("Lua hook queue full ({} calls waiting for their threads): dropped {} ({} dropped so far)", self.waiting, job.describe(), self.dropped));
        }
    }

    /// The pool with at most `n` calls waiting for room in their threads (tests).
    #[cfg(test)]
    fn with_max_waiting(self, n: usize) -> LuaPool {
        LuaPool { max_waiting: n, ..self }
    }

    /// Calls waiting for room in their threads.
    pub fn backlog(&self) -> usize {
        self.waiting
    }

    /// Calls not made yet: waiting here, and handed over (running or waiting on a thread).
    pub fn unfinished(&self) -> usize {
        self.waiting + self.threads.iter().map(|t| t.pending.load(Ordering::Relaxed) + t.batch.len()).sum::<usize>()
    }

    /// Hands the collected calls to their threads, and as many of those waiting as they
    /// have room for (objects taking turns): one wake-up per thread and batch rather than
    /// per call, which is what lets a flood of events through.
    pub fn flush(&mut self) {
        for t in &mut self.threads {
            let mut room = t.room(self.queue);
            while room > 0 {
                let Some((job, _)) = t.waiting.pop() else { break };
                t.batch.push(job);
                self.waiting -= 1;
                room -= 1;
            }
            if t.batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut t.batch);
            t.pending.fetch_add(batch.len(), Ordering::Relaxed);
            if let Some(jobs) = &t.jobs {
                // The thread only ends when the sender is gone: this cannot fail.
                let _ = jobs.send(batch);
            }
        }
    }

    /// The threads' counters summed, with the calls dropped at a full queue.
    pub fn stats(&self) -> LuaStats {
        total(self.dropped, self.threads.iter().map(|t| &t.stats))
    }

    /// Lets the queued calls run for at most `grace`; then the calls not started are dropped
    /// (counted) and running ones stop waiting on programs, so stopping the collector never
    /// waits on a backlog of slow hooks. Later submissions are dropped.
    pub fn finish(&mut self, grace: Duration) {
        self.flush();
        let deadline = Instant::now() + grace;
        while self.unfinished() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.flush();
        }
        let left = self.unfinished();
        if left > 0 {
            log::warn(&format!("stopping: {left} Lua hook calls still waiting are dropped"));
            self.stopping.store(true, Ordering::Relaxed);
        }
        for t in &mut self.threads {
            t.jobs = None;
            self.dropped += t.waiting.drain().0.len() as u64;
        }
        self.waiting = 0;
        for t in &mut self.threads {
            if t.thread.take().is_some_and(|h| h.join().is_err()) {
                log::error("a Lua hook thread panicked");
            }
        }
    }
}

impl LuaThread {
    /// Calls the thread can be handed now, with `queue` its bound.
    fn room(&self, queue: usize) -> usize {
        queue.saturating_sub(self.pending.load(Ordering::Relaxed) + self.batch.len())
    }

    fn spawn(i: usize, cfg: LuaConfig) -> LuaThread {
        let (jobs, rx) = channel::<Vec<LuaJob>>();
        let stats = Arc::new(Mutex::new(LuaStats::default()));
        let pending = Arc::new(AtomicUsize::new(0));
        let (published, done, stopping) = (stats.clone(), pending.clone(), cfg.stopping.clone());
        let thread = std::thread::Builder::new()
            .name(format!("lua-{i}"))
            .spawn(move || {
                // Lua states are not Send: each is made on its thread and stays there.
                let mut hooks = LuaHooks::new(cfg);
                // The calls handed over, by object, taken in turns.
                let mut turns: Turns<LuaJob, ()> = Turns::new(usize::MAX);
                let take = |turns: &mut Turns<LuaJob, ()>, batch: Vec<LuaJob>| {
                    for job in batch {
                        let object = job.object().to_string();
                        turns.push(&object, job);
                    }
                };
                for ran in 0u64.. {
                    if turns.queued() == 0 || ran % 256 == 0 {
                        *published.lock() = hooks.stats.clone();
                    }
                    if turns.queued() == 0 {
                        match rx.recv() {
                            Ok(batch) => take(&mut turns, batch),
                            Err(_) => break,
                        }
                    }
                    while let Ok(batch) = rx.try_recv() {
                        take(&mut turns, batch);
                    }
                    let Some((job, _)) = turns.pop() else { continue };
                    if stopping.load(Ordering::Relaxed) {
                        hooks.stats.dropped += 1;
                    } else {
                        run_contained(&mut hooks, &job);
                    }
                    done.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .expect("spawn Lua hook thread");
        LuaThread { jobs: Some(jobs), pending, batch: Vec::new(), waiting: Turns::new(usize::MAX), stats, thread: Some(thread) }
    }
}

/// Makes one call. A panic in it (a bug in the collector's own code, such as an `xe`
/// function) is counted as an error and logged, and the thread goes on with the next call:
/// else the thread would end, and every later hook of its objects would be dropped.
fn run_contained(hooks: &mut LuaHooks, job: &LuaJob) {
    let call = std::panic::AssertUnwindSafe(|| match job {
        LuaJob::Event(ev, file, silent) => hooks.event(ev, file, silent),
        LuaJob::Export(ev) => hooks.export(ev),
    });
    if let Err(panic) = std::panic::catch_unwind(call) {
        hooks.stats.errors += 1;
        let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        log::error(&format!("Lua hook call for {} failed with an internal error (please report it): {what}", job.object()));
    }
}

/// The thread (of `threads`) an object directory's hooks run on.
fn thread_of(dir: &Path, threads: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    (h.finish() % threads as u64) as usize
}

fn total<'a>(dropped: u64, threads: impl IntoIterator<Item = &'a Arc<Mutex<LuaStats>>>) -> LuaStats {
    let mut sum = LuaStats { dropped, ..LuaStats::default() };
    for t in threads {
        let s = t.lock();
        sum.calls += s.calls;
        sum.errors += s.errors;
        sum.cut += s.cut;
        sum.dropped += s.dropped;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::iplist::IpLists;
    use crate::objects::{self, mavg::Phase, Objects};
    use crate::testdir::TestDir;

    /// Objects `names` under `d`/mo, each with one limit calling `on` of `lua`.
    fn objects(d: &TestDir, names: &[&str], lua: &str) -> Objects {
        for name in names {
            let o = d.join("mo").join(name);
            std::fs::create_dir_all(&o).unwrap();
            let conf = r#"{"mavg": [{"name": "m", "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1], "action-lua": "on"}]}]}"#;
            std::fs::write(o.join("mo.conf"), conf).unwrap();
            std::fs::write(o.join("mo.lua"), lua).unwrap();
        }
        objects::load(&d.join("mo"), &IpLists::new()).unwrap()
    }

    fn event(objects: &Objects, object: &str, key: &str) -> LuaJob {
        let m = objects.mavgs.iter().find(|m| m.object == object).unwrap().clone();
        let ev = Event { phase: Phase::Start, mavg: m, limit: 0, keys: vec![key.into()], field: 0, value: 2.0, threshold: 1.0, time_ms: 0, start_ms: 0 };
        LuaJob::Event(ev, PathBuf::from("/n"), Vec::new())
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Every object's hook appends its key; the object "slow" first waits on a program.
    const HOOK: &str = r#"
        function on(ev)
            if xe.dir:match("/slow$") then xe.run({"sleep", "2"}, 5); xe.write_file(xe.dir .. "/done", "") end
            xe.append_file(xe.dir .. "/keys", ev.keys[1] .. "\n")
        end"#;

    #[test]
    fn a_slow_hook_delays_only_its_own_object_and_order_is_kept() {
        // The thread follows the directory's hash, and the directory holds the process id:
        // name the second object so that it lands on the other thread whatever the id.
        let d = TestDir::new("luapool-isolate");
        let mo = d.join("mo");
        let thread = |name: &str| thread_of(&mo.join(name), 2);
        let fast = (0..).map(|i| format!("fast{i}")).find(|n| thread(n) != thread("slow")).unwrap();
        let fast = fast.as_str();
        let objects = objects(&d, &["slow", fast], HOOK);
        let mut pool = LuaPool::spawn(&LuaConfig::default(), 2, 100);
        pool.submit(event(&objects, "slow", "s"));
        for k in 0..50 {
            pool.submit(event(&objects, fast, &k.to_string()));
        }
        pool.flush();
        let keys = d.join("mo").join(fast).join("keys");
        let all_fast = || std::fs::read_to_string(&keys).is_ok_and(|t| t.lines().count() == 50);
        assert!(wait_for(all_fast), "the other thread's hooks ran");
        assert!(!d.join("mo/slow/done").exists(), "... while the slow hook was still waiting");
        let expected: String = (0..50).map(|k| format!("{k}\n")).collect();
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), expected, "one object's hooks run in order");
        pool.finish(Duration::from_secs(60));
        assert!(d.join("mo/slow/done").exists(), "finish waits for running hooks");
        assert_eq!(pool.stats(), LuaStats { calls: 51, ..LuaStats::default() });
    }

    #[test]
    fn a_call_that_panics_is_counted_and_the_thread_goes_on() {
        let d = TestDir::new("luapool-panic");
        let objects = objects(&d, &["o"], HOOK);
        let mut pool = LuaPool::spawn(&LuaConfig::default(), 1, 100);
        // An event of a limit its moving average does not have: the call panics (an
        // internal error, as a bug in an `xe` function would be).
        let mut broken = event(&objects, "o", "x");
        if let LuaJob::Event(ev, ..) = &mut broken {
            ev.limit = 99;
        }
        pool.submit(broken);
        pool.submit(event(&objects, "o", "after"));
        pool.flush();
        pool.finish(Duration::from_secs(60));
        assert_eq!(std::fs::read_to_string(d.join("mo/o/keys")).unwrap(), "after\n", "the next call ran on the same thread");
        assert_eq!(pool.stats(), LuaStats { calls: 1, errors: 1, ..LuaStats::default() });
    }

    #[test]
    fn calls_beyond_a_full_thread_wait_and_only_those_past_their_bound_are_dropped() {
        let d = TestDir::new("luapool-drop");
        let objects = objects(&d, &["slow"], HOOK.replace("xe.run", "xe.write_file(xe.dir .. '/started', ''); xe.run").as_str());
        let mut pool = LuaPool::spawn(&LuaConfig::default(), 1, 2).with_max_waiting(2);
        pool.submit(event(&objects, "slow", "1"));
        pool.flush();
        assert!(wait_for(|| d.join("mo/slow/started").exists()));
        for k in 2..=6 {
            pool.submit(event(&objects, "slow", &k.to_string()));
        }
        assert_eq!((pool.backlog(), pool.stats().dropped), (2, 2), "one running, one in the thread, two waiting, two dropped");
        assert_eq!(pool.unfinished(), 4);
        pool.finish(Duration::from_secs(60));
        assert_eq!(std::fs::read_to_string(d.join("mo/slow/keys")).unwrap(), "1\n2\n3\n4\n");
        assert_eq!(pool.stats(), LuaStats { calls: 4, dropped: 2, ..LuaStats::default() });
        assert_eq!(pool.unfinished(), 0);
    }

    /// Objects `slow` and `fast` on one thread: `slow`'s hook takes 0.3 s, `fast`'s none;
    /// each appends its key to its directory's `keys`. Returns the lines of `slow`'s keys
    /// once `fast`'s first is there.
    fn slow_keys_when_fast_ran(tag: &str, queue: usize) -> usize {
        let d = TestDir::new(tag);
        let hook = r#"
            function on(ev)
                if xe.dir:match("/slow$") then xe.run({"sleep", "0.3"}, 5) end
                xe.append_file(xe.dir .. "/keys", ev.keys[1] .. "\n")
            end"#;
        let objects = objects(&d, &["slow", "fast"], hook);
        let mut pool = LuaPool::spawn(&LuaConfig::default(), 1, queue);
        for k in 0..10 {
            pool.submit(event(&objects, "slow", &k.to_string()));
        }
        pool.submit(event(&objects, "fast", "f"));
        let fast_ran = || d.join("mo/fast/keys").exists();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fast_ran() && Instant::now() < deadline {
            pool.flush(); // as the hook thread does every 20 ms while calls wait
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(fast_ran(), "fast's hook ran");
        let slow_done = std::fs::read_to_string(d.join("mo/slow/keys")).unwrap_or_default().lines().count();
        pool.finish(Duration::from_secs(60));
        assert_eq!(std::fs::read_to_string(d.join("mo/slow/keys")).unwrap().lines().count(), 10, "all of slow's ran");
        assert_eq!(pool.stats(), LuaStats { calls: 11, ..LuaStats::default() });
        slow_done
    }

    #[test]
    fn objects_on_one_thread_take_turns() {
        // All eleven calls handed over at once: the thread takes slow's first, then fast's.
        let done = slow_keys_when_fast_ran("luapool-turns", 100);
        assert!(done <= 2, "fast's hook waited for {done} of slow's");
        // Two handed over at a time, the rest waiting on the hook thread: fast's is handed
        // over in its turn, not after slow's eight.
        let done = slow_keys_when_fast_ran("luapool-turns-waiting", 2);
        assert!(done <= 4, "fast's hook waited for {done} of slow's");
    }

    #[test]
    fn stopping_does_not_wait_for_a_backlog_of_slow_hooks() {
        let d = TestDir::new("luapool-stop");
        let objects = objects(&d, &["slow"], HOOK.replace("xe.run", "xe.write_file(xe.dir .. '/started', ''); xe.run").as_str());
        let mut pool = LuaPool::spawn(&LuaConfig::default(), 1, 100);
        for k in 0..10 {
            pool.submit(event(&objects, "slow", &k.to_string()));
        }
        pool.flush();
        assert!(wait_for(|| d.join("mo/slow/started").exists()));
        let t = Instant::now();
        pool.finish(Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(2), "the running hook's program was killed: {:?}", t.elapsed());
        // The running call finished (its program killed), the nine waiting were dropped.
        assert_eq!(std::fs::read_to_string(d.join("mo/slow/keys")).unwrap(), "0\n");
        assert_eq!(pool.stats(), LuaStats { calls: 1, dropped: 9, ..LuaStats::default() });
    }
}
