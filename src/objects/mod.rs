//! Monitoring objects: loaded from `mo-dir`, compiled once, and run per worker.
//!
//! Every directory under `mo-dir` holding a `mo.conf` is an object named by its path relative to
//! `mo-dir`; a directory with `mo.conf` inside an object's directory is a nested object that only
//! sees the flows its parent matched. Each object has a filter, an optional flow dump and fixed
//! windows. The specs ([`Objects`]) are immutable and shared; each worker runs its own
//! [`WorkerObjects`] with its own window maps, so matching and aggregating take no lock.

pub mod clock;
pub mod lua_conf;
pub mod mavg;
pub mod rows;
pub mod slots;
pub mod table;
pub mod window;

use crate::config::json::{self, Node};
use crate::config::{dump_target, keys, ConfigError, DumpTarget};
use crate::decode::RecordView;
use crate::dump::Dumper;
use crate::filter::{self, index::FilterIndex, iplist::IpLists, Filter};
use crate::flow::Flow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use mavg::Mavg;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use crate::fields::FieldId;
use window::{Agg, Closed, Column, ColumnSource, FieldRef, FwmSpec, Window, MAX_KEY_FIELDS};

/// One monitoring object as configured.
#[derive(Debug)]
pub struct ObjectSpec {
    /// Path relative to `mo-dir` (`customers/acme`).
    pub name: String,
    pub dir: PathBuf,
    pub filter: Filter,
    pub dump: DumpTarget,
    pub windows: Vec<Arc<FwmSpec>>,
    pub mavgs: Vec<Arc<Mavg>>,
    pub children: Vec<ObjectSpec>,
    /// The index of `children`, made once for every worker (see [`sibling_index`]).
    children_index: OnceLock<Option<Arc<FilterIndex>>>,
}

/// Every object, as a tree, plus all windows in id order.
#[derive(Debug, Default)]
pub struct Objects {
    pub roots: Vec<ObjectSpec>,
    /// The index of `roots`, made once for every worker (see [`sibling_index`]).
    roots_index: OnceLock<Option<Arc<FilterIndex>>>,
    pub windows: Vec<Arc<FwmSpec>>,
    /// `windows` by object and window name (the first of each: names are unique within an
    /// object), for `ext` lists at load and `xe.ext` in hooks.
    window_index: WindowIndex,
    /// Every moving average of every object.
    pub mavgs: Vec<Arc<Mavg>>,
    /// The same by table (moving averages of an object may share one, see
    /// [`mavg::share_tables`]): what the sweep goes through.
    mavg_groups: Vec<Vec<Arc<Mavg>>>,
    /// Next once-per-second sweep of the moving averages (collector clock, ms).
    next_sweep_ms: AtomicU64,
    /// A sweep is under way (it goes on at every tick of any worker, see
    /// [`Objects::sweep_if_due`]).
    sweeping: AtomicBool,
    sweep: parking_lot::Mutex<SweepState>,
    pub sweep_stats: SweepStats,
}

/// What the sweeps cost (for the metrics).
#[derive(Debug, Default)]
pub struct SweepStats {
    /// Passes over every table completed.
    pub passes: AtomicU64,
    /// Time the last complete pass spent sweeping, its pieces together (microseconds).
    pub last_us: AtomicU64,
}

/// Where the sweep under way is: the table (index in `mavg_groups`), its pass, and when the
/// sweep started (collector clock, ms).
#[derive(Default)]
struct SweepState {
    group: usize,
    pass: Option<mavg::SweepPass>,
    started_ms: u64,
    /// Time spent in this sweep's pieces so far.
    spent: std::time::Duration,
}

impl std::fmt::Debug for SweepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SweepState(table {})", self.group)
    }
}

/// Table slots a live worker sweeps at most per batch of datagrams it received (about 0.7 ms
/// when the rows are quiet): the sweep of a table of millions of keys is spread over many
/// batches, so the worker goes back to its socket between pieces instead of leaving
/// datagrams to pile up (see `Pipeline::limit_sweep`).
pub const SWEEP_SLOTS_PER_BATCH: usize = 1 << 17;
/// A sweep still under way this long after it started (collector clock, ms) finishes at the
/// next tick whatever it takes: batches are few then, and so is traffic.
const SWEEP_SPREAD_MS: u64 = 500;

impl Objects {
    /// Number of objects in the tree.
    pub fn count(&self) -> usize {
        fn n(o: &ObjectSpec) -> usize {
            1 + o.children.iter().map(n).sum::<usize>()
        }
        self.roots.iter().map(n).sum()
    }

    /// What the tree holds, for the log: "5 monitoring objects, 11 fixed windows, 1 moving
    /// average".
    pub fn summary(&self) -> String {
        use crate::log::counted;
        format!("{}, {}, {}", counted(self.count(), "monitoring object"), counted(self.windows.len(), "fixed window"), counted(self.mavgs.len(), "moving average"))
    }

    /// Starts the moving averages' once-per-second sweep when the clock has reached it, and
    /// goes on with one under way, looking at no more table slots than `budget` allows (and
    /// taking them off it), unless the sweep started `SWEEP_SPREAD_MS` ago. Any worker may
    /// call this at each tick; one at a time does the work.
    pub fn sweep_if_due(&self, now_ms: u64, budget: &mut usize) {
        let mut state = if self.sweeping.load(Ordering::Relaxed) {
            match self.sweep.try_lock() {
                Some(s) => s,
                None => return, // another worker is on it
            }
        } else {
            let due = self.next_sweep_ms.load(Ordering::Relaxed);
            if now_ms < due || self.mavgs.is_empty() {
                return;
            }
            let next = if due == 0 { now_ms + 1000 } else { (now_ms / 1000 + 1) * 1000 };
            if self.next_sweep_ms.compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed).is_err() || due == 0 {
                return;
            }
            let mut s = self.sweep.lock();
            *s = SweepState { started_ms: now_ms, ..SweepState::default() };
            self.sweeping.store(true, Ordering::Relaxed);
            s
        };
        let mut unbounded = usize::MAX;
        let budget = if now_ms.saturating_sub(state.started_ms) >= SWEEP_SPREAD_MS { &mut unbounded } else { budget };
        if *budget == 0 {
            return;
        }
        let t = std::time::Instant::now();
        let done = self.sweep_tables(&mut state, now_ms, budget);
        state.spent += t.elapsed();
        if done {
            self.sweep_stats.last_us.store(state.spent.as_micros() as u64, Ordering::Relaxed);
            self.sweep_stats.passes.fetch_add(1, Ordering::Relaxed);
            self.sweeping.store(false, Ordering::Relaxed);
        }
    }

    /// Goes on with the sweep's tables in order; returns true when the last one is done.
    fn sweep_tables(&self, state: &mut SweepState, now_ms: u64, budget: &mut usize) -> bool {
        while let Some(group) = self.mavg_groups.get(state.group) {
            if !state.pass.get_or_insert_with(|| mavg::SweepPass::new(group)).step(now_ms, budget) {
                return false;
            }
            state.pass = None;
            state.group += 1;
        }
        true
    }

    /// A window by object name and window name (for `ext` lists: `name` or `object/name`).
    pub fn window(&self, object: &str, name: &str) -> Option<&Arc<FwmSpec>> {
        window_by_name(&self.windows, &self.window_index, object, name)
    }
}

/// The monitoring objects in force, replaced as a whole by a reload; workers notice the new
/// generation at their next clock tick.
pub struct LiveObjects {
    current: parking_lot::Mutex<Arc<Objects>>,
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LiveObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveObjects(generation {})", self.generation())
    }
}

impl LiveObjects {
    pub fn new(objects: Arc<Objects>) -> Arc<LiveObjects> {
        Arc::new(LiveObjects { current: parking_lot::Mutex::new(objects), generation: Default::default() })
    }

    pub fn get(&self) -> Arc<Objects> {
        self.current.lock().clone()
    }

    /// Bumped by every replacement.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn replace(&self, objects: Arc<Objects>) {
        *self.current.lock() = objects;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Table and notification name of an object: its path with `/` replaced by `_`.
pub fn flat_name(name: &str) -> String {
    name.replace('/', "_")
}

/// Loads every object under `mo_dir` (a missing directory means no objects).
pub fn load(mo_dir: &Path, lists: &IpLists) -> Result<Objects, Vec<ConfigError>> {
    load_with(mo_dir, lists, None)
}

/// [`load`], with the directory of the bundled Lua library for `mo.lua` files (`xe.module`).
pub fn load_with(mo_dir: &Path, lists: &IpLists, lua_lib: Option<&Path>) -> Result<Objects, Vec<ConfigError>> {
    let mut objects = Objects::default();
    let mut errors = Vec::new();
    let ctx = LoadCtx { mo_dir, lists, lua_lib };
    objects.roots = scan(&ctx, mo_dir, &mut objects.windows, &mut errors);
    for (i, w) in objects.windows.iter().enumerate() {
        objects.window_index.entry(w.object.clone()).or_default().entry(w.name.clone()).or_insert(i);
    }
    resolve_ext(&mut objects.roots, &objects.windows, &objects.window_index, &mut errors);
    collect_mavgs(&objects.roots, &mut objects.mavgs);
    objects.mavg_groups = mavg::groups(&objects.mavgs);
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// Re-reads the thresholds of every moving average (SIGHUP): `default` values and limits files
/// from each object's mo.conf. Averages, active limits and everything else are kept; a
/// moving average whose fields changed is reported and left as it was.
pub fn reload_thresholds(objects: &Objects) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for m in &objects.mavgs {
        let file = m.dir.join("mo.conf");
        let root = match json::parse_file(&file) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let items = root.get("mavg").and_then(|n| n.as_array(&file, "mavg").ok()).unwrap_or(&[]);
        let found = items.iter().enumerate().find(|(_, n)| {
            n.get("name").and_then(|x| x.as_str(&file, "name").ok()) == Some(m.name.as_str())
        });
        let Some((i, node)) = found else {
            errors.push(ConfigError { file: file.clone(), line: 0, col: 0, key: "mavg".into(), msg: format!("moving average \"{}\" is gone: restart to remove it", m.name) });
            continue;
        };
        match mavg::parse(&file, &m.object, &m.dir, node, i).map_err(|e| vec![e]).and_then(|new| {
            m.reload_from(new).map_err(|msg| vec![node.error(&file, &format!("mavg[{i}]"), msg)])
        }) {
            Ok(()) => {}
            Err(e) => errors.extend(e),
        }
    }
    errors
}

/// Resolves the `ext` window names of every limit (`name`: the object's own window,
/// `object/name`: another object's), now that every window is known.
fn resolve_ext(nodes: &mut [ObjectSpec], windows: &[Arc<FwmSpec>], index: &WindowIndex, errors: &mut Vec<ConfigError>) {
    for o in nodes.iter_mut() {
        for m in o.mavgs.iter_mut() {
            let Some(m) = Arc::get_mut(m) else { continue };
            for l in m.limits.iter_mut() {
                for e in &l.ext_names {
                    let object = if e.object.is_empty() { o.name.as_str() } else { e.object.as_str() };
                    let at = |msg: String| ConfigError { msg, ..e.at.clone() };
                    match window_by_name(windows, index, object, &e.window) {
                        Some(w) => {
                            if !w.extended {
                                // Harmless (ordinary windows are always on), but not what was meant.
                                let why = format!("window \"{}\" of object \"{object}\" is not \"extended\": it collects all the time, alerts change nothing", e.window);
                                crate::log::warn(&at(why).to_string());
                            }
                            l.ext.push(Arc::clone(w));
                        }
                        None => errors.push(at(format!("no window \"{}\" in object \"{object}\"", e.window))),
                    }
                }
            }
        }
        resolve_ext(&mut o.children, windows, index, errors);
    }
}

/// A window of `windows` by object and window name, through their index (see
/// [`Objects::window`]; a thousand objects' limits each name one).
fn window_by_name<'w>(windows: &'w [Arc<FwmSpec>], index: &WindowIndex, object: &str, name: &str) -> Option<&'w Arc<FwmSpec>> {
    index.get(object)?.get(name).map(|&i| &windows[i])
}

/// Positions of windows by object name, then window name.
type WindowIndex = HashMap<String, HashMap<String, usize>>;

fn collect_mavgs(nodes: &[ObjectSpec], out: &mut Vec<Arc<Mavg>>) {
    for o in nodes {
        out.extend(o.mavgs.iter().cloned());
        collect_mavgs(&o.children, out);
    }
}

/// What every object of one load shares.
struct LoadCtx<'a> {
    mo_dir: &'a Path,
    lists: &'a IpLists,
    lua_lib: Option<&'a Path>,
}

/// Objects found in the subdirectories of `dir` (recursing through directories without
/// `mo.conf`, whose objects are then top-level ones at this level).
fn scan(ctx: &LoadCtx<'_>, dir: &Path, windows: &mut Vec<Arc<FwmSpec>>, errors: &mut Vec<ConfigError>) -> Vec<ObjectSpec> {
    let mut subdirs: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(_) => return Vec::new(),
    };
    subdirs.sort();
    let mut out = Vec::new();
    for sub in subdirs {
        if named(&sub.join("mo.conf")) || named(&sub.join("mo.lua")) {
            if let Some(o) = load_object(ctx, &sub, windows, errors) {
                out.push(o);
            }
        } else {
            out.extend(scan(ctx, &sub, windows, errors));
        }
    }
    out
}

/// Whether something of that name is there, of whatever kind: a mo.conf that is a FIFO or a
/// dangling link makes its directory an object whose reading fails with the reason, rather
/// than a directory silently without objects.
fn named(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

fn load_object(ctx: &LoadCtx<'_>, dir: &Path, windows: &mut Vec<Arc<FwmSpec>>, errors: &mut Vec<ConfigError>) -> Option<ObjectSpec> {
    let name = dir.strip_prefix(ctx.mo_dir).unwrap_or(dir).to_string_lossy().into_owned();
    let (conf, lua) = (dir.join("mo.conf"), dir.join("mo.lua"));
    // A mo.lua returning a table is the configuration; one returning nothing only has hooks.
    let lua_root = if named(&lua) {
        match lua_conf::evaluate(dir, ctx.lua_lib) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                return None;
            }
        }
    } else {
        None
    };
    let (file, root) = match (lua_root, named(&conf)) {
        (Some(_), true) => {
            let msg = "mo.lua returns a configuration and mo.conf exists too: keep one of them".to_string();
            errors.push(ConfigError { file: lua, line: 0, col: 0, key: String::new(), msg });
            return None;
        }
        (Some(root), false) => (lua, root),
        (None, true) => match json::parse_file(&conf) {
            Ok(r) => (conf, r),
            Err(e) => {
                errors.push(e);
                return None;
            }
        },
        (None, false) => {
            let msg = "mo.lua returns no configuration and there is no mo.conf".to_string();
            errors.push(ConfigError { file: lua, line: 0, col: 0, key: String::new(), msg });
            return None;
        }
    };
    let mut object = object_from(dir, name, &file, &root, ctx.lists, windows, errors)?;
    object.children.extend(scan(ctx, dir, windows, errors));
    Some(object)
}

/// Builds an object from its configuration tree (from mo.conf or mo.lua); `children` of a
/// Lua configuration become nested objects named `<object>/<child>`.
fn object_from(
    dir: &Path,
    name: String,
    file: &Path,
    root: &Node,
    lists: &IpLists,
    windows: &mut Vec<Arc<FwmSpec>>,
    errors: &mut Vec<ConfigError>,
) -> Option<ObjectSpec> {
    let file = file.to_path_buf();
    let before = errors.len();
    crate::config::warn_of_keys(root, &file, "", keys::OBJECT, &["classification"]);
    if let Some(d) = root.get("debug") {
        crate::config::warn_of_keys(d, &file, "debug", keys::DEBUG, &[]);
    }
    let filter = match root.get("filter") {
        None => Filter::All,
        Some(n) => match n.as_str(&file, "filter") {
            Err(e) => {
                errors.push(e);
                Filter::All
            }
            Ok(text) => filter::compile(text, lists).unwrap_or_else(|e| {
                // The filter string starts one column after its opening quote.
                errors.push(ConfigError {
                    file: file.clone(),
                    line: n.line,
                    col: n.col + e.col as u32,
                    key: "filter".into(),
                    msg: e.to_string(),
                });
                Filter::All
            }),
        },
    };
    let dump = dump_target(&file, dir, root.get("debug").and_then(|d| d.get("dump-flows")), "debug.dump-flows", errors);
    let own: Vec<Arc<FwmSpec>> = named_elements(&file, root, "fwm", "window", errors, |item, i| fwm_spec(&file, &name, dir, item, i).map(Arc::new), |w| &w.name);
    windows.extend(own.iter().cloned());
    // Two moving averages of one name would take each other's notification and trigger files.
    let mut mavgs = named_elements(&file, root, "mavg", "moving average", errors, |item, i| mavg::parse(&file, &name, dir, item, i), |m| &m.name);
    mavg::share_tables(&mut mavgs);
    let mavgs = mavgs.into_iter().map(Arc::new).collect();
    let mut children = Vec::new();
    for (key, child) in root.get("children").map(|c| c.members()).unwrap_or(&[]) {
        if key.name.is_empty() || key.name.contains('/') {
            errors.push(child.error(&file, "children", format!("bad child name \"{}\"", key.name)));
            continue;
        }
        if let Some(c) = object_from(dir, format!("{name}/{}", key.name), &file, child, lists, windows, errors) {
            children.push(c);
        }
    }
    (errors.len() == before).then_some(ObjectSpec { name, dir: dir.to_path_buf(), filter, dump, windows: own, mavgs, children, children_index: OnceLock::new() })
}

/// The elements of the list `key` (`fwm`, `mavg`) that `parse` takes, each name (`name_of`)
/// given once; what fails is added to `errors` (a second element of a name as "WHAT \"NAME\"
/// defined twice").
fn named_elements<T>(
    file: &Path,
    root: &Node,
    key: &str,
    what: &str,
    errors: &mut Vec<ConfigError>,
    parse: impl Fn(&Node, usize) -> Result<T, ConfigError>,
    name_of: impl Fn(&T) -> &str,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    let Some(list) = root.get(key) else { return out };
    let items = list.as_array(file, key).map_err(|e| errors.push(e)).unwrap_or(&[]);
    for (i, item) in items.iter().enumerate() {
        match parse(item, i) {
            Ok(e) if out.iter().any(|o| name_of(o) == name_of(&e)) => {
                errors.push(item.error(file, &format!("{key}[{i}].name"), format!("{what} \"{}\" defined twice", name_of(&e))));
            }
            Ok(e) => out.push(e),
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Columns, key fields, summed fields: see [`fwm_columns`].
type WindowFields = (Vec<Column>, Vec<FieldId>, Vec<Agg>);

/// A window's `fields` as export columns in their order, with its key fields and its summed
/// fields (each column says which of the two it is, and where).
fn fwm_columns(file: &Path, fields_node: &Node, i: usize) -> Result<WindowFields, ConfigError> {
    let (mut columns, mut keys, mut aggs) = (Vec::new(), Vec::new(), Vec::new());
    for (j, f) in fields_node.as_array(file, &format!("fwm[{i}].fields"))?.iter().enumerate() {
        let fk = format!("fwm[{i}].fields[{j}]");
        let text = f.as_str(file, &fk)?.trim().to_ascii_lowercase();
        let (field, desc) = match text.strip_suffix(" desc") {
            Some(base) => (base.trim().to_string(), true),
            None => (text.clone(), false),
        };
        let source = match FieldRef::parse(&field).map_err(|why| f.error(file, &fk, why))? {
            FieldRef::Agg(a) => {
                aggs.push(a);
                ColumnSource::Agg(aggs.len() - 1)
            }
            FieldRef::Key(id) => {
                keys.push(id);
                ColumnSource::Key(keys.len() - 1)
            }
        };
        let col = field.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
        if columns.iter().any(|c: &Column| c.name == col) {
            return Err(f.error(file, &fk, format!("field \"{field}\" listed twice")));
        }
        columns.push(Column { name: col, source, desc });
    }
    Ok((columns, keys, aggs))
}

/// Validates one `fwm` element.
fn fwm_spec(file: &Path, object: &str, dir: &Path, item: &Node, i: usize) -> Result<FwmSpec, ConfigError> {
    let k = |s: &str| format!("fwm[{i}].{s}");
    item.expect_object(file, &format!("fwm[{i}]"))?;
    crate::config::warn_of_keys(item, file, &format!("fwm[{i}]"), keys::FWM, &[]);
    let name_node = item.get("name").ok_or_else(|| item.error(file, &k("name"), "missing name"))?;
    let name = name_node.as_str(file, &k("name"))?.to_string();
    if name.is_empty() || name.contains('/') {
        return Err(name_node.error(file, &k("name"), "a window name must be non-empty and without '/'"));
    }
    let fields_node = item.get("fields").ok_or_else(|| item.error(file, &k("fields"), "missing fields"))?;
    let (columns, keys, aggs) = fwm_columns(file, fields_node, i)?;
    if aggs.is_empty() {
        return Err(fields_node.error(file, &k("fields"), "needs at least one of octets, packets, bits"));
    }
    if keys.len() > MAX_KEY_FIELDS {
        return Err(fields_node.error(file, &k("fields"), format!("at most {MAX_KEY_FIELDS} key fields")));
    }
    let time = crate::config::seconds_or_default_for_zero(item, file, &k("time"), "time", 30)?;
    // 0 is no limit, as in the original.
    let limit = match item.get("limit") {
        Some(n) => Some(n.as_u64(file, &k("limit"))? as usize).filter(|&l| l > 0),
        None => None,
    };
    let extended = match item.get("extended") {
        Some(n) => n.as_bool(file, &k("extended"))?,
        None => false,
    };
    let mem_m = item.mib_or("mem-m", file, &k("mem-m"), window::DEFAULT_FWM_MEM_M)?;
    // The original's: false or "off" leaves the index out; any other value keeps it.
    let create_index = match item.get("create-index") {
        Some(n) => match &n.value {
            crate::config::json::Value::Bool(b) => *b,
            crate::config::json::Value::String(s) => s != "off",
            _ => return Err(n.error(file, &k("create-index"), format!("expected true, false or \"off\", found {}", n.kind()))),
        },
        None => true,
    };
    Ok(FwmSpec {
        object: object.to_string(),
        table: format!("{}_{}", flat_name(object), name),
        name,
        columns,
        layout: rows::KeyLayout::new(&keys),
        keys,
        aggs,
        time,
        limit,
        extended,
        create_index,
        mem_bytes: (mem_m as usize).saturating_mul(1 << 20),
        active: AtomicBool::new(!extended),
        holders: Default::default(),
        export_lua: item.get("export-lua").map(|n| n.as_str(file, &k("export-lua")).map(String::from)).transpose()?,
        dir: dir.to_path_buf(),
    })
}

/// One object in a worker: its windows and dump, and its children.
struct Running {
    name: String,
    /// Flows this worker matched (for the metrics).
    flows: u64,
    filter: Filter,
    dumper: Option<Dumper>,
    windows: Vec<Window>,
    /// Its moving averages' queues: positions in the worker's [`Feeds`].
    feeds: std::ops::Range<usize>,
    children: Children,
}

/// A worker's queues in front of the moving averages of all its objects, and which of them
/// hold flows: once a millisecond only those are applied. Walking every object instead cost
/// 7% of the flow path with 8,192 objects.
struct Feeds {
    all: Vec<mavg::Feed>,
    /// Positions in `all` queued since the last [`Feeds::flush_queued`], each once (the
    /// capacity is `all.len()`: nothing is allocated per flow).
    queued: Vec<usize>,
    is_queued: Vec<bool>,
}

impl Feeds {
    fn new(all: Vec<mavg::Feed>) -> Feeds {
        let n = all.len();
        Feeds { all, queued: Vec::with_capacity(n), is_queued: vec![false; n] }
    }

    #[inline]
    fn push(&mut self, at: usize, flow: &Flow) {
        self.all[at].push(flow);
        if !self.is_queued[at] {
            self.is_queued[at] = true;
            self.queued.push(at);
        }
    }

    /// Applies the flows waiting in any queue.
    fn flush_queued(&mut self) {
        for at in self.queued.drain(..) {
            self.is_queued[at] = false;
            self.all[at].flush();
        }
    }
}

/// The index of sibling objects' filters (when they are many), made at the first worker's
/// start and shared by the others: the same filters for all.
fn sibling_index(siblings: &[ObjectSpec], made: &OnceLock<Option<Arc<FilterIndex>>>) -> Option<Arc<FilterIndex>> {
    made.get_or_init(|| FilterIndex::new(siblings.iter().map(|o| &o.filter)).map(Arc::new)).clone()
}

/// Sibling objects, with an index of which ones a flow may match when there are many.
struct Children {
    list: Vec<Running>,
    index: Option<Arc<FilterIndex>>,
}

impl Children {
    /// [`Children::flow`] for an object's children: out of line, so that the recursion
    /// (objects in objects) ends here and the top level's call is always inlined into the
    /// flow loop (left to the compiler, the cycle made it call the top level out of line
    /// in some builds: 26 instructions a flow).
    #[inline(never)]
    fn flow_nested(&mut self, flow: &Flow, rec: &RecordView<'_>, feeds: &mut Feeds) {
        self.flow(flow, rec, feeds)
    }

    /// Runs a flow through every sibling whose filter it may match (each checks its own,
    /// unless the index has found it matches).
    #[inline(always)]
    fn flow(&mut self, flow: &Flow, rec: &RecordView<'_>, feeds: &mut Feeds) {
        match &self.index {
            Some(index) => {
                let list = &mut self.list;
                index.for_each_candidate(flow, |i, sure| if sure { list[i].take(flow, rec, feeds) } else { list[i].flow(flow, rec, feeds) });
            }
            None => self.list.iter_mut().for_each(|c| c.flow(flow, rec, feeds)),
        }
    }
}

/// A worker's instance of every object.
pub struct WorkerObjects {
    roots: Children,
    feeds: Feeds,
    worker: usize,
    /// Earliest window end (seconds): before it, advancing the clock is one comparison.
    next_deadline: u64,
    /// Clock (ms) of the last flush of the moving averages' queues.
    flushed_ms: u64,
    /// [`window::EXT_SWITCHES`] when the windows last read whether they collect.
    switches_seen: u64,
    closed: Vec<Closed>,
}

impl WorkerObjects {
    pub fn new(specs: &Objects, worker: usize) -> std::io::Result<Self> {
        fn build(o: &ObjectSpec, feeds: &mut Vec<mavg::Feed>) -> std::io::Result<Running> {
            let first = feeds.len();
            feeds.extend(mavg::groups(&o.mavgs).into_iter().map(mavg::Feed::new));
            Ok(Running {
                name: o.name.clone(),
                flows: 0,
                filter: o.filter.clone(),
                dumper: Dumper::open(&o.dump)?,
                windows: o.windows.iter().map(|w| Window::new(w.clone())).collect(),
                feeds: first..feeds.len(),
                children: Children { list: o.children.iter().map(|c| build(c, feeds)).collect::<Result<_, _>>()?, index: sibling_index(&o.children, &o.children_index) },
            })
        }
        // Read before the windows read their flags: a switch after this is seen next time.
        let switches_seen = window::EXT_SWITCHES.load(Ordering::Acquire);
        let mut feeds = Vec::new();
        let roots = Children { list: specs.roots.iter().map(|o| build(o, &mut feeds)).collect::<Result<_, _>>()?, index: sibling_index(&specs.roots, &specs.roots_index) };
        Ok(WorkerObjects { roots, feeds: Feeds::new(feeds), worker, next_deadline: 0, flushed_ms: 0, switches_seen, closed: Vec::new() })
    }

    /// Runs one flow through every object.
    #[inline]
    pub fn flow(&mut self, flow: &Flow, rec: &RecordView<'_>) {
        self.roots.flow(flow, rec, &mut self.feeds);
    }

    /// Moves the clock (unix ms): first, once per millisecond, applies the flows waiting for
    /// moving averages (so a threshold crossing is found within a millisecond of collector
    /// time, and always before a sweep), then returns the windows that closed.
    #[inline]
    pub fn advance(&mut self, now_ms: u64) -> Option<Vec<Closed>> {
        if now_ms != self.flushed_ms {
            self.flushed_ms = now_ms;
            self.feeds.flush_queued();
        }
        let now = now_ms / 1000;
        if now < self.next_deadline {
            return None;
        }
        let mut deadline = u64::MAX;
        let (worker, closed) = (self.worker, &mut self.closed);
        for_each_window(&mut self.roots.list, &mut |w| {
            w.advance(now, worker, closed);
            deadline = deadline.min(w.wake_at().unwrap_or(u64::MAX));
        });
        self.next_deadline = deadline;
        (!self.closed.is_empty()).then(|| std::mem::take(&mut self.closed))
    }

    /// Has the windows read again whether they collect when an extended window was switched
    /// on or off since they last did (by this worker's moving averages, a sweep, a Lua hook):
    /// called after the clock moved and the sweep ran, before the next datagram's flows.
    #[inline]
    pub fn see_switches(&mut self) {
        let switches = window::EXT_SWITCHES.load(Ordering::Acquire);
        if switches != self.switches_seen {
            self.switches_seen = switches;
            for_each_window(&mut self.roots.list, &mut Window::see_switches);
        }
    }

    /// Switches to a new configuration (reload): windows of tables that stay (same fields and
    /// length) carry on with their rows; the others are closed and returned for export.
    pub fn switch_to(&mut self, specs: &Objects) -> std::io::Result<Vec<Closed>> {
        let mut next = WorkerObjects::new(specs, self.worker)?;
        self.feeds.flush_queued();
        let mut old: Vec<Window> = Vec::new();
        for_each_node(&mut self.roots.list, &mut |n| old.append(&mut n.windows));
        // By table (tens of thousands of windows are matched without a search through all).
        let by_table: HashMap<String, usize> = old.iter().enumerate().map(|(i, w)| (w.spec.table.clone(), i)).collect();
        let mut old: Vec<Option<Window>> = old.into_iter().map(Some).collect();
        let mut kept_out = Vec::new();
        for_each_window(&mut next.roots.list, &mut |w| {
            if let Some(o) = by_table.get(&w.spec.table).and_then(|&i| old[i].take()) {
                kept_out.extend(w.adopt(o));
            }
        });
        let mut closed = Vec::new();
        for mut w in old.into_iter().flatten().chain(kept_out) {
            w.finish(self.worker, &mut closed);
        }
        *self = next;
        Ok(closed)
    }

    /// Flows matched per object by this worker (since its objects were last replaced).
    pub fn flow_counts(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for_each_node(&mut self.roots.list, &mut |n| out.push((n.name.clone(), n.flows)));
        out
    }

    /// Closes every window for good (shutdown, end of replay).
    pub fn finish(&mut self) -> Vec<Closed> {
        self.feeds.flush_queued();
        let (worker, closed) = (self.worker, &mut self.closed);
        for_each_window(&mut self.roots.list, &mut |w| w.finish(worker, closed));
        std::mem::take(&mut self.closed)
    }
}

fn for_each_window(nodes: &mut [Running], f: &mut impl FnMut(&mut Window)) {
    for_each_node(nodes, &mut |n| n.windows.iter_mut().for_each(&mut *f));
}

fn for_each_node(nodes: &mut [Running], f: &mut impl FnMut(&mut Running)) {
    for n in nodes {
        f(n);
        for_each_node(&mut n.children.list, f);
    }
}

impl Running {
    #[inline]
    fn flow(&mut self, flow: &Flow, rec: &RecordView<'_>, feeds: &mut Feeds) {
        if self.filter.matches(flow) {
            self.take(flow, rec, feeds);
        }
    }

    /// A flow the object's filter matches.
    #[inline]
    fn take(&mut self, flow: &Flow, rec: &RecordView<'_>, feeds: &mut Feeds) {
        self.flows += 1;
        if let Some(d) = &mut self.dumper {
            d.write(flow, rec);
        }
        for at in self.feeds.clone() {
            feeds.push(at, flow);
        }
        for w in &mut self.windows {
            w.add(flow);
        }
        // Most objects have no children: no call.
        if !self.children.list.is_empty() {
            self.children.flow_nested(flow, rec, feeds);
        }
    }
}

#[cfg(test)]
mod tests;
