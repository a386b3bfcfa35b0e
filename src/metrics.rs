//! Self-metrics: everything that moves, in Prometheus text format on `/metrics`, and the same
//! as a small human-readable status page on `/`, served on the address of `metrics-listen`.
//!
//! Workers publish a snapshot of their counters about once a second (copying a few counters,
//! never per flow); the export thread, the hook thread and the moving averages keep their own
//! counters. A scrape reads them all; it never touches the flow path.

use crate::decode::{DecodeError, DecodeStats, ExporterMap, ExporterStats};
use crate::export::ExportStats;
use crate::hooks::HookStats;
use crate::objects::LiveObjects;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one worker last published.
#[derive(Clone, Debug, Default)]
pub struct WorkerSnapshot {
    pub name: String,
    pub decode: DecodeStats,
    pub exporters: ExporterMap,
    pub templates: usize,
    /// Flows matched per object.
    pub objects: Vec<(String, u64)>,
    /// Inode of the worker's UDP socket (kernel drops are read from /proc/net/udp*).
    pub socket_inode: Option<u64>,
    /// Steps of the system clock (a second or more) the moving averages' clock took out.
    pub clock_steps: u64,
}

/// Everything a scrape reads.
pub struct Registry {
    pub workers: Vec<Arc<Mutex<WorkerSnapshot>>>,
    pub export: Arc<Mutex<ExportStats>>,
    pub hooks: Arc<Mutex<HookStats>>,
    pub live: Arc<LiveObjects>,
    pub started: std::time::Instant,
    /// Exporters' silences (live runs; empty in a replay).
    pub exporters: Arc<Mutex<ExporterWatch>>,
}

/// Exporters that fell silent. An exporter's traffic that stops arriving is not traffic that
/// dropped, but the moving averages cannot tell: its keys' underlimits start and their
/// overlimits cannot. So the log says when an exporter sent nothing for `exporter-silence`
/// seconds and when it sends again, and `xenoeye_exporter_idle_seconds` shows for how long.
/// The main thread feeds it about once a second from the workers' snapshots (never from the
/// flow path).
#[derive(Debug, Default)]
pub struct ExporterWatch {
    /// A silence this long is logged (ms; 0: never).
    silent_after_ms: u64,
    seen: BTreeMap<IpAddr, Seen>,
}

#[derive(Debug)]
struct Seen {
    datagrams: u64,
    /// When `datagrams` last moved (ms; when first seen, for an exporter seen first).
    moved_ms: u64,
    /// The silence was logged.
    told: bool,
}

impl Seen {
    /// Seconds since the exporter's datagrams last came, as of `now_ms`.
    fn idle_s(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.moved_ms) / 1000
    }
}

impl ExporterWatch {
    /// A watch that logs silences of `silent_after_ms` (0: none; the gauge is kept all the same).
    pub fn new(silent_after_ms: u64) -> ExporterWatch {
        ExporterWatch { silent_after_ms, seen: BTreeMap::new() }
    }

    /// Takes each exporter's counters so far (see [`exporters_of`]) at `now_ms`; returns what
    /// to log: (a warning?, the line).
    pub fn look(&mut self, exporters: &BTreeMap<IpAddr, ExporterStats>, now_ms: u64) -> Vec<(bool, String)> {
        let mut said = Vec::new();
        // The unspecified address counts the exporters beyond the ones counted one by one.
        for (&ip, e) in exporters.iter().filter(|(ip, _)| !ip.is_unspecified()) {
            let n = e.datagrams;
            let seen = self.seen.entry(ip).or_insert(Seen { datagrams: n, moved_ms: now_ms, told: false });
            let idle_s = seen.idle_s(now_ms);
            if n != seen.datagrams {
                if seen.told {
                    said.push((false, format!("exporter {ip} sends again after {idle_s} s of silence")));
                }
                *seen = Seen { datagrams: n, moved_ms: now_ms, told: false };
            } else if !seen.told && self.silent_after_ms > 0 && now_ms.saturating_sub(seen.moved_ms) >= self.silent_after_ms {
                seen.told = true;
                said.push((
                    true,
                    format!("exporter {ip} silent for {idle_s} s: its traffic is missing from the windows and moving averages (underlimits of its keys may start, overlimits cannot)"),
                ));
            }
        }
        said
    }

    /// The exporters whose silence was logged and who have not sent since, with the seconds
    /// since their last datagram as of `now_ms`.
    pub fn silent(&self, now_ms: u64) -> Vec<(IpAddr, u64)> {
        self.seen.iter().filter(|(_, s)| s.told).map(|(ip, s)| (*ip, s.idle_s(now_ms))).collect()
    }

    /// Seconds since each exporter's datagrams last came, as of `now_ms`.
    pub fn idle_seconds(&self, now_ms: u64) -> Vec<(IpAddr, u64)> {
        self.seen.iter().map(|(ip, s)| (*ip, s.idle_s(now_ms))).collect()
    }
}

/// Each exporter's counters summed over the workers' published snapshots (as
/// the scrapes sum them, without cloning the snapshots).
pub fn exporters_of(workers: &[Arc<Mutex<WorkerSnapshot>>]) -> BTreeMap<IpAddr, ExporterStats> {
    let snaps: Vec<_> = workers.iter().map(|w| w.lock()).collect();
    sum_exporters(snaps.iter().map(|w| &w.exporters))
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Socket inode -> drops, from /proc/net/udp and /proc/net/udp6.
fn kernel_drops() -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for f in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let (Some(inode), Some(drops)) = (cols.get(9), cols.last()) {
                if let (Ok(i), Ok(d)) = (inode.parse::<u64>(), drops.parse::<u64>()) {
                    out.insert(i, d);
                }
            }
        }
    }
    out
}

impl Registry {
    fn snapshots(&self) -> Vec<WorkerSnapshot> {
        self.workers.iter().map(|w| w.lock().clone()).collect()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let snaps = self.snapshots();
        let mut out = Exposition::default();
        decode_metrics(&mut out, &snaps);
        worker_metrics(&mut out, &snaps);
        export_metrics(&mut out, &self.export.lock().clone());
        mavg_metrics(&mut out, &self.live.get());
        hook_metrics(&mut out, &self.hooks.lock().clone());
        let idle = self.exporters.lock().idle_seconds(crate::capture::now_ms());
        let rows = idle.into_iter().map(|(ip, s)| (format!("{{exporter=\"{ip}\"}}"), s)).collect();
        out.metric("exporter_idle_seconds", "gauge", "Seconds since the exporter's last datagram (live runs).", rows);
        out.one("uptime_seconds", "gauge", "Seconds since start.", self.started.elapsed().as_secs());
        out.text
    }

    /// The status page: objects, active limits, exports, hooks and exporters.
    pub fn status_page(&self) -> String {
        let objects = self.live.get();
        let snaps = self.snapshots();
        let flows = object_flow_totals(&snaps);
        let mut s = String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>xenoeye</title></head><body><h1>xenoeye</h1>");
        let _ = write!(s, "<p>up {} s; <a href=\"/metrics\">metrics</a></p><h2>Monitoring objects</h2><table><tr><th>object</th><th>flows</th></tr>", self.started.elapsed().as_secs());
        for (o, n) in &flows {
            let _ = write!(s, "<tr><td>{}</td><td>{n}</td></tr>", html(o));
        }
        s.push_str("</table><h2>Moving averages</h2><table><tr><th>object</th><th>mavg</th><th>keys</th><th>active limits</th></tr>");
        for m in &objects.mavgs {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&m.object),
                html(&m.name),
                m.stats.keys.load(Ordering::Relaxed),
                m.stats.active.load(Ordering::Relaxed)
            );
        }
        let e = self.export.lock().clone();
        let _ = write!(
            s,
            "</table><h2>Exports</h2><p>files {}, rows {}, write failures {}, lost {}</p><ul>",
            e.files_written, e.rows_written, e.write_failures, e.files_lost
        );
        for f in e.recent.iter().rev() {
            let _ = write!(s, "<li>{}</li>", html(f));
        }
        let h = self.hooks.lock().clone();
        let _ = write!(
            s,
            "</ul><h2>Hooks</h2><p>alert events {}, parked {}; scripts running {}, waiting {} (oldest {} s), started {}, ok {}, failed {}, timed out {}, dropped {}; \
             Lua calls {}, errors {}, cut {}, dropped {}</p>",
            h.events, h.events_waiting, h.scripts_running, h.scripts_waiting, h.oldest_wait_s(), h.scripts_started, h.scripts_ok, h.scripts_failed, h.scripts_timed_out, h.scripts_dropped, h.lua.calls, h.lua.errors, h.lua.cut, h.lua.dropped
        );
        s.push_str("<h2>Exporters</h2><table><tr><th>exporter</th><th>datagrams</th><th>flows</th><th>errors</th><th>idle s</th></tr>");
        let idle: HashMap<IpAddr, u64> = self.exporters.lock().idle_seconds(crate::capture::now_ms()).into_iter().collect();
        for (ip, e) in exporter_totals(&snaps) {
            let idle = idle.get(&ip).map_or(String::new(), |s| s.to_string());
            let _ = write!(s, "<tr><td>{ip}</td><td>{}</td><td>{}</td><td>{}</td><td>{idle}</td></tr>", e.datagrams, e.flows, e.errors);
        }
        s.push_str("</table></body></html>\n");
        s
    }
}

/// Each exporter's counters summed over the workers, in address order.
/// A Prometheus text exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// A metric with its help and type lines, one sample per (labels, value).
    fn metric(&mut self, name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>) {
        let _ = writeln!(self.text, "# HELP xenoeye_{name} {help}\n# TYPE xenoeye_{name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(self.text, "xenoeye_{name}{labels} {v}");
        }
    }

    /// A metric of one sample without labels.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.metric(name, kind, help, vec![(String::new(), value)]);
    }
}

/// Per-worker samples (`worker` label) of `f`.
fn per_worker(snaps: &[WorkerSnapshot], f: impl Fn(&WorkerSnapshot) -> Option<u64>) -> Vec<(String, u64)> {
    snaps.iter().filter_map(|w| f(w).map(|v| (format!("{{worker=\"{}\"}}", esc(&w.name)), v))).collect()
}

/// What the decoders counted: per exporter, per error reason, templates.
fn decode_metrics(out: &mut Exposition, snaps: &[WorkerSnapshot]) {
    let exporters = exporter_totals(snaps);
    let mut total = DecodeStats::default();
    for w in snaps {
        total.add(&w.decode);
    }
    let per_exporter = |f: fn(&ExporterStats) -> u64| exporters.iter().map(|(ip, e)| (format!("{{exporter=\"{ip}\"}}"), f(e))).collect::<Vec<_>>();
    out.metric("datagrams_total", "counter", "Datagrams received, per exporter.", per_exporter(|e| e.datagrams));
    out.metric("datagram_bytes_total", "counter", "Bytes of datagrams received, per exporter.", per_exporter(|e| e.bytes));
    out.metric("flows_total", "counter", "Flows decoded, per exporter.", per_exporter(|e| e.flows));
    out.metric("flow_octets_total", "counter", "Octets of the flows decoded (sampling applied), per exporter.", per_exporter(|e| e.octets));
    out.metric("exporter_errors_total", "counter", "Decode errors, per exporter.", per_exporter(|e| e.errors));
    let reasons = DecodeError::ALL.iter().map(|e| (format!("{{reason=\"{}\"}}", e.name()), total.error(*e))).collect();
    out.metric("decode_errors_total", "counter", "Decode errors by reason.", reasons);
    out.one("options_records_total", "counter", "Options data records decoded.", total.options_records);
    let events = vec![
        ("{event=\"new\"}".into(), total.templates_new),
        ("{event=\"changed\"}".into(), total.templates_changed),
        ("{event=\"withdrawn\"}".into(), total.templates_withdrawn),
    ];
    out.metric("template_events_total", "counter", "Template records that were new, changed or withdrawals.", events);
}

/// Per worker: templates, clock steps, kernel drops; per object: flows matched.
fn worker_metrics(out: &mut Exposition, snaps: &[WorkerSnapshot]) {
    out.metric("templates", "gauge", "Templates held, per worker.", per_worker(snaps, |w| Some(w.templates as u64)));
    let steps = per_worker(snaps, |w| Some(w.clock_steps));
    out.metric("clock_steps_total", "counter", "Steps of the system clock (1 s or more, either way) taken out of the moving averages' clock, per worker.", steps);
    let drops = kernel_drops();
    let dropped = per_worker(snaps, |w| w.socket_inode.map(|i| drops.get(&i).copied().unwrap_or(0)));
    out.metric("kernel_drops_total", "counter", "Datagrams the kernel dropped on the worker's socket (receive buffer full).", dropped);
    let objects = object_flow_totals(snaps).iter().map(|(o, n)| (format!("{{object=\"{}\"}}", esc(o)), *n)).collect();
    out.metric("object_flows_total", "counter", "Flows matched per monitoring object (since the last reload).", objects);
}

/// The export thread's counters.
fn export_metrics(out: &mut Exposition, e: &ExportStats) {
    out.one("export_files_total", "counter", "Export files written.", e.files_written);
    out.one("export_rows_total", "counter", "Rows written to export files.", e.rows_written);
    out.one("export_write_failures_total", "counter", "Failed attempts to write an export file (retried).", e.write_failures);
    out.one("export_files_lost_total", "counter", "Export files given up (unwritten at shutdown, or the oldest past export-backlog-m).", e.files_lost);
    out.one("fwm_folded_total", "counter", "Flows of new keys that full window maps (mem-m) summed into their NULL-key row.", e.folded);
    out.one("export_backlog_bytes", "gauge", "Bytes of export files kept in memory until they can be written.", e.backlog_bytes);
    out.one("db_export_runs_total", "counter", "Runs of the db-export program.", e.db_export_runs);
    out.one("db_export_timeouts_total", "counter", "Runs of the db-export program killed after db-export-timeout.", e.db_export_timeouts);
}

/// Per moving average (`object`, `mavg` labels), the sweeps, and the tables made ahead.
fn mavg_metrics(out: &mut Exposition, objects: &crate::objects::Objects) {
    let rows = |f: &dyn Fn(&crate::objects::mavg::Mavg) -> u64| {
        objects.mavgs.iter().map(|m| (format!("{{object=\"{}\",mavg=\"{}\"}}", esc(&m.object), esc(&m.name)), f(m))).collect::<Vec<_>>()
    };
    out.metric("mavg_keys", "gauge", "Keys tracked per moving average.", rows(&|m| m.stats.keys.load(Ordering::Relaxed) as u64));
    out.metric("mavg_memory_bytes", "gauge", "Memory used per moving average (bounded by mem-m).", rows(&|m| m.memory_bytes() as u64));
    out.metric("mavg_keys_dropped_total", "counter", "New keys not tracked because mem-m was full.", rows(&|m| m.stats.keys_dropped.load(Ordering::Relaxed)));
    out.metric("mavg_active_limits", "gauge", "Overlimits and underlimits holding now.", rows(&|m| m.stats.active.load(Ordering::Relaxed) as u64));
    out.metric("mavg_events_dropped_total", "counter", "Notification rewrites and dumps dropped (hook queue full).", rows(&|m| m.stats.events_dropped.load(Ordering::Relaxed)));
    out.metric("mavg_events_held", "gauge", "Limit starts and ends waiting for room in the hook queue (sent again every second).", rows(&|m| m.held_events() as u64));
    let sweeps = &objects.sweep_stats;
    out.one("mavg_sweeps_total", "counter", "Once-a-second passes over every moving average's table (since the last reload).", sweeps.passes.load(Ordering::Relaxed));
    let last = sweeps.last_us.load(Ordering::Relaxed);
    out.one("mavg_sweep_last_microseconds", "gauge", "Time the last pass spent sweeping, its pieces together (workers do it between batches).", last);
    use crate::objects::slots::{PREFAULTED_BYTES, PREFAULT_SKIPPED};
    out.one("prefault_bytes_total", "counter", "Bytes of tables made ahead that the prefault thread faulted in, off the workers.", PREFAULTED_BYTES.load(Ordering::Relaxed));
    let skipped = PREFAULT_SKIPPED.load(Ordering::Relaxed);
    out.one("prefault_skipped_total", "counter", "Tables made ahead left to be faulted in at first use (queue full, or a kernel before 5.14).", skipped);
}

/// The hook thread's counters: scripts and Lua calls by outcome, events.
fn hook_metrics(out: &mut Exposition, h: &HookStats) {
    let scripts = vec![
        ("{outcome=\"started\"}".into(), h.scripts_started),
        ("{outcome=\"ok\"}".into(), h.scripts_ok),
        ("{outcome=\"failed\"}".into(), h.scripts_failed),
        ("{outcome=\"timed_out\"}".into(), h.scripts_timed_out),
        ("{outcome=\"dropped\"}".into(), h.scripts_dropped),
    ];
    out.metric("hook_scripts_total", "counter", "Hook scripts by outcome.", scripts);
    let lua = vec![
        ("{outcome=\"called\"}".into(), h.lua.calls),
        ("{outcome=\"error\"}".into(), h.lua.errors),
        ("{outcome=\"cut\"}".into(), h.lua.cut),
        ("{outcome=\"dropped\"}".into(), h.lua.dropped),
    ];
    out.metric("lua_hook_calls_total", "counter", "Lua hook calls (action-lua, back2norm-lua, export-lua) by outcome.", lua);
    out.one("lua_hook_calls_waiting", "gauge", "Lua hook calls not made yet: running, or waiting for their object's turn.", h.lua_unfinished);
    out.one("hook_events_total", "counter", "Alert events handled by the hook thread.", h.events);
    out.one("hook_scripts_waiting", "gauge", "Hook scripts waiting for their turn (max-scripts run at once).", h.scripts_waiting);
    out.one("hook_scripts_running", "gauge", "Hook scripts running.", h.scripts_running);
    out.one(
        "hook_events_waiting",
        "gauge",
        "Alert events parked behind their limit's full lane of waiting scripts (taken as it drains).",
        h.events_waiting,
    );
    out.one(
        "hook_oldest_wait_seconds",
        "gauge",
        "How long the oldest hook script waiting has waited (0: none waits): how late the hooks react to new alerts.",
        h.oldest_wait_s(),
    );
    out.one(
        "hook_rewrites_skipped_total",
        "counter",
        "Notification rewrites skipped for coming while their limit's events were parked (each comes again 3 s later).",
        h.rewrites_skipped,
    );
    out.one(
        "hook_events_reconciled_total",
        "counter",
        "Alert events that did not match the alert's state: a start of one already on (file rewritten only), an end of one not on (skipped), a rewrite of one not on (started again).",
        h.events_reconciled,
    );
}

fn exporter_totals(snaps: &[WorkerSnapshot]) -> BTreeMap<IpAddr, ExporterStats> {
    sum_exporters(snaps.iter().map(|w| &w.exporters))
}

/// Workers' exporter counters summed per exporter, in address order.
fn sum_exporters<'a>(maps: impl Iterator<Item = &'a ExporterMap>) -> BTreeMap<IpAddr, ExporterStats> {
    let mut totals: BTreeMap<IpAddr, ExporterStats> = BTreeMap::new();
    for (ip, e) in maps.flatten() {
        totals.entry(*ip).or_default().add(e);
    }
    totals
}

/// Flows matched per monitoring object, summed over the workers, in name order.
fn object_flow_totals(snaps: &[WorkerSnapshot]) -> BTreeMap<String, u64> {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (name, n) in snaps.iter().flat_map(|w| &w.objects) {
        *totals.entry(name.clone()).or_insert(0) += n;
    }
    totals
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// How long a client has to send its request and to take the answer, the longest request head
/// it may send, and how many are served at once. A scrape is one small request; a client that
/// sends more or sends it slowly (a stalled proxy, a slowloris) is cut off, and idle
/// connections (a scanner's) wait beside the others rather than in front of them, the oldest
/// closed when too many are open.
const CLIENT_TIME: Duration = Duration::from_secs(5);
const MAX_REQUEST_HEAD: usize = 8192;
const MAX_CLIENTS: usize = 64;
/// How long the server waits at most before it looks at its stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Serves `/metrics` and `/` until `stop` is set. Returns the bound address.
pub fn serve(addr: SocketAddr, reg: Arc<Registry>, stop: &'static AtomicBool) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    serve_clients(addr, reg, stop, CLIENT_TIME)
}

/// [`serve`], each client given `client_time`. One thread, every socket non-blocking: each
/// round waits (poll(2)) until a connection comes, a client's socket can go on or a client's
/// time is up, then takes new connections, reads what came, answers the requests that are
/// whole and writes what the sockets take.
fn serve_clients(addr: SocketAddr, reg: Arc<Registry>, stop: &'static AtomicBool, client_time: Duration) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let h = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        let mut clients: Vec<Client> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            take_connections(&listener, &mut clients, client_time);
            let now = Instant::now();
            clients.retain_mut(|c| c.step(&reg, now));
            wait_for_any(&listener, &clients, STOP_CHECK);
        }
    })?;
    Ok((local, h))
}

/// Adds the connections waiting on the listener to `clients`, each given `client_time`; beyond
/// [`MAX_CLIENTS`], the oldest is closed.
fn take_connections(listener: &TcpListener, clients: &mut Vec<Client>, client_time: Duration) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_ok() {
                    clients.push(Client { stream, deadline: Instant::now() + client_time, head: Vec::new(), answer: None });
                }
                if clients.len() > MAX_CLIENTS {
                    clients.remove(0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                // Out of file descriptors, say: the connection stays queued and the listener
                // readable, so wait rather than poll again at once.
                std::thread::sleep(STOP_CHECK);
                return;
            }
        }
    }
}

/// Waits until the listener has a connection, a client's socket is ready for what the client
/// waits for (its request, or room for its answer), a client's deadline passes, or `most`
/// has passed.
fn wait_for_any(listener: &TcpListener, clients: &[Client], most: Duration) {
    use std::os::fd::AsRawFd;
    let watch = |fd: i32, events: i16| libc::pollfd { fd, events, revents: 0 };
    let mut fds = Vec::with_capacity(clients.len() + 1);
    fds.push(watch(listener.as_raw_fd(), libc::POLLIN));
    for c in clients {
        fds.push(watch(c.stream.as_raw_fd(), if c.answer.is_some() { libc::POLLOUT } else { libc::POLLIN }));
    }
    let now = Instant::now();
    let wait = clients.iter().map(|c| c.deadline.saturating_duration_since(now)).fold(most, Duration::min);
    // Rounded up: a deadline is never polled for in a busy loop of zero-millisecond waits.
    let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries for the call's duration.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

/// A connection being served.
struct Client {
    stream: TcpStream,
    /// When it is closed, answered or not.
    deadline: Instant,
    /// The request line and headers so far.
    head: Vec<u8>,
    /// The answer, once the request is whole, and how much of it the socket took.
    answer: Option<(Vec<u8>, usize)>,
}

impl Client {
    /// Reads what came and writes what the socket takes; false once the client is done with
    /// (answered, gone, past its deadline, or its request too long).
    fn step(&mut self, reg: &Registry, now: Instant) -> bool {
        if now >= self.deadline {
            return false;
        }
        if self.answer.is_none() {
            match self.read() {
                Some(true) => self.answer = Some((answer(reg, &String::from_utf8_lossy(&self.head)), 0)),
                Some(false) => return true, // more to come
                None => return false,
            }
        }
        let (out, sent) = self.answer.as_mut().expect("answered above");
        while *sent < out.len() {
            match self.stream.write(&out[*sent..]) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        false
    }

    /// Reads what the socket has: Some(true) once the head is whole (its blank line, or the
    /// client's end of sending), Some(false) while it is not, None on an error or a head past
    /// [`MAX_REQUEST_HEAD`].
    fn read(&mut self) -> Option<bool> {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) if self.head.is_empty() => return None, // connected and gone
                Ok(0) => return Some(true),
                Ok(n) => self.head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return None,
            }
            if self.head.len() > MAX_REQUEST_HEAD {
                return None;
            }
        }
        Some(self.head.windows(4).any(|w| w == b"\r\n\r\n") || self.head.windows(2).any(|w| w == b"\n\n"))
    }
}

/// The HTTP answer to a request head.
fn answer(reg: &Registry, head: &str) -> Vec<u8> {
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", reg.render()),
        "/" => ("200 OK", "text/html; charset=utf-8", reg.status_page()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::iplist::IpLists;
    use crate::testdir::TestDir;
    use std::io::ErrorKind;

    /// A server (clients given 300 ms) over no workers and no objects.
    fn server() -> (SocketAddr, TestDir) {
        let d = TestDir::new("metrics-clients");
        let objects = crate::objects::load(&d, &IpLists::new()).unwrap();
        let reg = Registry {
            workers: Vec::new(),
            export: Default::default(),
            hooks: Default::default(),
            live: LiveObjects::new(Arc::new(objects)),
            started: Instant::now(),
            exporters: Default::default(),
        };
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let (addr, _thread) = serve_clients("127.0.0.1:0".parse().unwrap(), Arc::new(reg), stop, Duration::from_millis(300)).unwrap();
        (addr, d)
    }

    /// A scrape's answer, waited for at most 3 s.
    fn scrape(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn an_exporter_silent_for_a_minute_is_told_once_and_its_return_too() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut watch = ExporterWatch::new(60_000);
        let at = |pairs: &[(IpAddr, u64)]| pairs.iter().map(|&(ip, datagrams)| (ip, ExporterStats { datagrams, ..Default::default() })).collect::<BTreeMap<_, _>>();
        let other: IpAddr = "::".parse().unwrap(); // the exporters beyond those counted one by one
        const T: u64 = 1_800_000_000_000;
        assert!(watch.look(&at(&[(a, 10), (b, 5), (other, 1)]), T).is_empty());
        assert!(watch.look(&at(&[(a, 20), (b, 5), (other, 1)]), T + 30_000).is_empty(), "b idle 30 s");
        assert!(watch.look(&at(&[(a, 30), (b, 5), (other, 1)]), T + 59_000).is_empty(), "b idle 59 s");
        assert!(watch.silent(T + 59_000).is_empty(), "not silent before it is told");
        let said = watch.look(&at(&[(a, 40), (b, 5), (other, 1)]), T + 61_000);
        assert_eq!(said, vec![(true, "exporter 192.0.2.2 silent for 61 s: its traffic is missing from the windows and moving averages (underlimits of its keys may start, overlimits cannot)".to_string())]);
        assert!(watch.look(&at(&[(a, 50), (b, 5), (other, 1)]), T + 90_000).is_empty(), "told once");
        assert_eq!(watch.idle_seconds(T + 95_000), vec![(a, 5), (b, 95)]);
        assert_eq!(watch.silent(T + 95_000), vec![(b, 95)]);
        let said = watch.look(&at(&[(a, 60), (b, 6), (other, 1)]), T + 100_000);
        assert_eq!(said, vec![(false, "exporter 192.0.2.2 sends again after 100 s of silence".to_string())]);
        assert_eq!(watch.idle_seconds(T + 100_000), vec![(a, 0), (b, 0)]);
        assert!(watch.silent(T + 100_000).is_empty(), "sends again");
        // `exporter-silence` 0: never told, still measured.
        let mut never = ExporterWatch::new(0);
        assert!(never.look(&at(&[(a, 1)]), T).is_empty() && never.look(&at(&[(a, 1)]), T + 3_600_000).is_empty());
        assert_eq!(never.idle_seconds(T + 3_600_000), vec![(a, 3600)]);
    }

    #[test]
    fn idle_slow_or_endless_clients_do_not_hold_up_a_scrape() {
        let (addr, _d) = server();
        assert!(scrape(addr).contains("xenoeye_uptime_seconds"));
        // 70 connections that send nothing (more than are kept): a scrape is answered at
        // once beside them, not after their 300 ms each; the oldest are closed.
        let idle: Vec<TcpStream> = (0..70).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let answer = scrape(addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.contains("xenoeye_uptime_seconds"), "{answer}");
        let mut first = &idle[0];
        first.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(first.read(&mut [0u8; 16]).unwrap(), 0, "the oldest idle connection closed");
        drop(idle);
        // A byte every 50 ms for 5 s, never ending its request: cut off at 300 ms.
        let mut slow = TcpStream::connect(addr).unwrap();
        let dribble = std::thread::spawn(move || {
            for _ in 0..100 {
                if slow.write_all(b"x").is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        std::thread::sleep(Duration::from_millis(100));
        let answer = scrape(addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.contains("xenoeye_uptime_seconds"), "{answer}");
        assert!(dribble.join().unwrap(), "the slow client's connection was closed");
        // A request line that never ends: closed once past 8 KiB, answered nothing.
        let mut endless = TcpStream::connect(addr).unwrap();
        endless.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let sent = (0..64).try_for_each(|_| endless.write_all(&[b'a'; 1024]));
        let mut rest = Vec::new();
        let read = endless.read_to_end(&mut rest);
        assert!(sent.is_err() || matches!(read, Ok(0)) || read.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset), "{rest:?}");
        assert!(scrape(addr).contains("xenoeye_uptime_seconds"));
    }
}
