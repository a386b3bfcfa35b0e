//! Fixed windows (`fwm`): what one window aggregates, and a worker's running window.
//!
//! Each worker sums flows into its own map per window (no lock); when the collector clock
//! passes the window's end, the map is handed to the export thread as a [`Closed`] window and a
//! new one starts. Windows are aligned to multiples of their length in unix time, so every
//! worker's pieces of one window share the same start and the export thread can merge them.

use crate::fields::FieldId;
use crate::flow::Flow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most key fields one window may have.
pub const MAX_KEY_FIELDS: usize = 8;

/// A summed field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Octets,
    Packets,
    /// Octets × 8.
    Bits,
}

/// Sums of one row, indexed like `FwmSpec::aggs`.
pub type Aggs = [u64; 3];

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
    /// Position in `Objects::windows` (the id workers and the exporter share).
    pub id: usize,
    pub object: String,
    pub name: String,
    /// `<object>_<name>` with `/` replaced by `_`.
    pub table: String,
    pub columns: Vec<Column>,
    pub keys: Vec<FieldId>,
    pub aggs: Vec<Agg>,
    /// Window length, seconds.
    pub time: u64,
    pub limit: Option<usize>,
    pub extended: bool,
    /// Whether rows are collected now (always for ordinary windows; switched for extended ones).
    pub active: AtomicBool,
}

impl FwmSpec {
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Switches an extended window on or off (ordinary windows are always on).
    pub fn set_active(&self, on: bool) {
        if self.extended {
            self.active.store(on, Ordering::Relaxed);
        }
    }

    /// Start of the window containing `t` (seconds).
    #[inline]
    pub fn align(&self, t: u64) -> u64 {
        t - t % self.time
    }
}

/// Values of a row's key fields; an absent field (an IPv4 field of an IPv6 flow) is NULL.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    n: u8,
    absent: u8,
    vals: [u128; MAX_KEY_FIELDS],
}

impl Key {
    pub const EMPTY: Key = Key { n: 0, absent: 0, vals: [0; MAX_KEY_FIELDS] };

    #[inline]
    pub fn from_flow(keys: &[FieldId], flow: &Flow) -> Key {
        let mut k = Key { n: keys.len() as u8, ..Key::EMPTY };
        for (i, &id) in keys.iter().enumerate() {
            match flow.get(id) {
                Some(v) => k.vals[i] = v,
                None => k.absent |= 1 << i,
            }
        }
        k
    }

    /// The i-th key value, `None` for NULL.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u128> {
        (i < self.n as usize && self.absent & (1 << i) == 0).then(|| self.vals[i])
    }

    /// The remainder row of a limited export: every key NULL.
    pub fn all_null(n: usize) -> Key {
        Key { n: n as u8, absent: ((1u16 << n) - 1) as u8, ..Key::EMPTY }
    }

    pub fn from_values(vals: &[Option<u128>]) -> Key {
        let mut k = Key { n: vals.len() as u8, ..Key::EMPTY };
        for (i, v) in vals.iter().enumerate() {
            match v {
                Some(v) => k.vals[i] = *v,
                None => k.absent |= 1 << i,
            }
        }
        k
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, o: &Key) -> bool {
        self.n == o.n && self.absent == o.absent && self.vals[..self.n as usize] == o.vals[..o.n as usize]
    }
}
impl Eq for Key {}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u8(self.absent);
        for v in &self.vals[..self.n as usize] {
            h.write_u64(*v as u64);
            h.write_u64((*v >> 64) as u64);
        }
    }
}

/// A fast non-cryptographic hasher for window keys (the Fx multiply-rotate scheme). Keys come
/// from the network, but a window's memory is bounded by its traffic either way, and the hot
/// path cannot afford SipHash per flow and window.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type RowMap = HashMap<Key, Aggs, BuildHasherDefault<FxHasher>>;

/// A window closed by one worker, on its way to the export thread.
#[derive(Debug)]
pub struct Closed {
    pub fwm: usize,
    pub worker: usize,
    /// Start of the closed window (unix seconds).
    pub start: u64,
    /// Start of the worker's next window (`u64::MAX` at shutdown): nothing older will follow.
    pub next_start: u64,
    pub rows: RowMap,
}

/// A worker's running window of one `fwm`.
pub struct Window {
    pub spec: Arc<FwmSpec>,
    /// `None` until the first clock reading.
    start: Option<u64>,
    rows: RowMap,
}

impl Window {
    pub fn new(spec: Arc<FwmSpec>) -> Self {
        Window { spec, start: None, rows: RowMap::default() }
    }

    /// Adds a flow (which the object's filter matched). The worker advances the clock to the
    /// flow's time first, so the window has started.
    #[inline]
    pub fn add(&mut self, flow: &Flow) {
        if !self.spec.is_active() {
            return;
        }
        let key = Key::from_flow(&self.spec.keys, flow);
        let octets = flow.get_or_zero(FieldId::Octets) as u64;
        let packets = flow.get_or_zero(FieldId::Packets) as u64;
        let sums = self.rows.entry(key).or_insert([0; 3]);
        for (s, agg) in sums.iter_mut().zip(self.spec.aggs.iter()) {
            let v = match agg {
                Agg::Octets => octets,
                Agg::Packets => packets,
                Agg::Bits => octets.saturating_mul(8),
            };
            *s = s.saturating_add(v);
        }
    }

    /// End of the current window (seconds), if started.
    pub fn deadline(&self) -> Option<u64> {
        self.start.map(|s| s + self.spec.time)
    }

    /// Moves the clock to `now` (seconds): closes the window when `now` is past its end.
    pub fn advance(&mut self, now: u64, worker: usize, out: &mut Vec<Closed>) {
        match self.start {
            None => self.start = Some(self.spec.align(now)),
            Some(start) if now >= start + self.spec.time => {
                let next = self.spec.align(now);
                out.push(self.close(start, next, worker));
                self.start = Some(next);
            }
            Some(_) => {}
        }
    }

    /// Closes the current window for good (shutdown, end of a replay).
    pub fn finish(&mut self, worker: usize, out: &mut Vec<Closed>) {
        if let Some(start) = self.start.take() {
            out.push(self.close(start, u64::MAX, worker));
        }
    }

    fn close(&mut self, start: u64, next_start: u64, worker: usize) -> Closed {
        let rows = std::mem::take(&mut self.rows);
        Closed { fwm: self.spec.id, worker, start, next_start, rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(keys: Vec<FieldId>, aggs: Vec<Agg>, time: u64) -> Arc<FwmSpec> {
        Arc::new(FwmSpec {
            id: 0,
            object: "o".into(),
            name: "w".into(),
            table: "o_w".into(),
            columns: Vec::new(),
            keys,
            aggs,
            time,
            limit: None,
            extended: false,
            active: AtomicBool::new(true),
        })
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
        let rows = &out[0].rows;
        assert_eq!(rows[&Key::from_values(&[Some(1)])], [150, 2, 1200]);
        assert_eq!(rows[&Key::from_values(&[Some(2)])], [7, 1, 56]);
        w.finish(0, &mut out);
        assert_eq!(out[1].next_start, u64::MAX);
        assert!(out[1].rows.is_empty());
    }

    #[test]
    fn absent_key_is_null_and_distinct() {
        let keys = [FieldId::SrcHost, FieldId::DstHost6];
        let mut f = Flow::default();
        f.set(FieldId::SrcHost, 5);
        let k = Key::from_flow(&keys, &f);
        assert_eq!((k.get(0), k.get(1)), (Some(5), None));
        assert_ne!(k, Key::from_values(&[Some(5), Some(0)]));
        assert_eq!(Key::all_null(2), Key::from_values(&[None, None]));
    }

    #[test]
    fn inactive_extended_window_collects_nothing() {
        let s = Arc::new(FwmSpec { extended: true, active: AtomicBool::new(false), ..Arc::try_unwrap(spec(vec![], vec![Agg::Octets], 10)).unwrap() });
        let mut w = Window::new(s.clone());
        let mut out = Vec::new();
        w.advance(100, 0, &mut out);
        w.add(&flow(1, 10));
        s.set_active(true);
        w.add(&flow(1, 20));
        w.finish(0, &mut out);
        assert_eq!(out[0].rows[&Key::EMPTY], [20, 0, 0]);
    }
}
