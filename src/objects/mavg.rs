//! Moving averages (`mavg`) and thresholds: the alarm side of a monitoring object.
//!
//! Per key (the non-aggregable `fields`), for each aggregable field, a value N and the time of
//! its last update: on every flow `N = N - dt/T * N + V` (dt >= T resets N to V); the rate
//! compared with thresholds is N/T per second. An `overlimit` is detected on the very flow that
//! crosses its threshold; back-to-normal (and `underlimit`, traffic falling below a threshold,
//! which no flow can report) is found by a sweep once per second of the collector clock.
//!
//! One table per moving average is shared by every worker, so a key seen through several
//! exporters and workers has one average. The table is split into shards (one per table with a
//! single worker, four per worker otherwise), each behind its own mutex. A worker queues its
//! flows per table ([`Feed`]), prefetching their rows, and applies a batch with one lock per
//! shard: an atomic operation per flow would cost more than the update itself. Two moving
//! averages of an object with the same key fields share a table ([`share_tables`]): one lookup
//! and one cache line per flow serve both. One keyed by another's key fields and a field of
//! 8 bits more is nested in that one's table, its rows next to the other's
//! ([`rowtable::Nest`]): one hash and most often one cache line serve both.
//! Memory is bounded by `mem-m`: when full, new keys are counted and not tracked, known ones
//! keep working.
//!
//! Crossing a threshold produces an [`Event`] for the hook thread (notification file, scripts)
//! and switches the limit's extended windows on at once, on the flow path.
//!
//! Events go to the hook thread without ever blocking a worker; when its queue is full, starts
//! and ends are held here and offered again at every sweep (`Mavg::emit`).
//!
//! This file holds the types, thresholds, events and what a reload changes; `feed` is the
//! per-flow path (queueing, batches, the row update), `config` reads a `mavg` element and its
//! limits files, `sweep` is the once-per-second pass and the dumps, `resume` takes up the
//! alerts an earlier run or configuration left active and ends those of moving averages a
//! reload retires, `rowtable` the rows.

use super::rows::{KeyLayout, MAX_WORDS};
use super::table::hash_words;
use super::window::{Agg, FieldRef, FwmSpec};
use crate::config::json::Node;
use crate::config::ConfigError;
use crate::fields::{FieldId, Kind};
use crate::flow::addr_from_u128;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

/// Most limit elements (`overlimit` and `underlimit` together) per moving average.
pub const MAX_LIMITS: usize = 4;
/// Most moving averages sharing one table (see [`share_tables`]).
pub const MAX_MEMBERS: usize = 2;
/// Starts and ends of limits held per moving average while the hook queue is full (see
/// `Mavg::emit`); beyond, they are dropped and counted.
pub const MAX_HELD_EVENTS: usize = 1 << 18;
/// Notification files are rewritten this often while a limit holds (milliseconds).
pub const NOTIFY_EVERY_MS: u64 = 3000;
/// Threads that update moving averages (the capture workers): how many locks a moving
/// average's rows are split over follows from it. Set before objects are loaded.
static WRITERS: AtomicUsize = AtomicUsize::new(1);

/// Declares how many threads will update moving averages made from now on.
pub fn set_writers(n: usize) {
    WRITERS.store(n.max(1), Ordering::Relaxed);
}

/// Shards (locks) per moving average: one for a single writer, which then locks once per
/// batch of flows (measured: two moving averages per object cost 22% less than with 64
/// shards); several writers get four shards each so they rarely wait for one another.
fn shard_count() -> usize {
    match WRITERS.load(Ordering::Relaxed) {
        1 => 1,
        n => (n * 4).next_power_of_two().min(64),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Over,
    Under,
}

impl LimitKind {
    /// As the configuration, the log, Lua's `kind` and scripts' `XENOEYE_KIND` spell it.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Over => "overlimit",
            LimitKind::Under => "underlimit",
        }
    }
}

/// A validated `overlimit` / `underlimit` element.
#[derive(Debug)]
pub struct LimitSpec {
    pub name: String,
    pub kind: LimitKind,
    /// Default threshold per aggregable field (rate per second).
    pub default: Vec<f64>,
    pub limits_file: Option<PathBuf>,
    pub back2norm_ms: u64,
    pub action_script: Option<PathBuf>,
    pub back2norm_script: Option<PathBuf>,
    /// Extended windows switched on while the limit holds, as written: resolved into `ext`
    /// once every object is loaded.
    pub ext_names: Vec<ExtName>,
    pub ext: Vec<Arc<FwmSpec>>,
    /// Lua handlers (used by the Lua hooks; kept for them).
    pub action_lua: Option<String>,
    pub back2norm_lua: Option<String>,
    /// The start of its notification files' names, `<object>-<mavg>-<limit>-`: made once, as
    /// every event of the limit needs it (its file's name, its lane of scripts).
    pub prefix: String,
}

/// An `ext` entry: `name` (the object's own window; `object` empty) or `object/name`, and
/// where it is written, for the error or warning about it once every window is known.
#[derive(Clone, Debug)]
pub struct ExtName {
    pub object: String,
    pub window: String,
    /// File, line, column and key of the entry (its message is left empty).
    pub at: ConfigError,
}

/// Thresholds: the defaults and the per-key ones from `limits` files, swapped as a whole on
/// reload.
#[derive(Debug, Default)]
pub struct Thresholds {
    /// Per limit: the `default` thresholds, one per aggregable field.
    pub defaults: Vec<Vec<f64>>,
    /// Per limit: packed key -> thresholds.
    pub per_limit: Vec<HashMap<PackedKey, Vec<f64>, WordsBuild>>,
}

/// Every limit's thresholds for one key, [limit][aggregable field], NaN = no threshold: as
/// configured (a rate per second, for reports) and in the units of the row's sums (rate times
/// the window in seconds), which flows are compared with (no division on the flow path).
#[derive(Clone, Copy, Debug)]
struct ThresholdSet {
    rate: [[f64; 3]; MAX_LIMITS],
    sum: [[f64; 3]; MAX_LIMITS],
}

impl Thresholds {
    /// The same thresholds, with keys packed by `to` instead of `from` (layouts of the same
    /// fields: a moving average nested in another's table packs its keys extended).
    fn repacked(self, from: &KeyLayout, to: &KeyLayout) -> Thresholds {
        if from == to {
            return self;
        }
        let repack = |by_key: HashMap<PackedKey, Vec<f64>, WordsBuild>| by_key.into_iter().map(|(k, t)| (k.repacked(from, to), t)).collect();
        Thresholds { defaults: self.defaults, per_limit: self.per_limit.into_iter().map(repack).collect() }
    }
}

/// Thresholds compiled for the flow path: distinct sets, and which keys use which (keys not
/// listed use set 0, the defaults). A row keeps only the index of its set.
#[derive(Debug, Default)]
struct Compiled {
    sets: Vec<ThresholdSet>,
    /// Per set, per field: the lowest overlimit threshold in sums (infinite when none). A row
    /// at or under all of them is over no overlimit: the per-flow check is one comparison
    /// per field, however many overlimits there are.
    quiet: Vec<[f64; 3]>,
    by_key: HashMap<PackedKey, u32, WordsBuild>,
}

impl Compiled {
    /// Index of a key's threshold set.
    fn index_of(&self, key: &PackedKey) -> u32 {
        self.by_key.get(key).copied().unwrap_or(0)
    }
}

fn compile_thresholds(limits: &[LimitSpec], t: &Thresholds, secs: f64) -> Compiled {
    let base = |l: usize, spec: &LimitSpec| t.defaults.get(l).unwrap_or(&spec.default).clone();
    let set_of = |vals: &dyn Fn(usize, &LimitSpec) -> Vec<f64>| {
        let mut set = ThresholdSet { rate: [[f64::NAN; 3]; MAX_LIMITS], sum: [[f64::NAN; 3]; MAX_LIMITS] };
        for (l, spec) in limits.iter().enumerate().take(MAX_LIMITS) {
            for (i, v) in vals(l, spec).iter().take(3).enumerate() {
                set.rate[l][i] = *v;
                set.sum[l][i] = *v * secs;
            }
        }
        set
    };
    let mut sets = vec![set_of(&|l, spec| base(l, spec))];
    // Keys with the same thresholds share a set: a row keeps only the index.
    let bits = |set: &ThresholdSet| -> Vec<u64> { set.rate.as_flattened().iter().map(|v| v.to_bits()).collect() };
    let mut index: HashMap<Vec<u64>, u32> = HashMap::from([(bits(&sets[0]), 0)]);
    let mut by_key: HashMap<PackedKey, u32, WordsBuild> = HashMap::default();
    let mut left = 0;
    let keys: std::collections::HashSet<PackedKey> = t.per_limit.iter().flat_map(|m| m.keys().copied()).collect();
    for key in keys {
        let set = set_of(&|l, spec| t.per_limit.get(l).and_then(|m| m.get(&key)).cloned().unwrap_or_else(|| base(l, spec)));
        let next = sets.len() as u32;
        let i = match index.entry(bits(&set)) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(_) if sets.len() == MAX_THRESHOLD_SETS => {
                left += 1;
                continue;
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                sets.push(set);
                *e.insert(next)
            }
        };
        if i != 0 {
            by_key.insert(key, i);
        }
    }
    if left > 0 {
        crate::log::warn(&format!("limits: more than {} different thresholds; {left} keys use the default", MAX_THRESHOLD_SETS - 1));
    }
    let quiet = sets.iter().map(|set| quiet_bound(limits, set)).collect();
    Compiled { sets, quiet, by_key }
}

/// See [`Compiled::quiet`].
fn quiet_bound(limits: &[LimitSpec], set: &ThresholdSet) -> [f64; 3] {
    let mut bound = [f64::INFINITY; 3];
    for (l, _) in limits.iter().enumerate().take(MAX_LIMITS).filter(|(_, spec)| spec.kind == LimitKind::Over) {
        for (b, sum) in bound.iter_mut().zip(set.sum[l]) {
            // NaN (no threshold) never wins a min.
            *b = b.min(sum);
        }
    }
    bound
}

/// Most words of a moving average's packed key (NULL bits included), e.g. four numbers, or an
/// IPv6 address and two numbers. Keeping keys short keeps rows small, and a flood touches a
/// row per flow.
pub const MAVG_WORDS: usize = 5;

/// A packed key usable as a map key (the first `n` words count).
#[derive(Clone, Copy, Debug)]
pub struct PackedKey {
    n: u8,
    w: [u64; MAVG_WORDS],
}

impl PackedKey {
    /// The key's hash (also used to pick its shard).
    #[inline]
    fn hash64(&self) -> u64 {
        // The usual lengths with a constant bound: no loop.
        match self.n {
            1 => hash_words(&self.w[..1]),
            2 => hash_words(&self.w[..2]),
            n => hash_words(&self.w[..n as usize]),
        }
    }

    fn new(layout: &KeyLayout, words: &[u64; MAX_WORDS]) -> PackedKey {
        let mut w = [0u64; MAVG_WORDS];
        w.copy_from_slice(&words[..MAVG_WORDS]);
        PackedKey { n: layout.words as u8, w }
    }

    /// The key with `extension` or-ed into its last word (a nested member's key from the
    /// first member's, see [`rowtable::Nest`]).
    #[inline]
    fn extended(&self, extension: u64) -> PackedKey {
        let mut key = *self;
        key.w[self.n as usize - 1] |= extension;
        key
    }

    /// The key packed by `from`, packed by `to` (layouts of the same fields).
    fn repacked(&self, from: &KeyLayout, to: &KeyLayout) -> PackedKey {
        PackedKey::new(to, &to.pack_values(&from.unpack(&self.w[..self.n as usize]).0))
    }
}

impl PartialEq for PackedKey {
    /// Every word, unused ones included (they are zero): no loop bound, no memcmp call.
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        self.n == o.n && self.w.iter().zip(&o.w).fold(0, |d, (a, b)| d | (a ^ b)) == 0
    }
}
impl Eq for PackedKey {}
impl Hash for PackedKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(hash_words(&self.w[..self.n as usize]));
    }
}

/// Passes a precomputed 64-bit hash through.
#[derive(Default)]
pub struct WordsHasher(u64);
impl Hasher for WordsHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
pub type WordsBuild = BuildHasherDefault<WordsHasher>;

/// What happened to a limit of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The limit started to hold (overlimit: rate above; underlimit: below).
    Start,
    /// Still holding: rewrite the notification file with the current value.
    Update,
    /// Back to normal for `back2norm-time`.
    Back2Norm,
    /// Time to write the `.dump` / `.adump` files (their trigger files exist).
    Dump { rewrite: bool, append: bool },
}

/// An alert event for the hook thread.
#[derive(Clone, Debug)]
pub struct Event {
    pub phase: Phase,
    pub mavg: Arc<Mavg>,
    pub limit: usize,
    /// Key values as text, in `fields` order.
    pub keys: Vec<String>,
    /// Index (in the mavg's aggregable fields) of the field that decided.
    pub field: usize,
    /// Rate of the aggregable field that decided, and its threshold.
    pub value: f64,
    pub threshold: f64,
    pub time_ms: u64,
    pub start_ms: u64,
}

impl Event {
    pub fn limit_spec(&self) -> &LimitSpec {
        &self.mavg.limits[self.limit]
    }

    /// `object/mavg/limit`, as the log names an alert's limit.
    pub fn limit_path(&self) -> String {
        format!("{}/{}/{}", self.mavg.object, self.mavg.name, self.limit_spec().name)
    }

    /// `<notifications-dir>/<object>-<mavg>-<limit>-<key1>-<key2>...` (the directory is added
    /// by the hook thread).
    pub fn notification_name(&self) -> String {
        notification_name(self.limit_spec(), &self.keys)
    }
}

/// The notification file name of limit `l` for a key's values as text.
pub fn notification_name(l: &LimitSpec, keys: &[String]) -> String {
    let mut s = l.prefix.clone();
    s.pop();
    for k in keys {
        s.push('-');
        s.push_str(&k.replace('/', "_"));
    }
    s
}

/// A limit's state for one key, kept off the row (in the shard's `limits` map) because few
/// keys ever need one.
/// Whether it is active, and whether the row's last update was over it, live in the row
/// itself: a flood updates active keys on every flow, and those two bits are all it needs.
#[derive(Clone, Copy, Debug, Default)]
struct LimitState {
    start_ms: u64,
    /// Last time the rate was on the limit's side (over for overlimit, under for underlimit).
    last_bad_ms: u64,
    last_notify_ms: u64,
    /// Field, value and threshold that decided last.
    field: usize,
    value: f64,
    threshold: f64,
}

/// One key's average, as the moving average works on it (the shard's table keeps it smaller:
/// only the fields' sums, and the time in 32 bits).
#[derive(Clone, Debug, Default)]
struct Row {
    last_ms: u64,
    n: [f64; 3],
    /// Low 19 bits: index of the key's threshold set. Bit 23 ([`FILLING`]): the key's
    /// average still fills, for an underlimit (see [`Mavg::fill`]), and bits 19-22 say since
    /// when ([`FILL_EPOCH_SHIFT`]). Bit 24 + l: limit l is active. Bit 28 + l: the last
    /// update (at `last_ms`) was over limit l (its state's `last_bad_ms` and value are brought
    /// up to date from `n` when the row next drops under it, or at the sweep). A key has a
    /// state (see [`KeyState`]) only while its row has one of these bits: the sweep looks for
    /// none in a row with none.
    thr: u32,
}

/// What a key needs beyond its row, kept for the few keys that need it: its limits' states
/// (one holds, or waits for back-to-normal), and in a moving average with an underlimit, when
/// its first flow came while its average still fills (see [`Mavg::fill`]).
#[derive(Clone, Debug, Default)]
struct KeyState {
    /// Made when a limit first needs it (boxed: most keys of an average with an underlimit
    /// have a state only while their average fills, and then this is all they take).
    limits: Option<Box<[LimitState; MAX_LIMITS]>>,
    /// The key's first flow (ms), while its average fills; 0 once it is full.
    first_ms: u64,
}

/// The states of the keys that have one (a limit holds, is waiting for back-to-normal, or
/// an underlimit waits for the key's average to fill).
type LimitStates = HashMap<PackedKey, KeyState, WordsBuild>;

/// Bytes a key's state is counted as against `mem-m`: its map entry, at the map's lowest
/// load (it doubles when 7/8 full, so an entry may have two slots of its own).
const STATE_BYTES: usize = 2 * std::mem::size_of::<(PackedKey, KeyState)>() * 8 / 7 + 2;
/// And its limits' states, once a limit made them (with the allocator's overhead).
const LIMIT_STATES_BYTES: usize = std::mem::size_of::<[LimitState; MAX_LIMITS]>() + 16;

/// How many key states a moving average holds (see [`KeyState`]), counted against `mem-m`
/// with its rows: a flood of new keys into an average with an underlimit gives each a state
/// for its first 10 windows, and an alert storm gives each key over its limits' states.
#[derive(Debug, Default)]
struct StateCount {
    states: AtomicUsize,
    /// States holding limit states.
    with_limits: AtomicUsize,
}

impl StateCount {
    fn bytes(&self) -> usize {
        self.states.load(Ordering::Relaxed) * STATE_BYTES + self.with_limits.load(Ordering::Relaxed) * LIMIT_STATES_BYTES
    }

    /// Takes over another table's count (its states moved here at a reload; added, as flows
    /// may already have made states here).
    fn take_from(&self, other: &StateCount) {
        self.states.fetch_add(other.states.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        self.with_limits.fetch_add(other.with_limits.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A key's state, made (and counted) if it has none.
fn key_state<'a>(limits: &'a mut LimitStates, key: &PackedKey, count: &StateCount) -> &'a mut KeyState {
    match limits.entry(*key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            count.states.fetch_add(1, Ordering::Relaxed);
            e.insert(KeyState::default())
        }
    }
}

/// A key's state for limit `l`, made (and counted) when first needed.
fn limit_state<'a>(limits: &'a mut LimitStates, key: &PackedKey, l: usize, count: &StateCount) -> &'a mut LimitState {
    let state = key_state(limits, key, count);
    let all = state.limits.get_or_insert_with(|| {
        count.with_limits.fetch_add(1, Ordering::Relaxed);
        Box::new([LimitState::default(); MAX_LIMITS])
    });
    &mut all[l]
}

/// Removes a key's state, if it has one (and its count).
fn remove_state(limits: &mut LimitStates, key: &PackedKey, count: &StateCount) {
    if let Some(state) = limits.remove(key) {
        count.states.fetch_sub(1, Ordering::Relaxed);
        if state.limits.is_some() {
            count.with_limits.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Windows after a key's first flow during which an underlimit allows for its average still
/// filling: by then steady traffic reads all but e^-10 (0.005%) of its rate.
const FILL_WINDOWS: u64 = 10;

/// The first of the `fields` sums above its threshold (`sum` from a [`ThresholdSet`]; NaN,
/// no threshold, is never exceeded). The flow path passes its slot type's constant count.
#[inline]
fn over_field(n: &[f64; 3], sum: &[f64; 3], fields: usize) -> Option<usize> {
    (0..fields).find(|&i| n[i] > sum[i])
}

/// Distinct threshold sets a moving average can have (the rest of `Row::thr` holds flags;
/// keys whose thresholds are the same share a set).
const MAX_THRESHOLD_SETS: usize = 1 << 19;
const ACTIVE_BIT: u32 = 24;
const OVER_BIT: u32 = 28;
/// The threshold-set index in `Row::thr`.
const INDEX_BITS: u32 = MAX_THRESHOLD_SETS as u32 - 1;
/// The row's average still fills (see [`Row::thr`]). Not among [`FLAG_BITS`]: the flow path
/// has nothing to do with it.
const FILLING: u32 = 1 << 23;
/// Where a filling row keeps the epoch it began to fill in, modulo 16 (see
/// [`Mavg::surely_filled`]).
const FILL_EPOCH_SHIFT: u32 = 19;
const FILL_EPOCH_BITS: u32 = 0xf << FILL_EPOCH_SHIFT;
/// [`FILLING`] and its epoch.
const FILL_BITS: u32 = FILLING | FILL_EPOCH_BITS;
/// The limits' flags: a row with none of them is quiet on the flow path.
const FLAG_BITS: u32 = !(INDEX_BITS | FILL_BITS);

/// The threshold-set index in a row's `thr` word.
fn set_index(thr: u32) -> usize {
    (thr & INDEX_BITS) as usize
}

impl Row {
    fn thr(&self) -> usize {
        set_index(self.thr)
    }

    /// A row's flags and threshold-set index with the index replaced.
    fn with_index(thr: u32, i: u32) -> u32 {
        (thr & !INDEX_BITS) | i
    }

    /// Whether the key may have a state (see [`Row::thr`]).
    fn may_have_state(&self) -> bool {
        self.thr & !INDEX_BITS != 0
    }

    fn flag(&self, bit: u32, l: usize) -> bool {
        Self::flag_in(self.thr, bit, l)
    }

    /// Flag `bit + l` of a row's flags word.
    fn flag_in(thr: u32, bit: u32, l: usize) -> bool {
        thr & (1 << (bit + l as u32)) != 0
    }

    fn set_flag(&mut self, bit: u32, l: usize, on: bool) {
        let mask = 1 << (bit + l as u32);
        self.thr = if on { self.thr | mask } else { self.thr & !mask };
    }

    fn active(&self, l: usize) -> bool {
        self.flag(ACTIVE_BIT, l)
    }

    fn any_active(&self) -> bool {
        self.thr & (0xF << ACTIVE_BIT) != 0
    }
}

/// One shard: its rows and, per member moving average, its limit states and the thresholds
/// its rows' indexes refer to (replaced together, under the shard's lock, on reload).
struct Shard {
    rows: rowtable::Rows,
    limits: Vec<LimitStates>,
    compiled: Vec<Arc<Compiled>>,
}

/// A shard behind its lock, with where its slots are (for prefetching without the lock).
struct ShardCell {
    shard: Mutex<Shard>,
    /// Slot array address and index mask, published under the lock after every growth.
    base: AtomicUsize,
    mask: AtomicUsize,
}

impl ShardCell {
    /// A shard for as many members as `compiled` has thresholds, `rows` of them in a slot.
    fn new(words: usize, sums: usize, compiled: Vec<Arc<Compiled>>, rows: usize, nest: rowtable::Nest) -> ShardCell {
        let limits = compiled.iter().map(|_| LimitStates::default()).collect();
        let shard = Shard { rows: rowtable::Rows::new(words, sums, rows, nest), limits, compiled };
        ShardCell { shard: Mutex::new(shard), base: AtomicUsize::new(0), mask: AtomicUsize::new(0) }
    }

    /// Publishes where the shard's slot array now is (its `probe_start`), for prefetching.
    fn publish(&self, (base, mask): (usize, usize)) {
        self.base.store(base, Ordering::Relaxed);
        self.mask.store(mask, Ordering::Relaxed);
    }
}

/// The table of one moving average, or of two of one object with the same key fields and as
/// many averaged fields (see [`share_tables`]): one key lookup and one cache line per flow
/// serve both. Or of two where the second's key is the first's and one field of 8 bits more,
/// nested in the first's table (see [`rowtable::Nest`]).
struct Group {
    cells: Vec<ShardCell>,
    /// `cells.len() - 1` (a power of two).
    shard_mask: usize,
    /// Bytes per slot (slots are sized to the key, the averaged fields and the members).
    slot_bytes: usize,
    /// [`rowtable::line_mask`] of `slot_bytes`.
    line_mask: usize,
    /// Per member, what it is (name, fields, window, limits): a reload takes over the rows of
    /// a group of the same shape only.
    shape: Vec<String>,
    /// The members of the table that took this one's rows over at a reload (see
    /// [`Mavg::adopt`]): flows still applied here, by a worker not yet on the new
    /// configuration, go to them.
    successor: OnceLock<Vec<Arc<Mavg>>>,
    /// How the second member is nested in the table, if it is.
    nest: rowtable::Nest,
}

impl Group {
    /// A table for as many members as `compiled` (and `shape`) have, split over `shards`
    /// shards (a power of two); the second nested as `nest` says.
    fn new(words: usize, sums: usize, compiled: Vec<Arc<Compiled>>, shape: Vec<String>, shards: usize, nest: rowtable::Nest) -> Group {
        let rows = if nest.mark != 0 { 1 } else { compiled.len() };
        let slot_bytes = rowtable::Rows::slot_bytes_of(words, sums, rows).expect("a slot type for the members");
        let cells = (0..shards).map(|_| ShardCell::new(words, sums, compiled.clone(), rows, nest)).collect();
        Group { cells, shard_mask: shards - 1, slot_bytes, line_mask: rowtable::line_mask(slot_bytes), shape, successor: OnceLock::new(), nest }
    }

    /// Members' rows a slot holds: one per member, but one in a table with a nested member.
    fn rows_per_slot(&self) -> usize {
        if self.nest.mark != 0 {
            1
        } else {
            self.members()
        }
    }

    /// Whether the second member is nested (see [`rowtable::Nest`]).
    fn nested(&self) -> bool {
        self.nest.mark != 0
    }

    /// The members with a row in the slot of `key`: every member, but in a table with a
    /// nested member the one whose key it is.
    fn slot_members(&self, key: &PackedKey) -> std::ops::Range<usize> {
        let first = self.nest.member_of(key);
        first..first + self.rows_per_slot()
    }

    /// The shard of a key: middle bits of its hash, because the shard's own table takes its
    /// slot from the low bits (taking those here too would crowd every key of a shard into a
    /// fraction of its slots).
    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        (hash >> 40) as usize & self.shard_mask
    }

    fn members(&self) -> usize {
        self.shape.len()
    }
}

/// What a sweep found for a key: key, limit, phase, field, value, threshold, start time.
type SweepEvent = (PackedKey, usize, Phase, usize, f64, f64, u64);

/// Counters of one moving average.
#[derive(Debug, Default)]
pub struct MavgStats {
    pub keys: AtomicUsize,
    pub keys_dropped: AtomicU64,
    pub events: AtomicU64,
    pub events_dropped: AtomicU64,
    pub active: AtomicUsize,
}

/// Whether a warning last given at `last` (wall clock, ms) may be given again now: every 10
/// seconds at most (a flood would otherwise log a line per flow or per sweep). If so, `last`
/// becomes now.
fn warn_due(last: &AtomicU64) -> bool {
    let (now, was) = (crate::capture::now_ms(), last.load(Ordering::Relaxed));
    now.saturating_sub(was) >= 10_000 && last.compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// A moving average with its thresholds and its shared table.
pub struct Mavg {
    pub object: String,
    pub name: String,
    /// Object directory (limits files, `.d` / `.a` dump triggers).
    pub dir: PathBuf,
    pub keys: Vec<FieldId>,
    pub layout: KeyLayout,
    pub aggs: Vec<Agg>,
    pub time_ms: u64,
    /// `1 / time_ms`: the decay multiplies by it (a division would sit on every flow's path).
    per_ms: f64,
    /// Bit l: limit l is an overlimit (checked on every flow; underlimits by the sweep).
    over_mask: u32,
    pub mem_bytes: usize,
    /// Dump interval, seconds.
    pub dump: Option<u64>,
    pub limits: Vec<LimitSpec>,
    pub thresholds: RwLock<Thresholds>,
    next_dump_ms: AtomicU64,
    /// When the warnings of a full hook queue and of a full `mem-m` were last given (wall
    /// clock, ms: see [`warn_due`]).
    last_drop_log_ms: AtomicU64,
    last_full_log_ms: AtomicU64,
    /// `stats.keys_dropped` when the last `mem-m` warning was given.
    keys_dropped_told: AtomicU64,
    /// The thresholds changed since the last sweep (reload): the next one looks at every row,
    /// not only at those with a limit active or over (see [`Mavg::sweep_group`]).
    thresholds_changed: AtomicBool,
    /// When (the averages' clock, ms) a sweep first found a key in the table, so traffic of
    /// the object had begun; 0 before. See [`Mavg::watch_listed`].
    traffic_since_ms: AtomicU64,
    /// The keys listed for this moving average's underlimits in the thresholds now in force
    /// are still to be watched (set at the start and by every change of thresholds).
    listed_pending: AtomicBool,
    /// The table, perhaps shared with another moving average of the object; this one's rows
    /// are member `member`'s.
    group: Arc<Group>,
    member: usize,
    pub stats: MavgStats,
    /// Its key states (in its shards' `limits`), for `mem-m`.
    states: StateCount,
    events: Mutex<Option<SyncSender<Event>>>,
    /// Starts and ends of limits the hook queue had no room for, in order: sent again at
    /// every sweep (see [`Mavg::emit`]).
    held: Mutex<VecDeque<Event>>,
}

impl std::fmt::Debug for Mavg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mavg({}/{})", self.object, self.name)
    }
}

impl Mavg {
    /// Memory one tracked key may take, counted against `mem-m`: its slot (this member's
    /// share of it), times the slots per key of a table just grown (tables grow at 5/8 full,
    /// doubling).
    pub fn key_bytes(&self) -> usize {
        self.group.slot_bytes * 16 / 5 / self.group.rows_per_slot()
    }

    /// Memory counted against `mem-m`: the keys (see [`Mavg::key_bytes`]) and their states
    /// (kept while an average fills for an underlimit, and while a limit holds).
    pub fn memory_bytes(&self) -> usize {
        self.stats.keys.load(Ordering::Relaxed) * self.key_bytes() + self.states.bytes()
    }

    /// Whether this moving average shares its table with another of its object.
    pub fn shares_table(&self) -> bool {
        self.group.members() > 1
    }

    /// Connects the moving average to the hook thread's queue (`None` disconnects: the hook
    /// thread ends once every moving average let go of it, after the events still held were
    /// handed to it).
    pub fn set_events(&self, tx: Option<SyncSender<Event>>) {
        let mut events = self.events.lock();
        if tx.is_none() {
            if let Some(old) = events.as_ref() {
                for ev in self.held.lock().drain(..) {
                    // Blocking: the hook thread is draining the queue.
                    let _ = old.send(ev);
                }
            }
        }
        *events = tx;
    }

    /// Hands an event to the hook thread without ever blocking (a worker may be sending).
    /// When the queue is full, a start or an end of a limit is held and sent again at the
    /// next sweeps (an action script that never ran leaves an attack unmitigated, a back2norm
    /// script that never ran leaves a mitigation on for good); a notification rewrite or a
    /// dump, which come again anyway, is dropped and counted. While events are held, later
    /// ones queue behind them, so a key's start and end reach the hooks in order.
    fn emit(self: &Arc<Self>, ev: Event) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let events = self.events.lock();
        let Some(tx) = events.as_ref() else { return };
        let mut held = self.held.lock();
        let ev = if held.is_empty() {
            match tx.try_send(ev) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(ev)) => ev,
            }
        } else {
            ev
        };
        let must_arrive = matches!(ev.phase, Phase::Start | Phase::Back2Norm);
        if must_arrive && held.len() < MAX_HELD_EVENTS {
            held.push_back(ev);
        } else {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let waiting = held.len();
        drop((held, events));
        self.log_full_queue(waiting);
    }

    /// Starts and ends of limits waiting for room in the hook queue.
    pub fn held_events(&self) -> usize {
        self.held.lock().len()
    }

    /// Sends the held events, in order, as far as the hook queue takes them (the sweep calls
    /// it once a second).
    fn send_held(&self) {
        let events = self.events.lock();
        let Some(tx) = events.as_ref() else { return };
        let mut held = self.held.lock();
        while let Some(ev) = held.pop_front() {
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    held.push_front(ev);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }

    /// Says, at most every 10 seconds, that the hook queue is full.
    fn log_full_queue(&self, waiting: usize) {
        if warn_due(&self.last_drop_log_ms) {
            let dropped = self.stats.events_dropped.load(Ordering::Relaxed);
            crate::log::warn(&format!(
                "{}/{}: hook queue full (hooks too slow): {waiting} alert starts/ends held and sent again every second, {dropped} events dropped so far",
                self.object, self.name
            ));
        }
    }

    /// Warns of flows of new keys skipped because `mem-m` was full since the last warning
    /// (the sweep calls it once a second; a warning every 10 s at most).
    fn log_keys_dropped(&self) {
        let (total, told) = (self.stats.keys_dropped.load(Ordering::Relaxed), self.keys_dropped_told.load(Ordering::Relaxed));
        if total > told && warn_due(&self.last_full_log_ms) {
            self.keys_dropped_told.store(total, Ordering::Relaxed);
            crate::log::warn(&format!(
                "{}/{}: mem-m ({} MiB) full with {} keys: {} flows of new keys not tracked since the last warning ({total} in all); known keys go on",
                self.object,
                self.name,
                self.mem_bytes >> 20,
                self.stats.keys.load(Ordering::Relaxed),
                total - told
            ));
        }
    }

    /// Points a shard's rows at `compiled` (every row's threshold set looked up again);
    /// returns how many rows hold each limit.
    fn retarget(&self, shard: &mut Shard, compiled: &Arc<Compiled>) -> [usize; MAX_LIMITS] {
        let mut active = [0; MAX_LIMITS];
        shard.rows.for_each_thr(self.member, |key, thr| {
            *thr = Row::with_index(*thr, compiled.index_of(key));
            for (l, n) in active.iter_mut().enumerate() {
                *n += Row::flag_in(*thr, ACTIVE_BIT, l) as usize;
            }
        });
        shard.compiled[self.member] = compiled.clone();
        self.thresholds_changed.store(true, Ordering::Relaxed);
        active
    }

    /// Replaces the thresholds (reload): every row gets its new ones at once; averages and
    /// active limits are kept.
    pub fn set_thresholds(&self, t: Thresholds) {
        let compiled = Arc::new(compile_thresholds(&self.limits, &t, self.secs()));
        *self.thresholds.write() = t;
        for cell in &self.group.cells {
            self.retarget(&mut cell.shard.lock(), &compiled);
        }
        self.listed_pending.store(true, Ordering::Relaxed);
    }

    /// Takes the thresholds of a freshly parsed version of this moving average (its mo.conf
    /// re-read): refused, with the reason, when the fields or limits changed in a way only a
    /// restart can apply.
    pub fn reload_from(&self, new: Mavg) -> Result<(), String> {
        if new.keys != self.keys || new.aggs != self.aggs || new.time_ms != self.time_ms {
            return Err("fields or time changed: restart to apply".into());
        }
        let names = |m: &Mavg| m.limits.iter().map(|l| (l.name.clone(), l.kind)).collect::<Vec<_>>();
        if names(&new) != names(self) {
            return Err("overlimit/underlimit elements added, removed or renamed: restart to apply".into());
        }
        let t = new.thresholds.into_inner().repacked(&new.layout, &self.layout);
        self.set_thresholds(t);
        Ok(())
    }

    /// Takes over the table of the previous configuration's versions of a table's moving
    /// averages (reload: `members` as [`groups`] returns them, `old` the previous version of
    /// each, by name), when their keys, fields, windows and limits are the same, and so is the
    /// table's sharing (the same members, each the same). Their rows move over with this
    /// configuration's thresholds; active limits stay active (and hold this configuration's
    /// extended windows), and alert events held for the hook queue move over.
    ///
    /// Workers go on applying flows to the previous versions until they move to the new
    /// configuration (at their next tick): from the moment the rows move, the previous table
    /// sends them on to the new one, so that no flow is left out of
    /// the averages kept and none starts an alert in a table about to be dropped.
    pub fn adopt(members: &[Arc<Mavg>], old: &[&Arc<Mavg>]) -> bool {
        let (mine, theirs) = (&members[0].group, &old[0].group);
        let same_table = old.len() == members.len() && old.iter().enumerate().all(|(m, o)| o.member == m && Arc::ptr_eq(&o.group, theirs));
        if !same_table || mine.shape != theirs.shape || mine.cells.len() != theirs.cells.len() || theirs.successor.get().is_some() {
            return false;
        }
        // This configuration's thresholds (every shard holds the same).
        let compiled: Vec<Arc<Compiled>> = mine.cells[0].shard.lock().compiled.clone();
        let mut active = vec![[0usize; MAX_LIMITS]; members.len()];
        {
            // Every shard of the previous table locked until it sends flows on: a worker
            // applies a batch either to the rows before they move or to the new table after.
            let mut previous: Vec<_> = theirs.cells.iter().map(|c| c.shard.lock()).collect();
            for (b, cell) in previous.iter_mut().zip(&mine.cells) {
                let mut a = cell.shard.lock();
                std::mem::swap(&mut a.rows, &mut b.rows);
                std::mem::swap(&mut a.limits, &mut b.limits);
                for (member, active) in members.iter().zip(active.iter_mut()) {
                    for (total, n) in active.iter_mut().zip(member.retarget(&mut a, &compiled[member.member])) {
                        *total += n;
                    }
                }
                cell.publish(a.rows.probe_start());
            }
            let _ = theirs.successor.set(members.to_vec());
        }
        for ((new, old), active) in members.iter().zip(old).zip(active) {
            new.carry_counters(old);
            for (l, n) in active.into_iter().enumerate().take(new.limits.len()) {
                for _ in 0..n {
                    new.activate(l, true);
                }
            }
            // Starts and ends the hook queue had no room for yet.
            new.held.lock().extend(old.held.lock().drain(..));
        }
        true
    }

    /// Takes over the counters of the previous version whose table it took (reload): its keys
    /// (counted against `mem-m`), events and what was dropped, since when it has had traffic
    /// (listed keys are not made to wait again), and when the warnings were last given (each
    /// reload would otherwise start a warning's 10 s again and its "so far" from zero).
    fn carry_counters(&self, old: &Mavg) {
        let carry = |mine: &AtomicU64, theirs: &AtomicU64| mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        self.stats.keys.store(old.stats.keys.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        self.states.take_from(&old.states);
        carry(&self.stats.keys_dropped, &old.stats.keys_dropped);
        carry(&self.stats.events, &old.stats.events);
        carry(&self.stats.events_dropped, &old.stats.events_dropped);
        carry(&self.keys_dropped_told, &old.keys_dropped_told);
        carry(&self.traffic_since_ms, &old.traffic_since_ms);
        carry(&self.last_drop_log_ms, &old.last_drop_log_ms);
        carry(&self.last_full_log_ms, &old.last_full_log_ms);
    }

    /// Whether this member has room for one more key within `mem-m` (the members of a shared
    /// table hold the same keys, but each has key states of its own: a key goes in when every
    /// member has room).
    fn has_room_for_key(&self) -> bool {
        self.memory_bytes() + self.key_bytes() <= self.mem_bytes
    }

    /// Counts a key put in a table, in each of its members.
    fn count_new_key<'a>(members: impl IntoIterator<Item = &'a Mavg>) {
        for member in members {
            member.stats.keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Folds the over flag of limit `l` into the key's state: at `at_ms` the averages were `n`
    /// and over the thresholds `thr`, so that is when the limit last held, with that rate.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn record_over(&self, row: &mut Row, limits: &mut LimitStates, key: &PackedKey, l: usize, n: &[f64; 3], at_ms: u64, set: &ThresholdSet) {
        row.set_flag(OVER_BIT, l, false);
        let over = self.over(n, set, l);
        let st = limit_state(limits, key, l, &self.states);
        st.last_bad_ms = st.last_bad_ms.max(at_ms);
        if let Some((field, value, threshold)) = over {
            (st.field, st.value, st.threshold) = (field, value, threshold);
        }
    }

    /// The per-flow formula: `n` after `dt` ms, plus the flow's `v` (`v` alone once a whole
    /// window `T` passed). Not `decayed(n, dt) + v`: the reset would no longer fold into the
    /// add (measured ~10% slower in benches/pipeline).
    #[inline(always)]
    fn step(&self, n: f64, v: f64, dt: u64) -> f64 {
        let decay = dt as i64 as f64 * self.per_ms; // dt < 2^63: the cheaper signed conversion
        if dt >= self.time_ms {
            v
        } else {
            n - decay * n + v
        }
    }

    /// `n` after `dt` ms without traffic: `n - dt/T * n`, and 0 once a whole window `T` passed.
    #[inline]
    fn decayed(&self, n: f64, dt: u64) -> f64 {
        if dt >= self.time_ms {
            0.0
        } else {
            n - dt as f64 * self.per_ms * n
        }
    }

    /// The window in seconds (rates are sums divided by it).
    fn secs(&self) -> f64 {
        self.time_ms as f64 / 1000.0
    }

    /// What a limit reports for `field`: its rate and its threshold as configured.
    fn verdict(&self, n: &[f64; 3], set: &ThresholdSet, l: usize, field: usize) -> (f64, f64) {
        (n[field] / self.secs(), set.rate[l][field])
    }

    /// Overlimit `l` holds: the first field over its threshold, (field, rate, threshold).
    fn over(&self, n: &[f64; 3], set: &ThresholdSet, l: usize) -> Option<(usize, f64, f64)> {
        let field = over_field(n, &set.sum[l], self.aggs.len())?;
        let (value, threshold) = self.verdict(n, set, l, field);
        Some((field, value, threshold))
    }

    /// Underlimit `l` holds for sums `n` of an average filled to `fill` (see [`Mavg::fill`]):
    /// what it would read full (`n / fill`) is under, and so the first field under its
    /// threshold, (field, rate, threshold), with the rate it reads now.
    /// (A fill not looked up, `None` from [`Mavg::fill`], is only ever of an average under no
    /// underlimit as it reads: none holds whatever the fill.)
    fn under_filled(&self, n: &[f64; 3], fill: Option<f64>, set: &ThresholdSet, l: usize) -> Option<(usize, f64, f64)> {
        let fill = fill.unwrap_or(1.0);
        if fill < 1.0 {
            let full = n.map(|x| if fill > 0.0 { x / fill } else { f64::INFINITY });
            self.under(&full, set, l)?;
        }
        self.under(n, set, l)
    }

    /// How much of a steady rate the average of `key` shows at `now_ms`, for its underlimits:
    /// an average fills from 0, so steady traffic at rate r reads at least
    /// r × (1 − e^(−age/time)) at `age` after the key's first flow. Below 1 in the key's first
    /// [`FILL_WINDOWS`] windows (then the key's first flow is forgotten), else 1. So neither a
    /// key that just appeared nor every key after a start is taken for traffic that dropped,
    /// while one whose traffic stops is still found as soon as its average shows it.
    ///
    /// For a row with [`FILLING`] (without, it is full) and sums `n` (decayed to `now_ms`).
    /// The key's state (when its first flow came) is looked up only when that matters: when
    /// its average as it reads is under an underlimit (what it would read full may be under
    /// too), or when its epoch says it has filled (then the bit goes, and the key's state if
    /// nothing else holds it). Otherwise `None`: not known, and nothing depends on it. A flood
    /// of new keys would otherwise cost a lookup, most often a cache miss, per key and sweep
    /// for 10 windows. Out of line: the sweep of the rows that have filled stays lean.
    #[inline(never)]
    fn fill(&self, row: &mut Row, limits: &mut LimitStates, key: &PackedKey, n: &[f64; 3], set: &ThresholdSet, now_ms: u64) -> Option<f64> {
        let under = |l: usize| self.limits[l].kind == LimitKind::Under && self.under(n, set, l).is_some();
        if !(0..self.limits.len()).any(under) && !self.surely_filled(row, now_ms) {
            return None;
        }
        let Some(state) = limits.get_mut(key).filter(|s| s.first_ms != 0) else {
            row.thr &= !FILL_BITS;
            return Some(1.0);
        };
        let age = now_ms.saturating_sub(state.first_ms);
        if age >= FILL_WINDOWS * self.time_ms {
            state.first_ms = 0;
            row.thr &= !FILL_BITS;
            return Some(1.0);
        }
        Some(1.0 - (-(age as f64) * self.per_ms).exp())
    }

    /// The filling epochs: an eighth of [`FILL_WINDOWS`] windows each.
    fn fill_epoch(&self, now_ms: u64) -> u32 {
        (now_ms / (FILL_WINDOWS * self.time_ms / 8).max(1) % 16) as u32
    }

    /// The row bits of a key put in at `now_ms`: filling since now, for an underlimit.
    fn filling_bits(&self, now_ms: u64) -> u32 {
        if self.has_underlimit() {
            FILLING | self.fill_epoch(now_ms) << FILL_EPOCH_SHIFT
        } else {
            0
        }
    }

    /// Whether a filling row's average has surely filled by `now_ms`: nine epochs on from the
    /// one it began in are at least eight, [`FILL_WINDOWS`] windows; or the row has had no
    /// flow for that long (its first came before its last). Epochs are counted modulo 16, so
    /// the first alone would miss a row first looked at 16 epochs on (a sweep after a gap in
    /// the collector's clock); a row with flows is swept every second. [`Mavg::fill`] is
    /// exact whenever it looks.
    fn surely_filled(&self, row: &Row, now_ms: u64) -> bool {
        let began = (row.thr & FILL_EPOCH_BITS) >> FILL_EPOCH_SHIFT;
        let fill_ms = FILL_WINDOWS * self.time_ms;
        self.fill_epoch(now_ms).wrapping_sub(began) & 15 >= 9 || now_ms.saturating_sub(row.last_ms) >= fill_ms
    }

    /// Whether a limit is an underlimit (found by the sweep, on keys kept however idle).
    fn has_underlimit(&self) -> bool {
        self.limits.len() > self.over_mask.count_ones() as usize
    }

    /// Underlimit `l` holds: every field with a threshold below it -> the first such field,
    /// (field, rate, threshold).
    fn under(&self, n: &[f64; 3], set: &ThresholdSet, l: usize) -> Option<(usize, f64, f64)> {
        let sum = &set.sum[l];
        if !(0..self.aggs.len()).all(|i| !sum[i].is_finite() || n[i] < sum[i]) {
            return None;
        }
        let field = (0..self.aggs.len()).find(|&i| sum[i].is_finite())?;
        let (value, threshold) = self.verdict(n, set, l, field);
        Some((field, value, threshold))
    }

    /// Switches the limit's extended windows on or off (counted: a window stays on while any
    /// active limit holds it).
    fn activate(&self, limit: usize, on: bool) {
        if on {
            self.stats.active.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
        for w in &self.limits[limit].ext {
            w.hold(on);
        }
    }
}

/// Lets moving averages of one object (freshly parsed, in mo.conf order) share tables: each
/// one with the same key fields, as many averaged fields and the same `mem-m` as an earlier
/// one with a table of its own, when the two rows and the key fit one cache line, joins it.
/// Every flow of the object updates both, so they hold the same keys: one lookup and one cache
/// line serve both averages. Each keeps its own window, thresholds, limits and events.
///
/// Failing that, one keyed by an earlier one's key fields and one field of 8 bits more (the
/// guide's pair: by address, then by address and protocol), with as many averaged fields, is
/// nested in that one's table (see [`rowtable::Nest`]): its keys are packed extended, its
/// rows have slots of their own next to the first's. Each keeps its own `mem-m` then.
pub fn share_tables(mavgs: &mut [Mavg]) {
    share_tables_in(mavgs, shard_count());
}

/// [`share_tables`], shared tables split over `shards` shards.
fn share_tables_in(mavgs: &mut [Mavg], shards: usize) {
    for j in 1..mavgs.len() {
        let (earlier, rest) = mavgs.split_at_mut(j);
        let b = &mut rest[0];
        let same_keys = |a: &Mavg| a.keys == b.keys && a.mem_bytes == b.mem_bytes && rowtable::Rows::shared_fits(a.layout.words, a.aggs.len());
        let partner = earlier.iter_mut().filter(|a| !a.shares_table() && a.aggs.len() == b.aggs.len()).find_map(|a| {
            let nested = if same_keys(a) { None } else { Some(a.nested_layout(&b.keys)?) };
            Some((a, nested))
        });
        let Some((a, nested)) = partner else { continue };
        let nest = match nested {
            Some(layout) => {
                b.nest_as(layout);
                rowtable::Nest::of(&b.layout)
            }
            None => rowtable::Nest::default(),
        };
        let compiled = |m: &Mavg| m.group.cells[0].shard.lock().compiled[0].clone();
        let shape = vec![a.group.shape[0].clone(), b.group.shape[0].clone()];
        let group = Arc::new(Group::new(a.layout.words, a.aggs.len(), vec![compiled(a), compiled(b)], shape, shards, nest));
        for (member, m) in [&mut *a, &mut *b].into_iter().enumerate() {
            (m.group, m.member) = (group.clone(), member);
        }
        let how = if group.nested() { "nested: the same keys and one field more" } else { "the same keys" };
        crate::log::info(&format!("{}: moving averages {} and {} share a table ({how})", a.object, a.name, b.name));
    }
}

impl Mavg {
    /// The layout of a moving average keyed by `keys`, nested in this one's table: this one's
    /// layout extended by the last of `keys`, when `keys` are this one's and one more field
    /// that fits (see [`KeyLayout::extended`]).
    fn nested_layout(&self, keys: &[FieldId]) -> Option<KeyLayout> {
        let (extra, first) = keys.split_last()?;
        (first == self.keys).then(|| self.layout.extended(*extra))?
    }

    /// Packs this (freshly parsed) moving average's keys by `layout` from now on: its
    /// thresholds, and those its table was made with, follow.
    fn nest_as(&mut self, layout: KeyLayout) {
        let t = std::mem::take(self.thresholds.get_mut()).repacked(&self.layout, &layout);
        let compiled = Arc::new(compile_thresholds(&self.limits, &t, self.secs()));
        self.group.cells[0].shard.lock().compiled[0] = compiled;
        (*self.thresholds.get_mut(), self.layout) = (t, layout);
    }
}

/// Moving averages by object and name (the first of each: names are unique within an
/// object), for matching a reload's averages to the previous ones without a search through
/// all of them for each.
pub fn by_name(mavgs: &[Arc<Mavg>]) -> HashMap<(&str, &str), &Arc<Mavg>> {
    let mut out = HashMap::with_capacity(mavgs.len());
    for m in mavgs {
        out.entry((m.object.as_str(), m.name.as_str())).or_insert(m);
    }
    out
}

/// The moving averages of one object by table: each table's members, first member first (what
/// a [`Feed`] and [`Mavg::sweep_group`] take).
pub fn groups(mavgs: &[Arc<Mavg>]) -> Vec<Vec<Arc<Mavg>>> {
    let mut out: Vec<Vec<Arc<Mavg>>> = Vec::new();
    // Tables in order of first appearance, found by address: all of a load's averages (tens
    // of thousands) are grouped at once.
    let mut at: HashMap<*const Group, usize> = HashMap::new();
    for m in mavgs {
        let g = *at.entry(Arc::as_ptr(&m.group)).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[g].push(m.clone());
    }
    for g in &mut out {
        g.sort_by_key(|m| m.member);
    }
    out
}

pub use config::{format_value, load_limits, parse};
pub use resume::{notification_files, take_over_alerts, take_up_alerts, Retired, TakenUp};
pub use sweep::SweepPass;

pub use feed::{Feed, Pending};

mod config;
mod feed;
mod resume;
mod rowtable;
mod sweep;

#[cfg(test)]
mod tests;
