//! Wiring: capture workers, the template store, signals, and offline replay.
//!
//! Live: one thread per `capture` element (or `workers` threads sharing a port), each owning
//! its source, decoder and pipeline, so nothing is shared on the flow path. The main thread
//! saves templates, logs counters and waits for SIGTERM/SIGINT. Offline (`--read-pcap`): the
//! same decoder and pipeline run over capture files with the capture timestamps as the clock.

use crate::capture::{self, pcap_source, udp, Batch, Fill, Source};
use crate::config::{CaptureSpec, Config};
use crate::decode::cache::TemplateStore;
use crate::decode::{Datagram, DecodeError, DecodeStats, Decoder, ExporterStats, FlowSink, RecordView};
use crate::config::ConfigError;
use crate::dump::Dumper;
use crate::export::{self, ExportConfig, ExportStats, Msg};
use crate::filter::iplist;
use crate::hooks::{self, HookConfig, HookHandle, HookStats};
use crate::flow::Flow;
use crate::log;
use crate::metrics;
use crate::systemd;
use crate::objects::clock::MavgClock;
use crate::objects::{self, mavg, LiveObjects, Objects, WorkerObjects};
use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender, TrySendError};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static SHUTDOWN: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
/// Ends the metrics server of a replay.
static REPLAY_DONE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

extern "C" fn on_hangup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Installs the SIGTERM/SIGINT and SIGHUP handlers (they only set flags the threads poll).
fn install_signal_handlers() {
    let terminate = on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let hangup = on_hangup as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, terminate);
        libc::signal(libc::SIGINT, terminate);
        libc::signal(libc::SIGHUP, hangup);
    }
}

/// SIGHUP: re-reads IP lists and monitoring objects. Objects, windows and moving averages
/// that stay keep their rows and averages; new ones start, removed ones are written out. When
/// the new configuration has errors, only thresholds and limits files are re-read.
/// Returns the moving averages it replaced, to be retired once every worker has moved on.
fn reload(cfg: &Config, live: &LiveObjects, hooks_tx: &std::sync::mpsc::SyncSender<crate::objects::mavg::Event>) -> Option<Retiring> {
    let old = live.get();
    match load_objects(cfg) {
        Ok(new) => {
            let mut started_anew = Vec::new();
            let old_ones = mavg::by_name(&old.mavgs);
            for m in &new.mavgs {
                m.set_events(Some(hooks_tx.clone()));
            }
            for members in mavg::groups(&new.mavgs) {
                let previous: Option<Vec<&Arc<mavg::Mavg>>> = members.iter().map(|m| old_ones.get(&(m.object.as_str(), m.name.as_str())).copied()).collect();
                if !previous.is_some_and(|p| mavg::Mavg::adopt(&members, &p)) {
                    started_anew.extend(members);
                }
            }
            // Those starting from zero (new, or changed so that their averages could not be
            // kept) take over the alerts their previous versions have active, or, with no
            // previous version, take up those their notification files say are, as at start:
            // else a changed moving average would leave its active alerts without an end.
            let now_ms = capture::now_ms();
            let (mut taken, orphans) = mavg::take_over_alerts(&old.mavgs, &started_anew, now_ms);
            if !taken.is_empty() {
                log::info(&format!("reload: {} active alerts taken over by the new versions of their moving averages: {}", taken.len(), shortened(&taken)));
            }
            taken.extend(take_up_alerts(cfg, &orphans, now_ms));
            let kept = new.mavgs.len() - started_anew.len();
            let summary = new.summary();
            live.replace(Arc::new(new));
            log::info(&format!("reload: {summary} ({kept} kept their averages)"));
            Some(Retiring { generation: live.generation(), mavgs: old.mavgs.clone(), taken })
        }
        Err(errors) => {
            for e in &errors {
                log::error(&format!("reload: {e}"));
            }
            let errors = objects::reload_thresholds(&old);
            for e in &errors {
                log::error(&format!("reload: {e}"));
            }
            log::info(&format!(
                "reload: configuration has errors, objects unchanged; thresholds of {} moving averages re-read ({} errors)",
                old.mavgs.len(),
                errors.len()
            ));
            None
        }
    }
}

/// The moving averages a reload replaced, with the notification files the new ones took up.
/// They are retired (see [`mavg::Mavg::retire`]) once every worker has moved to the
/// configuration of `generation`: until then a worker may still start or end their alerts,
/// and an alert ended before its start is sent would be an end without a start.
struct Retiring {
    generation: u64,
    mavgs: Vec<Arc<mavg::Mavg>>,
    taken: Vec<String>,
}

impl Retiring {
    /// Ends the alerts of the replaced moving averages that none of the new ones took up
    /// (nothing would end them later): their events, after those they still held, go to
    /// `unsent`.
    fn retire(self, unsent: &mut VecDeque<mavg::Event>) {
        let now_ms = capture::now_ms();
        let mut ended = Vec::new();
        for m in &self.mavgs {
            let retired = m.retire(&self.taken, now_ms);
            ended.extend(retired.ended.iter().map(|e| e.notification_name()));
            unsent.extend(retired.held.into_iter().chain(retired.ended));
        }
        if !ended.is_empty() {
            log::info(&format!(
                "reload: {} alerts of moving averages or limits removed or started anew ended (their back2norm scripts run): {}",
                ended.len(),
                shortened(&ended)
            ));
        }
    }
}

/// The moving averages replaced by reloads and not retired yet, and the events of those
/// retired that the hook queue had no room for yet.
#[derive(Default)]
struct Retirements {
    waiting: Vec<Retiring>,
    unsent: VecDeque<mavg::Event>,
}

impl Retirements {
    /// Retires what reloads replaced, as far as every worker has moved on from it, and hands
    /// the events to the hook queue, in order, as far as it has room (the rest wait for the
    /// next call: the main thread never waits for slow hooks).
    fn go_on(&mut self, workers: &[Worker], hooks_tx: &SyncSender<mavg::Event>) {
        let on = workers.iter().map(|w| w.published.generation.load(Ordering::Relaxed)).min().unwrap_or(u64::MAX);
        while self.waiting.first().is_some_and(|r| r.generation <= on) {
            self.waiting.remove(0).retire(&mut self.unsent);
        }
        while let Some(ev) = self.unsent.pop_front() {
            match hooks_tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    self.unsent.push_front(ev);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// At a stop, the workers done: retires the rest and hands every event over, waiting for
    /// room (the hook thread is draining its queue).
    fn finish(mut self, hooks_tx: &SyncSender<mavg::Event>) {
        for r in std::mem::take(&mut self.waiting) {
            r.retire(&mut self.unsent);
        }
        for ev in self.unsent {
            let _ = hooks_tx.send(ev);
        }
    }
}

/// Asks every worker to stop (as SIGTERM does).
pub fn request_shutdown() {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

/// Loads what the configuration refers to: IP lists, then monitoring objects.
pub fn load_objects(cfg: &Config) -> Result<Objects, Vec<ConfigError>> {
    let workers = cfg.captures.iter().map(|c| if let CaptureSpec::Socket { workers, .. } = c { *workers } else { 1 }).sum();
    crate::objects::mavg::set_writers(workers);
    let lists = iplist::load_dir(&cfg.iplists_dir)?;
    objects::load_with(&cfg.mo_dir, &lists, Some(&cfg.lua.lib_dir))
}

/// What a worker does with each decoded flow: the global dump, then every monitoring object.
pub struct Pipeline {
    dumper: Option<Dumper>,
    objects: WorkerObjects,
    specs: Arc<Objects>,
    live: Arc<LiveObjects>,
    generation: u64,
    worker: usize,
    tx: Sender<Msg>,
    /// Table slots the moving averages' sweep may still look at before the worker next
    /// receives (see [`Pipeline::limit_sweep`]); unbounded unless limited.
    sweep_budget: usize,
    /// The moving averages' time: the datagrams' without steps (see [`MavgClock`]).
    mavg_clock: MavgClock,
    /// Live: when the pipeline started on the monotonic clock, and the last tick's time and
    /// monotonic ms (read again only when the time changed).
    monotonic: Option<(Instant, u64, u64)>,
    /// Clock steps taken out (for the metrics).
    clock_steps: u64,
}

impl Pipeline {
    pub fn new(cfg: &Config, live: &Arc<LiveObjects>, worker: usize, tx: Sender<Msg>) -> Result<Self, String> {
        let generation = live.generation();
        let objects = live.get();
        Ok(Pipeline {
            dumper: Dumper::open(&cfg.dump_flows).map_err(|e| format!("dump-flows: {e}"))?,
            objects: WorkerObjects::new(&objects, worker).map_err(|e| format!("object dump-flows: {e}"))?,
            specs: objects,
            live: live.clone(),
            generation,
            worker,
            tx,
            sweep_budget: usize::MAX,
            mavg_clock: MavgClock::default(),
            monotonic: None,
            clock_steps: 0,
        })
    }

    /// Moves the worker's clock (unix ms): closed windows go to the export thread, and once a
    /// second the moving averages are swept. Returns the moving averages' time (see
    /// [`MavgClock`]), which the flows of a datagram received now carry.
    #[inline]
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        // Read with `now_ms`, before the work below: a reload of many objects takes a while,
        // and a monotonic time read after it would look like a step of the clock.
        let mono = self.monotonic_ms(now_ms);
        if self.live.generation() != self.generation {
            self.switch();
        }
        if let Some(closed) = self.objects.advance(now_ms) {
            let _ = self.tx.send(Msg::Closed(closed));
        }
        let (mavg_ms, step) = self.mavg_clock.at(now_ms, mono);
        if let Some(step) = step {
            self.clock_steps += 1;
            log::warn(&format!(
                "worker {}: the clock {} {:.1} s; moving averages go on from where they were and make it up over {:.0} minutes",
                self.worker,
                if step < 0 { "went back" } else { "jumped ahead" },
                step.unsigned_abs() as f64 / 1000.0,
                MavgClock::catch_up_ms(step) as f64 / 60_000.0
            ));
        }
        self.specs.sweep_if_due(mavg_ms, &mut self.sweep_budget);
        self.objects.see_switches();
        mavg_ms
    }

    /// Live: moving averages also follow the monotonic clock, so that a step of the system
    /// clock either way is told from time that passed (see [`MavgClock`]).
    pub fn use_monotonic_clock(&mut self) {
        self.monotonic = Some((Instant::now(), 0, 0));
    }

    /// The monotonic ms at the tick of time `now_ms` (live only; read once per ms of `now_ms`).
    #[inline]
    fn monotonic_ms(&mut self, now_ms: u64) -> Option<u64> {
        let (start, last_now, mono) = self.monotonic.as_mut()?;
        if *last_now != now_ms {
            (*last_now, *mono) = (now_ms, start.elapsed().as_millis() as u64);
        }
        Some(*mono)
    }

    /// Lets the sweep look at no more than `slots` table slots until the next call (a live
    /// worker calls this before each batch it received, so that a big sweep is done a piece
    /// per batch and the socket is read in between; a replay leaves it unbounded).
    pub fn limit_sweep(&mut self, slots: usize) {
        self.sweep_budget = slots;
    }

    /// The configuration generation the pipeline works with (see [`LiveObjects::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Moves to the configuration a reload put in force.
    fn switch(&mut self) {
        self.generation = self.live.generation();
        let next = self.live.get();
        match self.objects.switch_to(&next) {
            Ok(closed) => {
                let _ = self.tx.send(Msg::Closed(closed));
                self.specs = next;
            }
            Err(e) => log::error(&format!("reload: object dump-flows: {e}; keeping the previous objects")),
        }
    }

    /// Publishes this worker's counters for the metrics page.
    pub fn publish(&mut self, decoder: &Decoder, to: &parking_lot::Mutex<metrics::WorkerSnapshot>) {
        let objects = self.objects.flow_counts();
        let mut s = to.lock();
        s.decode = decoder.stats.clone();
        s.exporters = decoder.exporters.clone();
        s.templates = decoder.template_count();
        s.objects = objects;
        s.clock_steps = self.clock_steps;
    }

    /// Sends the last windows and says the worker is done.
    pub fn finish(&mut self) {
        let _ = self.tx.send(Msg::Closed(self.objects.finish()));
        let _ = self.tx.send(Msg::WorkerDone(self.worker));
    }
}

impl FlowSink for Pipeline {
    #[inline]
    fn flow(&mut self, flow: &Flow, record: &RecordView<'_>) {
        if let Some(d) = &mut self.dumper {
            d.write(flow, record);
        }
        self.objects.flow(flow, record);
    }
}

/// Counters of a whole run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub decode: DecodeStats,
    pub exporters: HashMap<IpAddr, ExporterStats>,
    /// Frames of capture files or pcap interfaces that held no usable UDP datagram.
    pub skipped_frames: u64,
    pub templates: usize,
    pub export: ExportStats,
    pub hooks: HookStats,
}

impl Summary {
    fn add(&mut self, d: &Decoder, skipped: u64) {
        self.decode.add(&d.stats);
        for (ip, e) in &d.exporters {
            self.exporters.entry(*ip).or_default().add(e);
        }
        self.skipped_frames += skipped;
        self.templates = self.templates.max(d.template_count());
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        let s = &self.decode;
        let mut line = format!(
            "datagrams {}, flows {}, options records {}, templates {} (new {}, changed {}, withdrawn {}), exporters {}",
            s.datagrams, s.flows, s.options_records, self.templates, s.templates_new, s.templates_changed,
            s.templates_withdrawn, self.exporters.len()
        );
        let errors: Vec<String> = DecodeError::ALL
            .iter()
            .filter(|e| s.error(**e) > 0)
            .map(|e| format!("{} {}", e.name(), s.error(*e)))
            .collect();
        if !errors.is_empty() {
            line += &format!("; errors: {}", errors.join(", "));
        }
        if self.skipped_frames > 0 {
            line += &format!("; skipped frames {}", self.skipped_frames);
        }
        let e = &self.export;
        line += &format!("; export files {}, rows {}", e.files_written, e.rows_written);
        if e.write_failures > 0 || e.files_lost > 0 {
            line += &format!(" (write failures {}, files lost {})", e.write_failures, e.files_lost);
        }
        let h = &self.hooks;
        if h.events > 0 {
            line += &format!(
                "; alert events {}, scripts {} (ok {}, failed {}, timed out {}, dropped {})",
                h.events, h.scripts_started, h.scripts_ok, h.scripts_failed, h.scripts_timed_out, h.scripts_dropped
            );
            if h.scripts_left_at_stop > 0 {
                line += &format!(", {} left waiting at the stop", h.scripts_left_at_stop);
            }
        }
        if h.lua.calls + h.lua.dropped > 0 {
            line += &format!("; lua hooks {} (errors {}, cut {}, dropped {})", h.lua.calls, h.lua.errors, h.lua.cut, h.lua.dropped);
        }
        line
    }
}

fn open_store(cfg: &Config) -> Arc<TemplateStore> {
    let (store, warning) = TemplateStore::open(Some(&cfg.templates_db));
    if let Some(w) = warning {
        log::warn(&w);
    }
    Arc::new(store)
}

fn save_templates(store: &TemplateStore, limiter: &mut log::RateLimit) {
    if let Err(e) = store.save_if_dirty() {
        if limiter.allow(Instant::now()) {
            log::error(&format!("cannot save templates: {e} (will retry)"));
        }
    }
}

/// Logs decode errors as a summary at most once per interval (never one line per packet).
struct ErrorReporter {
    limiter: log::RateLimit,
    reported: DecodeStats,
    worker: String,
}

impl ErrorReporter {
    fn new(worker: &str) -> Self {
        ErrorReporter { limiter: log::RateLimit::new(Duration::from_secs(10)), reported: DecodeStats::default(), worker: worker.to_string() }
    }

    fn check(&mut self, d: &Decoder) {
        if d.stats.errors == self.reported.errors || !self.limiter.allow(Instant::now()) {
            return;
        }
        let new: Vec<String> = DecodeError::ALL
            .iter()
            .filter_map(|e| {
                let n = d.stats.error(*e) - self.reported.error(*e);
                (n > 0).then(|| format!("{} {n}", e.name()))
            })
            .collect();
        let mut worst: Vec<_> = d.exporters.iter().filter(|(_, e)| e.errors > 0).collect();
        worst.sort_by_key(|(_, e)| std::cmp::Reverse(e.errors));
        let by_exporter: Vec<String> = worst.iter().take(3).map(|(ip, e)| format!("{ip} {}", e.errors)).collect();
        log::warn(&format!(
            "{}: malformed or undecodable input skipped: {} (errors so far by exporter: {})",
            self.worker,
            new.join(", "),
            by_exporter.join(", ")
        ));
        self.reported = d.stats.clone();
    }
}

/// Receives decoded flows and the clock of the datagrams they come from.
pub trait ClockedSink: FlowSink {
    /// Moves the clock; returns the time the flows of a datagram received now carry.
    fn tick(&mut self, now_ms: u64) -> u64;
}

impl ClockedSink for Pipeline {
    #[inline]
    fn tick(&mut self, now_ms: u64) -> u64 {
        Pipeline::tick(self, now_ms)
    }
}

/// Feeds every datagram of a batch through the decoder into the pipeline, moving the clock to
/// each datagram's time first: what a worker does with each batch its source fills.
#[inline]
pub fn process(batch: &Batch, decoder: &mut Decoder, sink: &mut impl ClockedSink) {
    for (i, m) in batch.meta.iter().enumerate() {
        let time_ms = sink.tick(m.time_ms);
        let dg = Datagram { bytes: batch.payload(i), exporter: m.from, time_ms };
        decoder.decode(&dg, sink);
    }
}

/// Serves the metrics when `metrics-listen` is set, until `stop`.
#[allow(clippy::too_many_arguments)]
fn start_metrics(
    cfg: &Config,
    workers: Vec<Arc<parking_lot::Mutex<metrics::WorkerSnapshot>>>,
    export: Arc<parking_lot::Mutex<ExportStats>>,
    hooks: Arc<parking_lot::Mutex<HookStats>>,
    live: &Arc<LiveObjects>,
    exporters: Arc<parking_lot::Mutex<metrics::ExporterWatch>>,
    stop: &'static AtomicBool,
) -> Result<Option<std::thread::JoinHandle<()>>, String> {
    let Some(addr) = cfg.metrics_listen else { return Ok(None) };
    let reg = Arc::new(metrics::Registry { workers, export, hooks, live: live.clone(), started: Instant::now(), exporters });
    let (local, h) = metrics::serve(addr, reg, stop).map_err(|e| format!("metrics-listen {addr}: {e}"))?;
    log::info(&format!("metrics on http://{local}/metrics"));
    Ok(Some(h))
}

/// Bound on alert events waiting for the hook thread (more are dropped and counted).
const EVENT_QUEUE: usize = 65536;

/// Bound on alert events the hook thread holds parked behind their limits' full lanes of
/// scripts ([`SCRIPTS_PER_LIMIT`] each): beyond it, it takes no more and the queue above fills.
const MAX_PARKED_EVENTS: usize = 1 << 18;

/// Hook scripts waiting per limit, at most: a waiting script holds its argv (about half a
/// kilobyte), and a storm may fill the lanes of many limits at once (50 limits: 25 MB). A
/// parked event takes about 130 bytes.
const SCRIPTS_PER_LIMIT: usize = 1_000;

/// Takes up, for moving averages starting from zero (`mavgs`), the alerts an earlier run or
/// configuration left active (see [`mavg::take_up_alerts`]), and says which notification
/// files could not be; returns the files taken up.
fn take_up_alerts(cfg: &Config, mavgs: &[Arc<mavg::Mavg>], now_ms: u64) -> Vec<String> {
    let done = mavg::take_up_alerts(&cfg.notifications_dir, mavgs, now_ms);
    if !done.taken.is_empty() {
        log::info(&format!(
            "{} alerts active before this start or reload taken up again (their back2norm scripts run once they end): {}",
            done.taken.len(),
            shortened(&done.taken)
        ));
    }
    if !done.left.is_empty() {
        let shown: Vec<String> = done.left.iter().map(|(name, why)| format!("{name} ({why})")).collect();
        log::warn(&format!(
            "{} notification files in {} could not be taken up: nothing will end those alerts; check what their action scripts started, then delete the files: {}",
            done.left.len(),
            cfg.notifications_dir.display(),
            shortened(&shown)
        ));
    }
    done.taken
}

/// The first ten of a list of names, for a log line.
fn shortened(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
    format!("{}{}", shown.join(", "), if names.len() > shown.len() { ", ..." } else { "" })
}

/// Connects every moving average to a new hook thread; returns the thread and a sender for
/// the moving averages a reload creates.
#[allow(clippy::type_complexity)]
fn start_hooks(
    cfg: &Config,
    objects: &Objects,
    live: &Arc<LiveObjects>,
    silent_exporters: Option<hooks::SilentExporters>,
) -> (HookHandle, std::sync::mpsc::SyncSender<crate::objects::mavg::Event>, std::sync::mpsc::SyncSender<export::ExportEvent>) {
    let (tx, rx) = sync_channel(EVENT_QUEUE);
    let (export_tx, export_rx) = sync_channel(1024);
    for m in &objects.mavgs {
        m.set_events(Some(tx.clone()));
    }
    let hc = HookConfig {
        notifications_dir: cfg.notifications_dir.clone(),
        script_timeout: Duration::from_secs(cfg.script_timeout),
        max_scripts: cfg.max_scripts,
        max_queued: SCRIPTS_PER_LIMIT,
        max_parked: MAX_PARKED_EVENTS,
        lua: hooks::lua::LuaConfig {
            write_dirs: std::iter::once(cfg.notifications_dir.clone()).chain(cfg.lua.write_dirs.iter().cloned()).collect(),
            objects: Some(live.clone()),
            lib_dir: Some(cfg.lua.lib_dir.clone()),
            stopping: Default::default(),
            max_instructions: cfg.lua.max_instructions,
            max_memory: (cfg.lua.max_memory_m as usize).saturating_mul(1 << 20),
        },
        lua_threads: cfg.lua.threads as usize,
        lua_queue: cfg.lua.queue as usize,
        stop_grace: hooks::EVENT_GRACE,
        silent_exporters,
    };
    (hooks::spawn(hc, rx, Some(export_rx)), tx, export_tx)
}

/// Disconnects the moving averages and waits for the hook thread's scripts.
fn stop_hooks(objects: &Objects, hooks: HookHandle) -> Result<HookStats, String> {
    for m in &objects.mavgs {
        m.set_events(None);
    }
    hooks.join().map_err(|_| "hook thread panicked".to_string())
}

fn export_config(cfg: &Config, workers: usize, lua: std::sync::mpsc::SyncSender<export::ExportEvent>) -> ExportConfig {
    ExportConfig {
        dir: cfg.export_dir.clone(),
        db_export: cfg.db_export.clone(),
        db_export_timeout: Duration::from_secs(cfg.db_export_timeout),
        workers,
        retry_every: Duration::from_secs(2),
        final_retry: Duration::from_secs(10),
        max_backlog: (cfg.export_backlog_m as usize).saturating_mul(1 << 20),
        lua: Some(lua),
    }
}

/// Replays capture files through the pipeline (capture time is the clock), writes every
/// window at the end and returns the counters. Templates learnt are saved as in live mode.
pub fn replay(cfg: &Config, objects: Arc<Objects>, files: &[PathBuf]) -> Result<Summary, String> {
    let store = open_store(cfg);
    let mut decoder = Decoder::new(Arc::new(cfg.devices.clone()), Some(store.clone()));
    let (tx, rx) = channel();
    let live = LiveObjects::new(objects.clone());
    let mut pipeline = Pipeline::new(cfg, &live, 0, tx)?;
    let (hooks, hooks_tx, export_lua) = start_hooks(cfg, &objects, &live, None);
    drop(hooks_tx);
    let exporter = export::spawn(export_config(cfg, 1, export_lua), rx);
    // Metrics while replaying (a capture read from standard input can be scraped as it comes).
    let snapshot = Arc::new(parking_lot::Mutex::new(metrics::WorkerSnapshot { name: "replay".into(), ..Default::default() }));
    let metrics_thread = start_metrics(cfg, vec![snapshot.clone()], exporter.stats.clone(), hooks.stats.clone(), &live, Default::default(), &REPLAY_DONE)?;
    let result = replay_into(files, &mut decoder, &mut pipeline, |d, p| p.publish(d, &snapshot));
    pipeline.finish();
    REPLAY_DONE.store(true, Ordering::SeqCst);
    if let Some(h) = metrics_thread {
        let _ = h.join();
    }
    let export = exporter.join().map_err(|_| "export thread panicked".to_string())?;
    let hooks = stop_hooks(&objects, hooks)?;
    let skipped = result?;
    save_templates(&store, &mut log::RateLimit::new(Duration::from_secs(60)));
    let mut summary = Summary { export, hooks, ..Summary::default() };
    summary.add(&decoder, skipped);
    Ok(summary)
}

/// Feeds the UDP payloads of capture files, in order, through `decoder` into `sink`, calling
/// `after` at least twice a second and after the last datagram; returns the number of frames
/// that held no usable UDP datagram. `-` reads a capture from standard input, datagram by
/// datagram (so each is processed as soon as it arrives).
pub fn replay_into<S: ClockedSink>(
    files: &[PathBuf],
    decoder: &mut Decoder,
    sink: &mut S,
    mut after: impl FnMut(&Decoder, &mut S),
) -> Result<u64, String> {
    let mut skipped = 0;
    let mut last = Instant::now();
    for file in files {
        let mut batch = Batch::new(if file.as_os_str() == "-" { 1 } else { 64 });
        let mut src = pcap_source::open_file(file).map_err(|e| e.to_string())?;
        loop {
            match src.fill(&mut batch).map_err(|e| format!("{}: {e}", file.display()))? {
                Fill::End => break,
                Fill::Ready => process(&batch, decoder, sink),
            }
            if batch.capacity() == 1 || last.elapsed() >= Duration::from_millis(500) {
                after(decoder, sink);
                last = Instant::now();
            }
        }
        skipped += src.skipped();
    }
    after(decoder, sink);
    Ok(skipped)
}

/// A source ready to run in a worker, with a name for logs.
struct WorkerSpec {
    name: String,
    source: Box<dyn Source>,
    batch: usize,
}

/// Opens every capture source (so that errors surface before anything starts).
fn open_sources(cfg: &Config) -> Result<Vec<WorkerSpec>, String> {
    let mut out = Vec::new();
    for spec in &cfg.captures {
        match spec {
            CaptureSpec::Socket { listen_on, port, workers } => {
                let addr = listen_on.map(|a| a.to_string()).unwrap_or_else(|| "*".into());
                for w in 0..*workers {
                    let mut s = udp::bind(*listen_on, *port, cfg.rcvbufsize_m, *workers > 1)
                        .map_err(|e| format!("cannot listen on {addr} port {port}: {e}"))?;
                    if w == 0 && s.address_absent() {
                        s.watch_address(Instant::now());
                        log::warn(&format!(
                            "listen-on {addr}: not an address of this host (yet); listening on port {port} all the same, datagrams arrive once the address is up"
                        ));
                    }
                    if let (Some(m), Ok(got)) = (cfg.rcvbufsize_m, s.recv_buffer_size()) {
                        if (got as u64) < m << 20 {
                            log::warn(&format!(
                                "receive buffer of {addr}:{port} is {} KiB, less than rcvbufsize_m {m} MiB (raise net.core.rmem_max)",
                                got >> 10
                            ));
                        }
                    }
                    out.push(WorkerSpec { name: format!("udp {addr}:{port}#{w}"), source: Box::new(s), batch: 64 });
                }
            }
            CaptureSpec::Pcap { interface, filter } => {
                let s = pcap_source::LiveCapture::open(interface, filter).map_err(|e| e.to_string())?;
                out.push(WorkerSpec { name: format!("pcap {interface}"), source: Box::new(s), batch: 8 });
            }
        }
    }
    if !cfg.sflow_captures.is_empty() {
        log::warn("sflow-capture is not supported by this version; those elements are ignored");
    }
    Ok(out)
}

/// A running capture worker: its thread (which returns its decoder and the count of what its
/// source skipped) and what it shows the main thread.
struct Worker {
    thread: std::thread::JoinHandle<(Decoder, u64)>,
    published: Published,
}

/// Starts a worker thread receiving from `spec` into `pipeline` until shutdown.
fn start_worker(spec: WorkerSpec, decoder: Decoder, pipeline: Pipeline) -> Result<Worker, String> {
    let snapshot = Arc::new(parking_lot::Mutex::new(metrics::WorkerSnapshot {
        name: spec.name.clone(),
        socket_inode: spec.source.socket_inode(),
        ..Default::default()
    }));
    let beat = Arc::new(std::sync::atomic::AtomicU64::new(capture::now_ms()));
    log::info(&format!("listening: {}", spec.name));
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(pipeline.generation()));
    let published = Published { beat, generation, snapshot };
    let mut rounds = WorkerRounds::new(spec, decoder, pipeline, published.clone());
    let thread = std::thread::Builder::new()
        .name(rounds.name.clone())
        .spawn(move || {
            while !SHUTDOWN.load(Ordering::Relaxed) {
                rounds.round();
            }
            rounds.finish()
        })
        .map_err(|e| e.to_string())?;
    Ok(Worker { thread, published })
}

/// What a worker shows the main thread: its heartbeat (unix ms of its last round), the
/// configuration generation (see [`LiveObjects::generation`]) it is on, and its counters for
/// metrics.
#[derive(Clone, Default)]
struct Published {
    beat: Arc<std::sync::atomic::AtomicU64>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    snapshot: Arc<parking_lot::Mutex<metrics::WorkerSnapshot>>,
}

/// A worker thread's state from one round (a read from its source and what follows) to the
/// next.
struct WorkerRounds {
    name: String,
    source: Box<dyn capture::Source>,
    batch: Batch,
    decoder: Decoder,
    pipeline: Pipeline,
    published: Published,
    last_publish: Instant,
    failures: log::RateLimit,
    /// Since when the source fails (`None` while it works).
    failing_since: Option<Instant>,
    errors: ErrorReporter,
}

impl WorkerRounds {
    fn new(spec: WorkerSpec, decoder: Decoder, pipeline: Pipeline, published: Published) -> Self {
        let WorkerSpec { name, source, batch } = spec;
        WorkerRounds {
            errors: ErrorReporter::new(&name),
            name,
            source,
            batch: Batch::new(batch),
            decoder,
            pipeline,
            published,
            last_publish: Instant::now(),
            failures: log::RateLimit::new(Duration::from_secs(10)),
            failing_since: None,
        }
    }

    /// Reads what the source has (waiting a fraction of a second at most) and processes it.
    /// Windows close, and a reload takes effect, whether datagrams arrive or not, and also
    /// while the source fails (an interface gone, say): then the failure is logged (once per
    /// 10 s) and the round waits 100 ms.
    fn round(&mut self) {
        self.published.beat.store(capture::now_ms(), Ordering::Relaxed);
        if self.last_publish.elapsed() >= Duration::from_millis(500) {
            self.pipeline.publish(&self.decoder, &self.published.snapshot);
            self.last_publish = Instant::now();
        }
        self.pipeline.limit_sweep(objects::SWEEP_SLOTS_PER_BATCH);
        match self.source.fill(&mut self.batch) {
            Ok(_) => {
                if let Some(since) = self.failing_since.take() {
                    log::info(&format!("{}: works again after {:.1} s of errors", self.name, since.elapsed().as_secs_f64()));
                    // A new failure is logged at once.
                    self.failures = log::RateLimit::new(Duration::from_secs(10));
                }
                process(&self.batch, &mut self.decoder, &mut self.pipeline);
                self.errors.check(&self.decoder);
                match self.source.notice(Instant::now()) {
                    Some(capture::Notice::Info(text)) => log::info(&format!("{}: {text}", self.name)),
                    Some(capture::Notice::Warn(text)) => log::warn(&format!("{}: {text}", self.name)),
                    None => {}
                }
            }
            Err(e) => {
                self.failing_since.get_or_insert_with(Instant::now);
                if self.failures.allow(Instant::now()) {
                    log::error(&format!("{}: {e}", self.name));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.pipeline.tick(capture::now_ms());
        self.published.generation.store(self.pipeline.generation(), Ordering::Relaxed);
    }

    /// At shutdown: the windows go to the export thread; returns the decoder and the count of
    /// what the source skipped.
    fn finish(mut self) -> (Decoder, u64) {
        self.pipeline.finish();
        (self.decoder, self.source.skipped())
    }
}

/// The first of the collector's threads that has ended although no stop was asked for (it
/// panicked: a bug), by name.
fn stopped_thread(workers: &[Worker], hooks: &HookHandle, exporter: &export::ExportHandle) -> Option<String> {
    let worker = workers.iter().find(|w| w.thread.is_finished()).map(|w| format!("capture worker {}", w.thread.thread().name().unwrap_or("?")));
    worker.or_else(|| hooks.is_finished().then(|| "hook thread".to_string())).or_else(|| exporter.is_finished().then(|| "export thread".to_string()))
}

/// The main thread's work until SIGTERM/SIGINT: reloads on SIGHUP, pets the systemd watchdog
/// while every worker goes round its loop, saves the templates every 5 seconds, logs the
/// exporters that fall silent and come back (once a second, see [`ExporterWatching`]). A thread
/// that ended by itself (a panic) stops the collector with an error, so that the service
/// manager restarts it (open windows of the other workers are written, active alerts taken
/// up again) rather than leaving it running without capture, alerts or exports. Returns it.
#[allow(clippy::too_many_arguments)]
fn supervise(
    cfg: &Config,
    live: &Arc<LiveObjects>,
    hooks_tx: &std::sync::mpsc::SyncSender<mavg::Event>,
    workers: &[Worker],
    hooks: &HookHandle,
    exporter: &export::ExportHandle,
    store: &TemplateStore,
    save_limiter: &mut log::RateLimit,
    retirements: &mut Retirements,
    mut exporters: ExporterWatching,
) -> Option<String> {
    let watchdog = systemd::watchdog_interval();
    let mut last_pet = Instant::now();
    let mut last_save = Instant::now();
    while !SHUTDOWN.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(what) = stopped_thread(workers, hooks, exporter) {
            // Looked at after the thread was seen ended: a stop asked for meanwhile (SIGTERM
            // during the sleep) ends the workers, and then the export thread, by design.
            if SHUTDOWN.load(Ordering::SeqCst) {
                break;
            }
            log::error(&format!("the {what} stopped unexpectedly (a bug: please report it with this log); stopping, for the service manager to restart the collector"));
            request_shutdown();
            return Some(what);
        }
        if RELOAD.swap(false, Ordering::SeqCst) {
            systemd::notify("RELOADING=1");
            retirements.waiting.extend(reload(cfg, live, hooks_tx));
            systemd::notify("READY=1");
        }
        retirements.go_on(workers, hooks_tx);
        // The watchdog is petted only while every worker goes round its loop (each waits at
        // most 200 ms for datagrams), so a stuck worker gets the service restarted.
        if watchdog.is_some_and(|w| last_pet.elapsed() >= w) {
            let now = capture::now_ms();
            if workers.iter().all(|w| now.saturating_sub(w.published.beat.load(Ordering::Relaxed)) < 10_000) {
                systemd::notify("WATCHDOG=1");
            }
            last_pet = Instant::now();
        }
        if last_save.elapsed() >= Duration::from_secs(5) {
            save_templates(store, save_limiter);
            last_save = Instant::now();
        }
        exporters.go_on();
    }
    None
}

/// The main thread's look at the exporters, once a second (see [`metrics::ExporterWatch`]).
struct ExporterWatching {
    snapshots: Vec<Arc<parking_lot::Mutex<metrics::WorkerSnapshot>>>,
    watch: Arc<parking_lot::Mutex<metrics::ExporterWatch>>,
    last: Instant,
}

impl ExporterWatching {
    fn go_on(&mut self) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let exporters = metrics::exporters_of(&self.snapshots);
        for (warning, line) in self.watch.lock().look(&exporters, capture::now_ms()) {
            if warning {
                log::warn(&line);
            } else {
                log::info(&line);
            }
        }
    }
}

/// Runs the collector until SIGTERM/SIGINT; returns the counters of the whole run.
pub fn run(cfg: &Config, objects: Arc<Objects>) -> Result<Summary, String> {
    install_signal_handlers();
    let store = open_store(cfg);
    let devices = Arc::new(cfg.devices.clone());
    let specs = open_sources(cfg)?;
    if specs.is_empty() {
        return Err("no capture element: nothing to listen on".into());
    }
    let (tx, rx) = channel();
    let live = LiveObjects::new(objects.clone());
    take_up_alerts(cfg, &objects.mavgs, capture::now_ms());
    let silence = Arc::new(parking_lot::Mutex::new(metrics::ExporterWatch::new(cfg.exporter_silence.saturating_mul(1000))));
    let silent = silence.clone();
    let silent_now = hooks::SilentExporters(Arc::new(move || silent.lock().silent(capture::now_ms())));
    let (hooks, hooks_tx, export_lua) = start_hooks(cfg, &objects, &live, Some(silent_now));
    let exporter = export::spawn(export_config(cfg, specs.len(), export_lua), rx);
    let (export_stats, hook_stats) = (exporter.stats.clone(), hooks.stats.clone());
    let mut workers = Vec::new();
    for (no, spec) in specs.into_iter().enumerate() {
        let decoder = Decoder::new(devices.clone(), Some(store.clone()));
        let mut pipeline = Pipeline::new(cfg, &live, no, tx.clone())?;
        pipeline.use_monotonic_clock();
        workers.push(start_worker(spec, decoder, pipeline)?);
    }
    let mut save_limiter = log::RateLimit::new(Duration::from_secs(60));
    let snapshots: Vec<_> = workers.iter().map(|w| w.published.snapshot.clone()).collect();
    let watch = ExporterWatching { snapshots: snapshots.clone(), watch: silence, last: Instant::now() };
    let metrics_thread = start_metrics(cfg, snapshots, export_stats, hook_stats, &live, watch.watch.clone(), &SHUTDOWN)?;
    systemd::notify(&format!("READY=1\nSTATUS={}, {}", log::counted(workers.len(), "worker"), objects.summary()));
    let mut retirements = Retirements::default();
    let stopped = supervise(cfg, &live, &hooks_tx, &workers, &hooks, &exporter, &store, &mut save_limiter, &mut retirements, watch);
    systemd::notify("STOPPING=1");
    hooks.stopping();
    if let Some(h) = metrics_thread {
        let _ = h.join();
    }
    let mut summary = Summary::default();
    for w in workers {
        match w.thread.join() {
            Ok((decoder, skipped)) => summary.add(&decoder, skipped),
            Err(_) => log::error("a capture worker panicked"),
        }
    }
    // The workers are done: what the last reloads replaced can be retired.
    retirements.finish(&hooks_tx);
    drop(tx);
    drop(hooks_tx);
    summary.export = exporter.join().map_err(|_| "export thread panicked".to_string())?;
    // Every generation's moving averages let go of the hook queue (the first one is still held
    // here; replaced ones in between are gone with their last reference).
    for m in &objects.mavgs {
        m.set_events(None);
    }
    // Before the hooks: their scripts may hold the stop up to a script timeout.
    save_templates(&store, &mut save_limiter);
    summary.hooks = stop_hooks(&live.get(), hooks)?;
    match stopped {
        Some(what) => Err(format!("stopped because the {what} ended unexpectedly")),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    fn worker(name: &str, body: fn() -> (Decoder, u64)) -> Worker {
        let thread = std::thread::Builder::new().name(name.into()).spawn(body).unwrap();
        Worker { thread, published: Published::default() }
    }

    fn until(f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_thread_that_ended_by_itself_is_named() {
        let dir = TestDir::new("daemon-stopped");
        let (_event_tx, event_rx) = sync_channel(1);
        let hook_cfg = HookConfig {
            notifications_dir: dir.to_path_buf(),
            script_timeout: Duration::from_secs(1),
            max_scripts: 1,
            max_queued: 1,
            max_parked: 1,
            lua: hooks::lua::LuaConfig::default(),
            lua_threads: 1,
            lua_queue: 1,
            stop_grace: hooks::EVENT_GRACE,
            silent_exporters: None,
        };
        let hooks = hooks::spawn(hook_cfg, event_rx, None);
        let (export_tx, export_rx) = channel();
        let (lua_tx, _lua_rx) = sync_channel(1);
        let export_cfg = ExportConfig {
            dir: dir.to_path_buf(),
            db_export: None,
            db_export_timeout: Duration::from_secs(1),
            workers: 1,
            retry_every: Duration::from_secs(1),
            final_retry: Duration::from_secs(1),
            max_backlog: 1 << 20,
            lua: Some(lua_tx),
        };
        let exporter = export::spawn(export_cfg, export_rx);
        static STOP: AtomicBool = AtomicBool::new(false);
        let idle = || {
            while !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            (Decoder::new(Arc::default(), None), 0)
        };
        let mut workers = vec![worker("udp *:2055#0", idle)];
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(stopped_thread(&workers, &hooks, &exporter), None, "all running");
        workers.push(worker("udp *:2055#1", || panic!("a bug")));
        until(|| workers[1].thread.is_finished());
        assert_eq!(stopped_thread(&workers, &hooks, &exporter).as_deref(), Some("capture worker udp *:2055#1"));
        workers.pop();
        drop(export_tx); // the export thread ends once no worker can send to it
        until(|| exporter.is_finished());
        assert_eq!(stopped_thread(&workers, &hooks, &exporter).as_deref(), Some("export thread"));
        STOP.store(true, Ordering::Relaxed);
        for w in workers {
            w.thread.join().unwrap();
        }
    }

    #[test]
    fn replaced_alerts_end_only_once_every_worker_has_moved_on() {
        use crate::fields::FieldId;
        let dir = TestDir::new("daemon-retire");
        let file = dir.join("mo.conf");
        let conf = r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [10], "back2norm-time": 10}]}"#;
        let node = crate::config::json::parse(conf, &file).unwrap();
        let m = Arc::new(mavg::parse(&file, "obj", &dir, &node, 0).unwrap());
        let (tx, rx) = sync_channel(10);
        m.set_events(Some(tx));
        let mut flow = Flow::default();
        flow.set(FieldId::DstHost, 7);
        flow.set(FieldId::Octets, 1000);
        m.update(&flow, 1_700_000_000_000);
        let start = rx.try_recv().unwrap();
        assert_eq!(start.phase, mavg::Phase::Start);
        let workers = vec![worker("w0", || (Decoder::new(Arc::default(), None), 0)), worker("w1", || (Decoder::new(Arc::default(), None), 0))];
        // The hook queue: room for nothing more.
        let (hooks_tx, hooks_rx) = sync_channel(1);
        hooks_tx.send(mavg::Event { phase: mavg::Phase::Update, ..start.clone() }).unwrap();
        let mut retirements = Retirements::default();
        retirements.waiting.push(Retiring { generation: 3, mavgs: vec![m.clone()], taken: Vec::new() });
        workers[0].published.generation.store(3, Ordering::Relaxed);
        workers[1].published.generation.store(2, Ordering::Relaxed);
        retirements.go_on(&workers, &hooks_tx);
        assert_eq!((retirements.waiting.len(), retirements.unsent.len()), (1, 0), "a worker is still on the replaced objects");
        workers[1].published.generation.store(3, Ordering::Relaxed);
        retirements.go_on(&workers, &hooks_tx);
        assert_eq!((retirements.waiting.len(), retirements.unsent.len()), (0, 1), "retired; its end waits for room");
        assert_eq!(hooks_rx.try_recv().unwrap().phase, mavg::Phase::Update);
        retirements.go_on(&workers, &hooks_tx);
        let ended = hooks_rx.try_recv().unwrap();
        assert_eq!((ended.phase, ended.notification_name()), (mavg::Phase::Back2Norm, "obj-m-l-0.0.0.7".to_string()));
        assert!(retirements.unsent.is_empty() && hooks_rx.try_recv().is_err(), "once");
        assert!(rx.try_recv().is_err(), "nothing through the moving average's own sender");
        for w in workers {
            w.thread.join().unwrap();
        }
    }

    /// A source whose every read fails (as a pcap source whose interface went away).
    struct Failing;
    impl capture::Source for Failing {
        fn fill(&mut self, _: &mut Batch) -> std::io::Result<capture::Fill> {
            Err(std::io::Error::other("interface down"))
        }
    }

    #[test]
    fn a_worker_whose_source_fails_still_takes_up_a_reload() {
        let dir = TestDir::new("daemon-failing");
        std::fs::create_dir_all(dir.join("mo")).unwrap();
        let file = dir.join("xenoeye.conf");
        std::fs::write(&file, r#"{"capture": [], "mo-dir": "mo", "export-dir": "exp", "notifications-dir": "n", "iplists-dir": "mo"}"#).unwrap();
        let cfg = crate::config::load(&file).unwrap();
        let live = LiveObjects::new(Arc::new(Objects::default()));
        let (tx, rx) = channel();
        let pipeline = Pipeline::new(&cfg, &live, 0, tx).unwrap();
        let published = Published::default();
        let spec = WorkerSpec { name: "failing".into(), source: Box::new(Failing), batch: 1 };
        let mut rounds = WorkerRounds::new(spec, Decoder::new(Arc::default(), None), pipeline, published);
        rounds.round();
        assert_eq!(rounds.published.generation.load(Ordering::Relaxed), live.generation());
        live.replace(Arc::new(Objects::default()));
        let reloaded = live.generation();
        assert!(reloaded > 0);
        rounds.round();
        // The worker is on the new configuration (so what the reload replaced can be retired)
        // although it has received nothing.
        assert_eq!(rounds.published.generation.load(Ordering::Relaxed), reloaded);
        assert!(rounds.published.beat.load(Ordering::Relaxed) > 0);
        drop(rounds.finish());
        drop(rx);
    }
}
