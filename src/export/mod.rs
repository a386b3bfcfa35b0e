//! The export thread: merges the pieces of each window from every worker, writes one SQL file
//! per window atomically, retries what cannot be written, and runs `db-export` after a round.
//!
//! A window is complete when every worker has moved past it (each closed window carries the
//! start of the worker's next one), so windows are written in order whatever the number of
//! workers, and a worker that saw no traffic for a window still lets it complete. A file that
//! cannot be written (disk full, directory gone) stays in memory and is retried every few
//! seconds; at shutdown, retries continue for a bounded time and whatever still fails is named
//! in the log. Nothing is dropped silently.

pub mod sql;

use crate::fsutil::write_atomically;
use crate::log;
use crate::objects::rows::RowMap;
use crate::objects::window::{Closed, FwmSpec, Spare};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A written window, for the Lua function its `fwm` names in `export-lua`.
#[derive(Clone, Debug)]
pub struct ExportEvent {
    pub spec: Arc<FwmSpec>,
    /// Window start (unix seconds).
    pub start: u64,
    /// The rows as exported (ordered, limited, with the NULL remainder row).
    pub rows: Vec<(crate::objects::window::Key, crate::objects::window::Aggs)>,
}

/// What workers send to the export thread.
pub enum Msg {
    Closed(Vec<Closed>),
    /// A worker has stopped and sent its last windows.
    WorkerDone(usize),
}

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    pub dir: PathBuf,
    pub db_export: Option<PathBuf>,
    /// A `db-export` run still going after this long is killed (a hung loader held back every
    /// later round).
    pub db_export_timeout: Duration,
    pub workers: usize,
    /// How often unwritable files are tried again.
    pub retry_every: Duration,
    /// How long to keep retrying unwritable files at shutdown.
    pub final_retry: Duration,
    /// Bytes of unwritten files kept for retrying; past it the oldest are given up (a disk
    /// full for days must not end in the collector killed for memory).
    pub max_backlog: usize,
    /// Where windows with `export-lua` go (the hook thread).
    pub lua: Option<std::sync::mpsc::SyncSender<ExportEvent>>,
}

/// Counters of the export thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub files_written: u64,
    pub rows_written: u64,
    pub write_failures: u64,
    /// Files given up: still unwritten when the thread ended, or the oldest of a backlog
    /// past `max_backlog` (each named in the log).
    pub files_lost: u64,
    /// Bytes of unwritten files kept for retrying.
    pub backlog_bytes: u64,
    pub db_export_runs: u64,
    /// `db-export` runs killed for running past `db-export-timeout`.
    pub db_export_timeouts: u64,
    /// Windows for export-lua dropped because the hook queue was full.
    pub lua_dropped: u64,
    /// Flows of new keys that full window maps (`mem-m`) summed into their NULL-key row.
    pub folded: u64,
    /// The last files written (newest last), for the status page.
    pub recent: Vec<String>,
}

/// How many recent export files the status page lists.
const RECENT: usize = 10;

struct PendingFile {
    /// `<table>_<window start>.sql`, unless a file of that name is there (see [`free_name`]).
    table: String,
    start: u64,
    text: String,
    rows: usize,
}

impl PendingFile {
    /// `<table>_<t>.sql`: the window's own name at `t` = its start.
    fn name_at(&self, t: u64) -> String {
        format!("{}_{t}.sql", self.table)
    }

    /// The window's own file name.
    fn name(&self) -> String {
        self.name_at(self.start)
    }
}

/// Files tried past the window's own name before one is overwritten after all.
const MAX_NAME_TRIES: u64 = 1000;

/// The path to write a window's file under: its own name, or when a file of that name is
/// still there (not loaded yet), the first free `<table>_<start + k>.sql`. A window is
/// written twice when a restart or a reload closed it early and the same window of the new
/// process or configuration closed again: overwriting the first file lost its rows whenever the
/// loader had not taken it yet. The rows keep the window's start as their time; only the name
/// moves, keeping the form loaders and the original's tools expect.
fn free_name(dir: &Path, f: &PendingFile) -> PathBuf {
    let path = |t: u64| dir.join(f.name_at(t));
    (f.start..f.start + MAX_NAME_TRIES).map(path).find(|p| std::fs::symlink_metadata(p).is_err()).unwrap_or_else(|| path(f.start))
}

/// A window not yet written: its workers' pieces merged so far.
struct OpenWindow {
    /// The latest spec (of the last piece).
    spec: Arc<FwmSpec>,
    rows: RowMap,
    /// Where the map goes, emptied, once written: the spare of the first piece's window.
    spare: Arc<Spare>,
}

struct Exporter {
    shared: Arc<Mutex<ExportStats>>,
    cfg: ExportConfig,
    /// Per table, per worker: start of the worker's current window.
    watermarks: HashMap<String, Vec<u64>>,
    /// Merged rows of windows not yet complete, by (table, start).
    open: BTreeMap<(String, u64), OpenWindow>,
    /// Files to retry; their bytes are `stats.backlog_bytes`.
    unwritten: VecDeque<PendingFile>,
    stats: ExportStats,
    /// The `db-export` run going on, and when it started.
    db_export: Option<(Child, Instant)>,
    fail_log: log::RateLimit,
}

/// The running export thread.
pub struct ExportHandle {
    thread: std::thread::JoinHandle<ExportStats>,
    /// Counters, updated after every round (for metrics and tests).
    pub stats: Arc<Mutex<ExportStats>>,
}

impl ExportHandle {
    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread to finish (after every worker said `WorkerDone`).
    pub fn join(self) -> std::thread::Result<ExportStats> {
        self.thread.join()
    }
}

/// Starts the export thread; it ends when every worker has sent `WorkerDone` (or all senders
/// are gone) and everything is written.
pub fn spawn(cfg: ExportConfig, rx: Receiver<Msg>) -> ExportHandle {
    let shared = Arc::new(Mutex::new(ExportStats::default()));
    let stats = shared.clone();
    let thread = std::thread::Builder::new()
        .name("export".into())
        .spawn(move || {
            let mut e = Exporter {
                shared,
                watermarks: HashMap::new(),
                cfg,
                open: BTreeMap::new(),
                unwritten: VecDeque::new(),
                stats: ExportStats::default(),
                db_export: None,
                fail_log: log::RateLimit::new(Duration::from_secs(10)),
            };
            e.run(rx);
            e.publish();
            e.stats
        })
        .expect("spawn export thread");
    ExportHandle { thread, stats }
}

impl Exporter {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut done = 0;
        let mut last_retry = Instant::now();
        while done < self.cfg.workers {
            match rx.recv_timeout(self.cfg.retry_every.min(Duration::from_millis(500))) {
                Ok(Msg::Closed(list)) => {
                    for c in list {
                        self.merge(c);
                    }
                    self.write_complete();
                }
                Ok(Msg::WorkerDone(_)) => done += 1,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !self.unwritten.is_empty() && last_retry.elapsed() >= self.cfg.retry_every {
                self.retry();
                last_retry = Instant::now();
            }
            self.reap_db_export();
            self.publish();
        }
        // Everything still open is final now.
        let open = std::mem::take(&mut self.open);
        let any = self.write_windows(open.into_iter());
        self.run_db_export_after(any);
        let deadline = Instant::now() + self.cfg.final_retry;
        while !self.unwritten.is_empty() && Instant::now() < deadline {
            std::thread::sleep(self.cfg.retry_every);
            self.retry();
        }
        for f in &self.unwritten {
            log::error(&format!("export file {} ({} rows) could not be written and is lost", self.cfg.dir.join(f.name()).display(), f.rows));
            self.stats.files_lost += 1;
        }
        // The last run may finish (within its timeout): it loads this round's files.
        while self.db_export.is_some() {
            self.reap_db_export();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn publish(&self) {
        let mut s = self.shared.lock();
        if *s != self.stats {
            *s = self.stats.clone();
        }
    }

    fn merge(&mut self, c: Closed) {
        let workers = self.cfg.workers.max(1);
        let marks = self.watermarks.entry(c.spec.table.clone()).or_insert_with(|| vec![0; workers]);
        if let Some(w) = marks.get_mut(c.worker) {
            *w = (*w).max(c.next_start);
        }
        match self.open.entry((c.spec.table.clone(), c.start)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(OpenWindow { spec: c.spec, rows: c.rows, spare: c.spare });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let w = o.get_mut();
                if w.spec.layout != c.spec.layout || w.spec.aggs != c.spec.aggs {
                    // The table's fields changed at a reload: the new piece starts a new file
                    // at the next window; this piece is counted as lost rather than mixed in.
                    log::warn(&format!("{}: fields changed at reload; rows of window {} from the old fields dropped", w.spec.table, c.start));
                    c.spare.give(c.rows);
                    return;
                }
                w.spec = c.spec;
                // Merge the smaller piece into the larger one; the emptied one goes back to the
                // piece's window (both have the same fields).
                let mut piece = c.rows;
                if piece.len() > w.rows.len() {
                    std::mem::swap(&mut w.rows, &mut piece);
                }
                w.rows.merge(&mut piece);
                c.spare.give(piece);
            }
        }
    }

    /// Writes every window that all workers have moved past.
    fn write_complete(&mut self) {
        let ready: Vec<(String, u64)> = self
            .open
            .keys()
            .filter(|(table, start)| self.watermarks.get(table).is_some_and(|m| m.iter().all(|w| w > start)))
            .cloned()
            .collect();
        let windows: Vec<_> = ready.into_iter().filter_map(|k| self.open.remove(&k).map(|w| (k, w))).collect();
        let any = self.write_windows(windows.into_iter());
        self.run_db_export_after(any);
    }

    /// Renders and writes windows; returns whether any file was written.
    fn write_windows(&mut self, windows: impl Iterator<Item = ((String, u64), OpenWindow)>) -> bool {
        let mut any = false;
        for ((_, start), OpenWindow { spec, mut rows, spare }) in windows {
            self.tell_folded(&spec, start, rows.folded());
            let exported = (!rows.is_empty()).then(|| rows.export_rows(&spec));
            spare.give(rows);
            let Some(rows) = exported else {
                continue; // an empty window writes no file
            };
            if let (Some(tx), Some(_)) = (&self.cfg.lua, &spec.export_lua) {
                if tx.try_send(ExportEvent { spec: spec.clone(), start, rows: rows.clone() }).is_err() {
                    self.stats.lua_dropped += 1;
                    if self.fail_log.allow(Instant::now()) {
                        log::warn(&format!(
                            "{}: hook queue full, export-lua call dropped ({} so far)",
                            spec.table, self.stats.lua_dropped
                        ));
                    }
                }
            }
            let spec: &FwmSpec = &spec;
            let file = PendingFile { table: spec.table.clone(), start, text: sql::render_pg(spec, start, &rows), rows: rows.len() };
            any |= self.write(file);
        }
        any
    }

    /// Counts and logs what a window's full maps summed into the NULL-key row.
    fn tell_folded(&mut self, spec: &FwmSpec, start: u64, folded: u64) {
        if folded > 0 {
            self.stats.folded += folded;
            log::warn(&format!(
                "{} window {start}: a worker's map reached mem-m ({} MiB): {folded} flows of keys not in it were summed into the row whose key fields are NULL",
                spec.table,
                spec.mem_bytes >> 20
            ));
        }
    }

    fn write(&mut self, f: PendingFile) -> bool {
        let path = free_name(&self.cfg.dir, &f);
        if path != self.cfg.dir.join(f.name()) {
            log::info(&format!("{} is there still (a window closed twice: restart or reload); written as {}", f.name(), path.display()));
        }
        match write_atomically(&path, f.text.as_bytes()) {
            Ok(()) => {
                self.stats.files_written += 1;
                self.stats.rows_written += f.rows as u64;
                if self.stats.recent.len() == RECENT {
                    self.stats.recent.remove(0);
                }
                self.stats.recent.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                true
            }
            Err(e) => {
                self.stats.write_failures += 1;
                if self.fail_log.allow(Instant::now()) {
                    log::error(&format!("cannot write {}: {e}; kept in memory, will retry", path.display()));
                }
                self.keep_for_retry(f);
                false
            }
        }
    }

    /// Queues an unwritten file for the next retry; past `max_backlog` bytes, gives up the
    /// oldest ones (counted and logged) rather than grow without bound.
    fn keep_for_retry(&mut self, f: PendingFile) {
        self.stats.backlog_bytes += f.text.len() as u64;
        self.unwritten.push_back(f);
        while self.stats.backlog_bytes > self.cfg.max_backlog as u64 && self.unwritten.len() > 1 {
            let Some(old) = self.unwritten.pop_front() else { break };
            self.stats.backlog_bytes -= old.text.len() as u64;
            self.stats.files_lost += 1;
            log::error(&format!(
                "export file {} ({} rows) given up: unwritten files past {} MiB",
                self.cfg.dir.join(old.name()).display(),
                old.rows,
                self.cfg.max_backlog >> 20
            ));
        }
    }

    fn retry(&mut self) {
        let mut any = false;
        for _ in 0..self.unwritten.len() {
            let Some(f) = self.unwritten.pop_front() else { break };
            self.stats.backlog_bytes -= f.text.len() as u64;
            any |= self.write(f);
        }
        self.run_db_export_after(any);
    }

    /// Runs the `db-export` program after a round that wrote files (one run at a time).
    fn run_db_export_after(&mut self, wrote: bool) {
        let Some(prog) = self.cfg.db_export.clone().filter(|_| wrote) else { return };
        self.reap_db_export();
        if self.db_export.is_some() {
            return; // still busy with the previous round; it will pick up these files too
        }
        match crate::child::spawn(Command::new(&prog).stdin(Stdio::null())) {
            Ok(child) => {
                self.stats.db_export_runs += 1;
                self.db_export = Some((child, Instant::now()));
            }
            Err(e) => log::error(&format!("db-export {}: {e}", prog.display())),
        }
    }

    /// Notes the end of the `db-export` run, or kills it once past its timeout.
    fn reap_db_export(&mut self) {
        let Some((child, started)) = &mut self.db_export else { return };
        match child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    log::warn(&format!("db-export exited with {status}"));
                }
                self.db_export = None;
            }
            Ok(None) if started.elapsed() >= self.cfg.db_export_timeout => {
                crate::child::kill(child);
                self.stats.db_export_timeouts += 1;
                log::error(&format!("db-export still running after {} s: killed (its files stay for the next run)", self.cfg.db_export_timeout.as_secs_f64()));
                self.db_export = None;
            }
            Ok(None) => {}
            Err(_) => self.db_export = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;
    use crate::fields::FieldId;
    use crate::objects::rows::KeyLayout;
    use crate::objects::window::{Agg, Column, ColumnSource};
    use std::sync::mpsc::channel;

    fn spec() -> Arc<FwmSpec> {
        let columns = vec![
            Column { name: "octets".into(), source: ColumnSource::Agg(0), desc: false },
            Column { name: "proto".into(), source: ColumnSource::Key(0), desc: false },
        ];
        Arc::new(FwmSpec::for_tests("o", "w", columns, vec![FieldId::Proto], vec![Agg::Octets], 10))
    }

    fn closed(worker: usize, start: u64, next_start: u64, proto: u128, octets: u64) -> Closed {
        let l = KeyLayout::new(&[FieldId::Proto]);
        let mut rows = RowMap::new(l.words, 1, 0);
        rows.add(&l.pack_values(&[Some(proto)]), &[octets, 0, 0]);
        Closed { spec: spec(), worker, start, next_start, rows, spare: Default::default() }
    }

    fn cfg(dir: &std::path::Path, workers: usize) -> ExportConfig {
        ExportConfig {
            dir: dir.to_path_buf(),
            db_export: None,
            db_export_timeout: Duration::from_secs(300),
            workers,
            retry_every: Duration::from_millis(20),
            final_retry: Duration::from_secs(5),
            max_backlog: usize::MAX,
            lua: None,
        }
    }

    /// A test's directory, not made yet: a test makes it when it wants exports to succeed.
    fn tmp(tag: &str) -> TestDir {
        let d = TestDir::new(&format!("export-{tag}"));
        std::fs::remove_dir(&d).unwrap();
        d
    }

    #[test]
    fn merges_workers_and_writes_when_all_moved_past() {
        let dir = tmp("merge");
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, rx) = channel();
        let h = spawn(cfg(&dir, 2), rx);
        tx.send(Msg::Closed(vec![closed(0, 100, 110, 6, 5)])).unwrap();
        tx.send(Msg::Closed(vec![closed(0, 110, 120, 6, 1)])).unwrap();
        // Worker 1 jumps from 90 to 120: window 100 and 110 complete with worker 0's rows.
        // Each worker's window keeps a spare: the pieces' maps go back there, emptied.
        let spares = [Arc::new(Spare::default()), Arc::new(Spare::default())];
        let with_spare = |c: Closed| Closed { spare: spares[c.worker].clone(), ..c };
        tx.send(Msg::Closed(vec![closed(1, 90, 120, 17, 7), with_spare(closed(1, 120, u64::MAX, 6, 2))])).unwrap();
        tx.send(Msg::Closed(vec![with_spare(closed(0, 120, u64::MAX, 6, 3))])).unwrap();
        tx.send(Msg::WorkerDone(0)).unwrap();
        tx.send(Msg::WorkerDone(1)).unwrap();
        let stats = h.join().unwrap();
        assert_eq!(stats.files_written, 4);
        assert_eq!(stats.recent, vec!["o_w_90.sql", "o_w_100.sql", "o_w_110.sql", "o_w_120.sql"], "for the status page");
        let read = |t: u64| std::fs::read_to_string(dir.join(format!("o_w_{t}.sql"))).unwrap();
        assert!(read(90).contains("( to_timestamp(90),  7 ,  17 );"));
        assert!(read(100).contains("( to_timestamp(100),  5 ,  6 );"));
        assert!(read(120).contains("( to_timestamp(120),  5 ,  6 );"), "both workers' rows summed");
        assert!(spares.iter().all(|s| s.holds()), "the merged piece's map and the written one given back");
    }

    #[test]
    fn unwritable_window_is_kept_and_retried() {
        let dir = tmp("retry");
        let (tx, rx) = channel();
        let h = spawn(cfg(&dir, 1), rx);
        // The export directory does not exist yet: the write fails and is retried.
        tx.send(Msg::Closed(vec![closed(0, 100, 110, 6, 5)])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.stats.lock().write_failures == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(h.stats.lock().files_written, 0);
        std::fs::create_dir_all(&dir).unwrap();
        tx.send(Msg::WorkerDone(0)).unwrap();
        let stats = h.join().unwrap();
        assert_eq!((stats.files_written, stats.files_lost), (1, 0));
        assert!(std::fs::read_to_string(dir.join("o_w_100.sql")).unwrap().contains("5 ,  6 );"));
    }

    #[test]
    fn a_window_written_again_never_overwrites_a_file_not_loaded_yet() {
        let dir = tmp("again");
        std::fs::create_dir_all(&dir).unwrap();
        // Window 100 closed early (a restart or reload), then again by the next process; a
        // file of the window after it (101) is there too.
        std::fs::write(dir.join("o_w_101.sql"), "next window").unwrap();
        for octets in [5, 7] {
            let (tx, rx) = channel();
            let h = spawn(cfg(&dir, 1), rx);
            tx.send(Msg::Closed(vec![closed(0, 100, u64::MAX, 6, octets)])).unwrap();
            tx.send(Msg::WorkerDone(0)).unwrap();
            assert_eq!(h.join().unwrap().files_written, 1);
        }
        let read = |t: u64| std::fs::read_to_string(dir.join(format!("o_w_{t}.sql"))).unwrap();
        assert!(read(100).contains("( to_timestamp(100),  5 ,  6 );"), "the first is kept");
        assert_eq!(read(101), "next window");
        assert!(read(102).contains("( to_timestamp(100),  7 ,  6 );"), "the second under the next free name, rows still at 100");
    }

    #[test]
    fn a_backlog_past_its_bound_gives_up_the_oldest() {
        let dir = tmp("backlog");
        let (tx, rx) = channel();
        // A bound below one file's size: only the newest unwritten file is kept.
        let mut c = cfg(&dir, 1);
        c.max_backlog = 1;
        let h = spawn(c, rx);
        // The export directory does not exist yet: every write fails and is kept.
        for start in [100, 110, 120] {
            tx.send(Msg::Closed(vec![closed(0, start, start + 10, 6, 5)])).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.stats.lock().files_lost < 2 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(h.stats.lock().files_lost, 2, "the oldest given up");
        assert!(h.stats.lock().backlog_bytes > 100, "the newest kept");
        std::fs::create_dir_all(&dir).unwrap();
        tx.send(Msg::WorkerDone(0)).unwrap();
        let stats = h.join().unwrap();
        assert_eq!((stats.files_written, stats.files_lost, stats.backlog_bytes), (1, 2, 0));
        let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["o_w_120.sql"]);
    }

    #[test]
    fn a_hung_db_export_is_killed_and_the_next_round_runs() {
        let dir = tmp("dbhang");
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("hang.sh");
        // The first run hangs; later runs list the directory and end.
        // (The sleep is a child of the shell, as psql is of a loader script: both are killed.
        // Its pid is noted, so that no other process on the machine is taken for it.)
        let script = r#"#!/bin/sh
d=$(dirname "$0")
if [ ! -e "$d/hung" ]; then touch "$d/hung"; sleep 60 & echo $! > "$d/sleep.pid"; wait; echo survived > "$d/survived"; fi
ls "$d" > "$d/ran.txt"
"#;
        std::fs::write(&prog, script).unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let (tx, rx) = channel();
        let mut c = cfg(&dir, 1);
        c.db_export = Some(prog);
        c.db_export_timeout = Duration::from_millis(300);
        let h = spawn(c, rx);
        tx.send(Msg::Closed(vec![closed(0, 100, 110, 6, 5)])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.stats.lock().db_export_timeouts == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(h.stats.lock().db_export_timeouts, 1);
        tx.send(Msg::Closed(vec![closed(0, 110, u64::MAX, 6, 5)])).unwrap();
        tx.send(Msg::WorkerDone(0)).unwrap();
        let stats = h.join().unwrap();
        assert_eq!((stats.db_export_runs, stats.db_export_timeouts), (2, 1));
        let listing = std::fs::read_to_string(dir.join("ran.txt")).unwrap();
        assert!(listing.contains("o_w_100.sql") && listing.contains("o_w_110.sql"), "the second run sees both rounds' files: {listing}");
        assert!(!listing.contains("survived"));
        let ended = crate::testdir::processes_ended(&dir.join("sleep.pid"));
        assert_eq!(ended, Ok(()), "the hung run's child was killed too");
    }

    #[test]
    fn lost_files_are_counted_not_hidden() {
        let dir = tmp("lost").join("never");
        let (tx, rx) = channel();
        let mut c = cfg(&dir, 1);
        c.final_retry = Duration::from_millis(100);
        let h = spawn(c, rx);
        tx.send(Msg::Closed(vec![closed(0, 100, u64::MAX, 6, 5)])).unwrap();
        tx.send(Msg::WorkerDone(0)).unwrap();
        let stats = h.join().unwrap();
        assert_eq!((stats.files_written, stats.files_lost), (0, 1));
        assert!(stats.write_failures >= 2, "retried: {}", stats.write_failures);
    }

    #[test]
    fn db_export_runs_after_a_round() {
        let dir = tmp("dbexport");
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("hook.sh");
        std::fs::write(&prog, "#!/bin/sh\nls \"$(dirname \"$0\")\" > \"$(dirname \"$0\")/ran.txt\"\n").unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let (tx, rx) = channel();
        let mut c = cfg(&dir, 1);
        c.db_export = Some(prog);
        let h = spawn(c, rx);
        tx.send(Msg::Closed(vec![closed(0, 100, u64::MAX, 6, 5)])).unwrap();
        tx.send(Msg::WorkerDone(0)).unwrap();
        let stats = h.join().unwrap();
        assert_eq!(stats.db_export_runs, 1);
        let listing = std::fs::read_to_string(dir.join("ran.txt")).unwrap();
        assert!(listing.contains("o_w_100.sql"), "the program ran after the file was written: {listing}");
    }
}
