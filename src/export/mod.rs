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
use crate::objects::window::{Closed, FwmSpec, RowMap};
use crate::objects::Objects;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub workers: usize,
    /// How long to keep retrying unwritable files at shutdown.
    pub final_retry: Duration,
}

/// Counters of the export thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub files_written: u64,
    pub rows_written: u64,
    pub write_failures: u64,
    /// Files still unwritten when the thread ended (named in the log).
    pub files_lost: u64,
    pub db_export_runs: u64,
}

struct PendingFile {
    path: PathBuf,
    text: String,
    rows: usize,
}

struct Exporter {
    objects: Arc<Objects>,
    cfg: ExportConfig,
    /// Per window id, per worker: start of the worker's current window.
    watermarks: Vec<Vec<u64>>,
    /// Merged rows of windows not yet complete, by (window id, start).
    open: BTreeMap<(usize, u64), RowMap>,
    unwritten: VecDeque<PendingFile>,
    stats: ExportStats,
    db_export: Option<Child>,
    fail_log: log::RateLimit,
}

/// Starts the export thread; it ends when every worker has sent `WorkerDone` (or all senders
/// are gone) and everything is written.
pub fn spawn(objects: Arc<Objects>, cfg: ExportConfig, rx: Receiver<Msg>) -> std::thread::JoinHandle<ExportStats> {
    std::thread::Builder::new()
        .name("export".into())
        .spawn(move || {
            let n = objects.windows.len();
            let mut e = Exporter {
                watermarks: vec![vec![0; cfg.workers.max(1)]; n],
                objects,
                cfg,
                open: BTreeMap::new(),
                unwritten: VecDeque::new(),
                stats: ExportStats::default(),
                db_export: None,
                fail_log: log::RateLimit::new(Duration::from_secs(10)),
            };
            e.run(rx);
            e.stats
        })
        .expect("spawn export thread")
}

impl Exporter {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut done = 0;
        let mut last_retry = Instant::now();
        while done < self.cfg.workers {
            match rx.recv_timeout(Duration::from_millis(500)) {
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
            if !self.unwritten.is_empty() && last_retry.elapsed() >= Duration::from_secs(2) {
                self.retry();
                last_retry = Instant::now();
            }
            self.reap_db_export();
        }
        // Everything still open is final now.
        let open = std::mem::take(&mut self.open);
        let any = self.write_windows(open.into_iter());
        self.run_db_export_after(any);
        let deadline = Instant::now() + self.cfg.final_retry;
        while !self.unwritten.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            self.retry();
        }
        for f in &self.unwritten {
            log::error(&format!("export file {} ({} rows) could not be written and is lost", f.path.display(), f.rows));
            self.stats.files_lost += 1;
        }
        if let Some(mut child) = self.db_export.take() {
            let _ = child.wait();
        }
    }

    fn merge(&mut self, c: Closed) {
        if let Some(w) = self.watermarks.get_mut(c.fwm).and_then(|v| v.get_mut(c.worker)) {
            *w = (*w).max(c.next_start);
        }
        let entry = self.open.entry((c.fwm, c.start)).or_default();
        if entry.is_empty() {
            *entry = c.rows;
            return;
        }
        for (k, sums) in c.rows {
            let e = entry.entry(k).or_insert([0; 3]);
            for (a, b) in e.iter_mut().zip(sums) {
                *a = a.saturating_add(b);
            }
        }
    }

    /// Writes every window that all workers have moved past.
    fn write_complete(&mut self) {
        let ready: Vec<(usize, u64)> = self
            .open
            .keys()
            .filter(|(fwm, start)| self.watermarks[*fwm].iter().all(|w| w > start))
            .copied()
            .collect();
        let windows: Vec<_> = ready.into_iter().filter_map(|k| self.open.remove(&k).map(|rows| (k, rows))).collect();
        let any = self.write_windows(windows.into_iter());
        self.run_db_export_after(any);
    }

    /// Renders and writes windows; returns whether any file was written.
    fn write_windows(&mut self, windows: impl Iterator<Item = ((usize, u64), RowMap)>) -> bool {
        let mut any = false;
        for ((fwm, start), rows) in windows {
            if rows.is_empty() {
                continue; // an empty window writes no file
            }
            let spec: &FwmSpec = &self.objects.windows[fwm];
            let rows = sql::export_rows(spec, rows);
            let file = PendingFile {
                path: self.cfg.dir.join(format!("{}_{}.sql", spec.table, start)),
                text: sql::render_pg(spec, start, &rows),
                rows: rows.len(),
            };
            any |= self.write(file);
        }
        any
    }

    fn write(&mut self, f: PendingFile) -> bool {
        match write_atomically(&f.path, f.text.as_bytes()) {
            Ok(()) => {
                self.stats.files_written += 1;
                self.stats.rows_written += f.rows as u64;
                true
            }
            Err(e) => {
                self.stats.write_failures += 1;
                if self.fail_log.allow(Instant::now()) {
                    log::error(&format!("cannot write {}: {e}; kept in memory, will retry", f.path.display()));
                }
                self.unwritten.push_back(f);
                false
            }
        }
    }

    fn retry(&mut self) {
        let mut any = false;
        for _ in 0..self.unwritten.len() {
            let Some(f) = self.unwritten.pop_front() else { break };
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
        match Command::new(&prog).stdin(Stdio::null()).spawn() {
            Ok(child) => {
                self.stats.db_export_runs += 1;
                self.db_export = Some(child);
            }
            Err(e) => log::error(&format!("db-export {}: {e}", prog.display())),
        }
    }

    fn reap_db_export(&mut self) {
        if let Some(child) = &mut self.db_export {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        log::warn(&format!("db-export exited with {status}"));
                    }
                    self.db_export = None;
                }
                Ok(None) => {}
                Err(_) => self.db_export = None,
            }
        }
    }
}
