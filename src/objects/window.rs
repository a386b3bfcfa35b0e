//! Fixed windows (`fwm`): what one window aggregates, and a worker's running window.
//!
//! Each worker sums flows into its own map per window (no lock); when the collector clock
//! passes the window's end, the map is handed to the export thread as a [`Closed`] window and a
//! new one starts. Windows are aligned to multiples of their length in unix time, so every
//! worker's pieces of one window share the same start and the export thread can merge them.
//!
//! A busy window's map is tens of megabytes written at random, and fresh memory costs a page
//! fault at its first write: a new map per window stalled the worker for up to 150 ms after
//! every window start, losing datagrams in a flood. So maps go round: the export thread empties
//! a written window's map and leaves it in the window's [`Spare`], where the worker takes it
//! (memory in place, only zeroed) when the window after next starts. A window that outgrew
//! that map (a flood began) has a bigger one made ahead, off the worker
//! (`Window::prepare_next`).

use super::rows::{KeyLayout, RowMap, MAX_WORDS};
use super::slots;
pub use super::rows::{Aggs, Key, MAX_KEY_FIELDS};
use crate::fields::FieldId;
use crate::flow::Flow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// An emptied map waiting for its window's next start: the export thread leaves it here after
/// writing (or merging) a closed piece, the worker takes it when its window closes. One per
/// worker's window; the maps it holds have that window's fields.
#[derive(Default)]
pub struct Spare(parking_lot::Mutex<Option<RowMap>>);

impl Spare {
    /// Leaves an emptied map of this window's fields (the one left before is dropped here,
    /// off the worker).
    pub fn give(&self, mut rows: RowMap) {
        rows.clear();
        let before = self.0.lock().replace(rows);
        drop(before);
    }

    /// Whether the map left suits a window of about `rows` rows.
    fn suits(&self, rows: usize) -> bool {
        self.0.lock().as_ref().is_some_and(|m| m.suits(rows))
    }

    /// The map left, if it suits a window of about `rows` rows (else it stays, until the next
    /// one given replaces it).
    fn take_for(&self, rows: usize) -> Option<RowMap> {
        self.0.lock().take_if(|m| m.suits(rows))
    }
}

#[cfg(test)]
impl Spare {
    pub(crate) fn holds(&self) -> bool {
        self.0.lock().is_some()
    }
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spare")
    }
}

/// A summed field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Octets,
    Packets,
    /// Octets × 8.
    Bits,
}

impl Agg {
    /// This field's value in a flow (0 when the flow does not carry it).
    #[inline]
    pub fn of(self, flow: &Flow) -> u64 {
        let octets = flow.get_or_zero(FieldId::Octets) as u64;
        match self {
            Agg::Octets => octets,
            Agg::Packets => flow.get_or_zero(FieldId::Packets) as u64,
            Agg::Bits => octets.saturating_mul(8),
        }
    }
}

/// What an entry of a `fields` list (of a window or a moving average) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldRef {
    Agg(Agg),
    Key(FieldId),
}

impl FieldRef {
    /// An entry, lowercased and trimmed (a window's " desc" taken off); the error says why it
    /// names nothing.
    pub fn parse(text: &str) -> Result<FieldRef, String> {
        match text {
            "octets" => Ok(FieldRef::Agg(Agg::Octets)),
            "packets" => Ok(FieldRef::Agg(Agg::Packets)),
            "bits" => Ok(FieldRef::Agg(Agg::Bits)),
            _ => match crate::fields::lookup(text).as_slice() {
                [id] => Ok(FieldRef::Key(*id)),
                [a, ..] if a.def().side != crate::fields::Side::None => Err(format!("\"{text}\" needs \"src\" or \"dst\"")),
                _ => Err(format!("unknown field \"{text}\"")),
            },
        }
    }
}

/// One column of the exported table, in the order of `fields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// SQL column name (`src host` -> `src_host`).
    pub name: String,
    pub source: ColumnSource,
    /// Rows are sorted by this column descending.
    pub desc: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnSource {
    /// Index into the key values.
    Key(usize),
    /// Index into the sums.
    Agg(usize),
}

/// A validated `fwm` element.
#[derive(Debug)]
pub struct FwmSpec {
    pub object: String,
    pub name: String,
    /// `<object>_<name>` with `/` replaced by `_`.
    pub table: String,
    pub columns: Vec<Column>,
    pub keys: Vec<FieldId>,
    /// How `keys` are packed in the window's map.
    pub layout: KeyLayout,
    pub aggs: Vec<Agg>,
    /// Window length, seconds.
    pub time: u64,
    pub limit: Option<usize>,
    pub extended: bool,
    /// Whether the export file makes the table's index on `time` (the original's
    /// `"create-index": false` or `"off"` leaves it out).
    pub create_index: bool,
    /// Bound of a worker's map of this window (`mem-m`): see [`FwmSpec::new_map`].
    pub mem_bytes: usize,
    /// Whether rows are collected now (always for ordinary windows; switched for extended ones).
    pub active: AtomicBool,
    /// Active limits holding this extended window on.
    pub holders: AtomicUsize,
    /// Lua function of the object's mo.lua called with each export's rows.
    pub export_lua: Option<String>,
    /// The object's directory (its mo.lua).
    pub dir: std::path::PathBuf,
}

/// Switches of extended windows so far (any window, any configuration): a worker's windows
/// keep their own copy of whether they collect, read again when this has moved (at the
/// worker's next datagram), so a flow does not read every window's spec to learn it.
pub static EXT_SWITCHES: AtomicU64 = AtomicU64::new(0);

/// `mem-m` of a fixed window when not given (MiB).
pub const DEFAULT_FWM_MEM_M: u64 = 1024;

#[cfg(test)]
impl FwmSpec {
    /// A window for unit tests: table `<object>_<name>`, no limit, collecting, no `mem-m`.
    pub(crate) fn for_tests(object: &str, name: &str, columns: Vec<Column>, keys: Vec<FieldId>, aggs: Vec<Agg>, time: u64) -> FwmSpec {
        FwmSpec {
            object: object.into(),
            name: name.into(),
            table: format!("{object}_{name}"),
            columns,
            layout: KeyLayout::new(&keys),
            keys,
            aggs,
            time,
            limit: None,
            extended: false,
            create_index: true,
            mem_bytes: usize::MAX,
            active: AtomicBool::new(true),
            holders: AtomicUsize::new(0),
            export_lua: None,
            dir: Default::default(),
        }
    }
}

impl FwmSpec {
    /// An empty map for this window's rows, with room for `capacity` rows, its slot array
    /// bounded to `mem-m`: a flood of new keys (spoofed sources) would otherwise grow it
    /// until the collector is killed for its memory. Once full, new keys' sums go to the row
    /// whose key fields are all NULL, as the rows past a `limit` do: totals stay whole.
    pub fn new_map(&self, capacity: usize) -> RowMap {
        let rest = self.layout.pack_values(&vec![None; self.layout.len()]);
        RowMap::bounded(self.layout.words, self.aggs.len(), capacity, self.mem_bytes, &rest)
    }

    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Switches an extended window on or off (ordinary windows are always on).
    pub fn set_active(&self, on: bool) {
        if self.extended {
            self.switch_to(on);
        }
    }

    /// Sets `active` and tells the workers (see [`EXT_SWITCHES`]).
    fn switch_to(&self, on: bool) {
        self.active.store(on, Ordering::Relaxed);
        EXT_SWITCHES.fetch_add(1, Ordering::Release);
    }

    /// An active limit takes (`true`) or releases (`false`) this extended window: it collects
    /// while at least one limit holds it. Ordinary windows are always on.
    pub fn hold(&self, on: bool) {
        if !self.extended {
            return;
        }
        if on {
            if self.holders.fetch_add(1, Ordering::AcqRel) == 0 {
                self.switch_to(true);
            }
        } else if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.switch_to(false);
        }
    }

    /// Start of the window containing `t` (seconds).
    #[inline]
    pub fn align(&self, t: u64) -> u64 {
        t - t % self.time
    }
}

/// A window closed by one worker, on its way to the export thread.
#[derive(Debug)]
pub struct Closed {
    /// The window's spec (its table: pieces of one table and start merge, across workers and
    /// across reloads).
    pub spec: Arc<FwmSpec>,
    pub worker: usize,
    /// Start of the closed window (unix seconds).
    pub start: u64,
    /// Start of the worker's next window (`u64::MAX` at shutdown): nothing older will follow.
    pub next_start: u64,
    pub rows: RowMap,
    /// Where the export thread gives the emptied map back.
    pub spare: Arc<Spare>,
}

/// A worker's running window of one `fwm`.
pub struct Window {
    /// What [`Window::add`] reads for every flow, copied from the spec: with many objects
    /// (a thousand customers' windows), each flow would otherwise follow the spec and its
    /// vectors to memory no other flow has touched lately.
    adds: Adds,
    pub spec: Arc<FwmSpec>,
    /// `None` until the first clock reading.
    start: Option<u64>,
    rows: RowMap,
    /// Packed key of the current flow (reused: no allocation per flow).
    key: [u64; MAX_WORDS],
    spare: Arc<Spare>,
    /// When the window next looks at its next map (see [`Window::prepare_next`]), seconds.
    look_at: u64,
}

/// The spec's per-flow part, kept in the window (see [`Window::adds`]).
struct Adds {
    layout: KeyLayout,
    aggs: [Agg; 3],
    naggs: u8,
    /// The spec's `active`, as of the last [`Window::see_switches`].
    active: bool,
}

impl Adds {
    fn of(spec: &FwmSpec) -> Adds {
        let mut aggs = [Agg::Octets; 3];
        let naggs = spec.aggs.len().min(3);
        aggs[..naggs].copy_from_slice(&spec.aggs[..naggs]);
        Adds { layout: spec.layout.clone(), aggs, naggs: naggs as u8, active: spec.is_active() }
    }
}

impl Window {
    pub fn new(spec: Arc<FwmSpec>) -> Self {
        let rows = spec.new_map(0);
        Window { adds: Adds::of(&spec), spec, start: None, rows, key: [0; MAX_WORDS], spare: Arc::default(), look_at: 0 }
    }

    /// Adds a flow (which the object's filter matched). The worker advances the clock to the
    /// flow's time first, so the window has started.
    #[inline(always)]
    pub fn add(&mut self, flow: &Flow) {
        let adds = &self.adds;
        if !adds.active {
            return;
        }
        adds.layout.pack(flow, &mut self.key);
        let mut sums = [0u64; 3];
        for (s, agg) in sums.iter_mut().zip(&adds.aggs[..adds.naggs as usize]) {
            *s = agg.of(flow);
        }
        self.rows.add(&self.key, &sums);
    }

    /// Reads again whether the window collects (an extended window switched; see
    /// [`EXT_SWITCHES`]).
    pub fn see_switches(&mut self) {
        self.adds.active = self.spec.is_active();
    }

    /// Takes over a window of the previous configuration (reload) when it is the same table
    /// with the same fields and length: rows and start carry on, nothing is written twice.
    /// Returns the old window back when it cannot be taken over.
    pub fn adopt(&mut self, old: Window) -> Option<Window> {
        let same = old.spec.table == self.spec.table
            && old.spec.layout == self.spec.layout
            && old.spec.aggs == self.spec.aggs
            && old.spec.time == self.spec.time;
        if !same {
            return Some(old);
        }
        self.start = old.start;
        self.look_at = old.look_at;
        self.rows = old.rows;
        self.spare = old.spare;
        None
    }

    /// End of the current window (seconds), if started.
    pub fn deadline(&self) -> Option<u64> {
        self.start.map(|s| s + self.spec.time)
    }

    /// When the clock next needs to reach [`Window::advance`] (seconds): the window's end, or
    /// before it the next look at its next map.
    pub fn wake_at(&self) -> Option<u64> {
        Some(self.look_at.min(self.deadline()?))
    }

    /// Moves the clock to `now` (seconds): closes the window when `now` is past its end.
    pub fn advance(&mut self, now: u64, worker: usize, out: &mut Vec<Closed>) {
        match self.start {
            None => self.begin(self.spec.align(now)),
            Some(start) if now >= start + self.spec.time => {
                let next = self.spec.align(now);
                out.push(self.close(start, next, worker));
                self.begin(next);
            }
            Some(_) if now >= self.look_at => {
                self.look_at = now + 1;
                self.prepare_next();
            }
            Some(_) => {}
        }
    }

    fn begin(&mut self, start: u64) {
        self.start = Some(start);
        self.look_at = start + self.spec.time / 2;
    }

    /// Every second of the window's second half: when the spare map would not hold this
    /// window's rows (the window outgrew the one before, as at a flood's start), has the
    /// memory thread make one for twice as many, leave it in the spare and fault it in, so
    /// that the next window does not start in fresh memory (which stopped the worker 380-410
    /// ms at 1.4 million keys). Once per window; only for maps big enough to be on their own
    /// mapping. (Even the `mmap` is left to that thread: on the worker it waited up to 45 ms
    /// for the address space while the kernel faulted pages in for the thread.)
    fn prepare_next(&mut self) {
        let rows = self.rows.len();
        if !self.rows.is_mapped() || self.spare.suits(rows) {
            return;
        }
        let spec = self.spec.clone();
        let make = move || spec.new_map(rows * 2);
        if slots::make_in_background(self.spare.clone(), make, Spare::give) {
            self.look_at = u64::MAX;
        }
    }

    /// Closes the current window for good (shutdown, end of a replay).
    pub fn finish(&mut self, worker: usize, out: &mut Vec<Closed>) {
        if let Some(start) = self.start.take() {
            out.push(self.close(start, u64::MAX, worker));
        }
    }

    fn close(&mut self, start: u64, next_start: u64, worker: usize) -> Closed {
        // The next window starts with room for as many rows as this one had (a busy window does
        // not rehash its way up again every time), in a spare map when there is one that fits.
        let expected = if next_start == u64::MAX { 0 } else { self.rows.len() };
        let next = match self.spare.take_for(expected) {
            Some(map) => map,
            None => self.spec.new_map(expected),
        };
        let rows = std::mem::replace(&mut self.rows, next);
        Closed { spec: self.spec.clone(), worker, start, next_start, rows, spare: self.spare.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(keys: Vec<FieldId>, aggs: Vec<Agg>, time: u64) -> Arc<FwmSpec> {
        Arc::new(FwmSpec::for_tests("o", "w", Vec::new(), keys, aggs, time))
    }

    fn flow(dst: u128, octets: u128) -> Flow {
        let mut f = Flow::default();
        f.set(FieldId::DstHost, dst);
        f.set(FieldId::Octets, octets);
        f.set(FieldId::Packets, 1);
        f
    }

    #[test]
    fn sums_per_key_and_closes_on_the_clock() {
        let mut w = Window::new(spec(vec![FieldId::DstHost], vec![Agg::Octets, Agg::Packets, Agg::Bits], 30));
        let mut out = Vec::new();
        w.advance(1000, 0, &mut out);
        assert_eq!(w.deadline(), Some(1020), "aligned to multiples of 30");
        w.add(&flow(1, 100));
        w.add(&flow(1, 50));
        w.add(&flow(2, 7));
        w.advance(1019, 0, &mut out);
        assert!(out.is_empty());
        w.advance(1085, 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start, out[0].next_start), (990, 1080));
        let spec = w.spec.clone();
        let mut rows = out[0].rows.export_rows(&spec);
        rows.sort_by_key(|r| r.0.get(0)); // this spec has no columns to order by
        assert_eq!(rows, vec![(Key(vec![Some(1)]), [150, 2, 1200]), (Key(vec![Some(2)]), [7, 1, 56])]);
        w.finish(0, &mut out);
        assert_eq!(out[1].next_start, u64::MAX);
        assert!(out[1].rows.is_empty());
    }

    #[test]
    fn a_written_map_comes_back_for_the_window_after_next() {
        let mut w = Window::new(spec(vec![FieldId::DstHost], vec![Agg::Octets], 10));
        let mut out = Vec::new();
        let fill = |w: &mut Window, base: u128| (0..1000).for_each(|i| w.add(&flow(base + i, 1)));
        w.advance(100, 0, &mut out);
        fill(&mut w, 0);
        w.advance(110, 0, &mut out); // window 100 closes: no spare yet, a new map
        let mut first = out.pop().unwrap();
        assert_eq!(first.rows.export_rows(&w.spec).len(), 1000);
        // The export thread has written it and gives the map back; the worker takes it when
        // window 110 closes, and the next window starts empty in it.
        first.spare.give(first.rows);
        assert!(w.spare.holds());
        fill(&mut w, 5000);
        w.advance(120, 0, &mut out);
        assert!(!w.spare.holds(), "taken for window 120");
        assert_eq!(out.pop().unwrap().rows.len(), 1000);
        assert!(w.rows.is_empty());
        w.add(&flow(7, 3));
        w.finish(0, &mut out);
        assert_eq!(out.pop().unwrap().rows.export_rows(&w.spec), vec![(Key(vec![Some(7)]), [3, 0, 0])]);
        // A map too small (it would grow) or far too big for the next window stays where it is.
        w.advance(200, 0, &mut out);
        for (given, rows) in [(8, 1000), (100_000, 10)] {
            w.spare.give(RowMap::new(1, 1, given));
            (0..rows).for_each(|i| w.add(&flow(i, 1)));
            w.advance(w.deadline().unwrap(), 0, &mut out);
            assert!(w.spare.holds(), "a map for {given} rows kept for a window of {rows}");
        }
    }

    #[test]
    fn a_window_outgrowing_its_spare_has_the_next_map_made_in_its_second_half() {
        let mut w = Window::new(spec(vec![FieldId::DstHost], vec![Agg::Octets], 10));
        let mut out = Vec::new();
        w.advance(100, 0, &mut out);
        assert_eq!(w.wake_at(), Some(105), "first look halfway");
        (0..50_000).for_each(|i| w.add(&flow(i, 1))); // a 2 MB map: on its own mapping
        w.advance(104, 0, &mut out);
        assert!(!w.spare.holds());
        w.advance(105, 0, &mut out);
        // Made by the memory thread, and left in the spare.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !w.spare.holds() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(w.spare.suits(100_000), "made for twice the rows");
        assert_eq!(w.wake_at(), Some(110), "once per window");
        w.advance(110, 0, &mut out);
        assert!(!w.spare.holds(), "the next window starts in it");
        assert_eq!(out.pop().unwrap().rows.len(), 50_000);
        // A small window (a map from the allocator) gets nothing made ahead.
        let mut small = Window::new(spec(vec![FieldId::DstHost], vec![Agg::Octets], 10));
        small.advance(100, 0, &mut out);
        (0..1000).for_each(|i| small.add(&flow(i, 1)));
        small.advance(105, 0, &mut out);
        assert!(!small.spare.holds());
        assert_eq!(small.wake_at(), Some(106), "looked again every second");
    }

    #[test]
    fn inactive_extended_window_collects_nothing() {
        let s = Arc::new(FwmSpec { extended: true, active: AtomicBool::new(false), ..Arc::try_unwrap(spec(vec![], vec![Agg::Octets], 10)).unwrap() });
        let mut w = Window::new(s.clone());
        let mut out = Vec::new();
        w.advance(100, 0, &mut out);
        w.add(&flow(1, 10));
        s.set_active(true);
        // Seen once the window reads its spec again (the worker does at its next datagram
        // when EXT_SWITCHES has moved).
        w.add(&flow(1, 15));
        w.see_switches();
        w.add(&flow(1, 20));
        w.finish(0, &mut out);
        let rows = out[0].rows.export_rows(&s);
        assert_eq!(rows, vec![(Key(vec![]), [20, 0, 0])]);
    }
}
