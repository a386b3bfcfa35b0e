//! The hash table behind a window's rows: open addressing with linear probing over
//! fixed-size packed keys, and software prefetch.
//!
//! A busy window (one row per external address of a flood) is far larger than the CPU caches,
//! so nearly every new flow costs a memory access. Two things make that cheap: a row is one slot
//! (key and sums together, so one cache miss instead of a control byte and then a bucket), and an
//! insertion is deferred by a few flows after its slot is prefetched, so several memory accesses
//! are in flight at once instead of one after the other.
//!
//! A table grows (doubles) at 5/8 full without stopping the worker: the rows of the array it
//! leaves are added into the new one a few per insertion (a window only sums, so a row moved
//! after its key came back is simply added to it), and the new array is made ahead, when the
//! table is half full (see [`NextArray`]). Moving all rows at once into fresh memory stopped
//! the worker 130-430 ms per growth at a flood's start.

use super::slots::{free_in_background, NextArray, Populate, ZeroedSlots};

/// Bit set in the last key word of an occupied slot (the NULL-bits word uses only the low
/// bits, one per key field).
const OCCUPIED: u64 = 1 << 63;

/// How many insertions wait for their prefetched slot.
const PIPELINE: usize = 8;
/// Slots of the array a growing table leaves whose rows move per insertion. The new array has
/// twice the slots and grows again at 5/8 full: it holds at most 5/16 of its slots in moved
/// rows, and moving 16 slots per insertion is done within 1/32 of its slots' count in new keys.
const MOVE_PER_INSERT: usize = 16;

/// Sums of one row.
pub type Sums = [u64; 3];

/// A row: the key and the window's sums (only as many as it has aggregable fields: a top-N by
/// address with one field is a 16-byte slot, four per cache line).
#[derive(Clone, Copy)]
struct Slot<const N: usize, const A: usize> {
    key: [u64; N],
    sums: [u64; A],
}

/// The slot array a growing table leaves: the rows before `from` have moved.
struct Leaving<const N: usize, const A: usize> {
    slots: ZeroedSlots<Slot<N, A>>,
    from: usize,
    /// Rows not yet moved.
    left: usize,
}

/// Packed key (`N` words) -> sums (`A` of them kept).
pub struct PackedTable<const N: usize, const A: usize> {
    slots: ZeroedSlots<Slot<N, A>>,
    /// Keys in `slots`.
    len: usize,
    /// Insertions check nothing else until `len` reaches this (the half-full mark where the
    /// next array is made, or the growth at 5/8).
    watch: usize,
    /// While growing: the array left, whose rows move into `slots` a few per insertion.
    leaving: Option<Leaving<N, A>>,
    next: Option<NextArray<Slot<N, A>>>,
    pending: [([u64; N], Sums, u64); PIPELINE],
    npending: usize,
    head: usize,
    /// Most slots the array may have now (a power of two; see [`PackedTable::bounded`]), and
    /// as configured (a merge lifts the bound until the table is cleared).
    max_slots: usize,
    bound_slots: usize,
    /// Set once the array is at `max_slots` and 3/4 full: new keys' sums go to `rest`.
    full: bool,
    /// The key new keys' sums go to when full (the window's all-NULL key, occupied bit set).
    rest: [u64; N],
    /// Additions of new keys summed into `rest` since the table was last cleared.
    folded: u64,
}

/// How full a table at its most slots may get before new keys go to the `rest` row: probes
/// stay short (linear probing at 3/4 looks at 2.5 slots for a key there, 8.5 for one absent).
const FULL_NUM: usize = 3;
const FULL_DEN: usize = 4;

/// The hash of a packed key, for window tables and moving-average tables: per word, a
/// multiply folded to 64 bits (the high half of the 128-bit product xor-ed onto the low half),
/// so every input bit reaches every bit: the slot index (low bits) and a moving average's
/// shard (bits 40 and up). The final shift mixes high bits into the index once more: without
/// it, consecutive addresses (a scan, a customer's network) probed 20-25% longer in a linear
/// probing simulation; with it, as long as random keys (as murmur's finalizer did). One
/// multiply per word: the prefetch of every flow's slot waits on this hash, and the finalizer
/// was three multiplies in a row.
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for &w in words {
        let x = ((h ^ w) as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = (x as u64) ^ ((x >> 64) as u64);
    }
    h ^ (h >> 29)
}

/// An all-zero (all-empty) slot array.
fn empty_slots<const N: usize, const A: usize>(cap: usize) -> ZeroedSlots<Slot<N, A>> {
    // SAFETY: `Slot` is plain u64 arrays, for which all-zero bytes is a valid (empty) value.
    unsafe { ZeroedSlots::new(cap) }
}

#[inline]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl<const N: usize, const A: usize> PackedTable<N, A> {
    /// A table with room for `rows` rows before it grows.
    pub fn with_capacity(rows: usize) -> Self {
        Self::bounded(rows, usize::MAX, &[0; N])
    }

    /// A table with room for `rows` rows before it grows (as far as the bound allows), whose
    /// slot array is bounded to `max_bytes` (at least 64 slots): once it is that big and 3/4
    /// full, the sums of keys not in the table go to the row of `rest` (a key, packed as the
    /// others), so the totals stay whole and memory stays bounded whatever a flood sends. Keys
    /// in the table keep their rows. The bound outlives [`PackedTable::clear`].
    pub fn bounded(rows: usize, max_bytes: usize, rest: &[u64; N]) -> Self {
        let max_slots = Self::max_slots_for(max_bytes);
        let slots = empty_slots(Self::slots_for(rows).min(max_slots));
        let mut rest = *rest;
        rest[N - 1] |= OCCUPIED;
        let mut t = PackedTable {
            watch: 0,
            slots,
            len: 0,
            leaving: None,
            next: None,
            pending: [([0; N], [0; 3], 0); PIPELINE],
            npending: 0,
            head: 0,
            max_slots,
            bound_slots: max_slots,
            full: false,
            rest,
            folded: 0,
        };
        t.watch = t.next_watch();
        t
    }

    /// The most slots (a power of two, at least 64) in `max_bytes`.
    fn max_slots_for(max_bytes: usize) -> usize {
        let fit = (max_bytes / std::mem::size_of::<Slot<N, A>>()).max(64);
        // The largest power of two not above `fit`.
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }

    /// Additions summed into the `rest` row since the table was last cleared (pending
    /// insertions written first).
    pub fn folded(&mut self) -> u64 {
        self.flush();
        self.folded
    }

    /// Lifts the bound until the next [`PackedTable::clear`] (a merge of bounded pieces) and
    /// counts `folded` more additions as summed into the rest row.
    pub fn lift_bound(&mut self, folded: u64) {
        self.flush();
        (self.max_slots, self.full) = (usize::MAX, false);
        self.folded += folded;
        self.watch = self.next_watch();
    }

    /// Slots of a table made for `rows` rows (at most 5/8 full).
    fn slots_for(rows: usize) -> usize {
        (rows.max(8) * 8 / 5).next_power_of_two()
    }

    /// Where insertions next need a look at the table's size (see `watch`): at its most slots
    /// the 3/4 mark where it is full (never again once full); else, past half full, every new
    /// key (a page of the next array each, until it is made), or the half-full mark, or the
    /// growth at 5/8.
    fn next_watch(&self) -> usize {
        let (len, slots) = (self.len, &self.slots);
        let grow_at = slots.len() * 5 / 8;
        if slots.len() >= self.max_slots {
            if self.full {
                usize::MAX
            } else {
                slots.len() * FULL_NUM / FULL_DEN
            }
        } else if !NextArray::wants_more(&self.next) {
            grow_at
        } else if NextArray::due(len, slots) {
            len + 1
        } else if NextArray::due(slots.len() / 2, slots) {
            slots.len() / 2
        } else {
            grow_at
        }
    }

    /// Number of rows (after pending insertions; rows still in the array being left count
    /// once each, though some may have come back in the new one: a bound for sizing).
    pub fn len(&mut self) -> usize {
        self.flush();
        self.len + self.leaving.as_ref().map_or(0, |l| l.left)
    }

    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Adds `sums` to the row of `key` (the slot is prefetched now, written a few calls later).
    /// Always inlined, as `insert` is: see `RowMap::add`.
    #[inline(always)]
    pub fn add(&mut self, key: &[u64; N], sums: &Sums) {
        let mut key = *key;
        key[N - 1] |= OCCUPIED;
        let h = hash_words(&key);
        let mask = self.slots.len() - 1;
        // The home slot and the next one: a probe often goes on into the next line.
        prefetch(&self.slots[h as usize & mask]);
        prefetch(&self.slots[(h as usize + 1) & mask]);
        if self.npending == PIPELINE {
            let (k, s, h) = self.pending[self.head];
            self.insert(&k, &s, h);
        } else {
            self.npending += 1;
        }
        self.pending[self.head] = (key, *sums, h);
        self.head = (self.head + 1) % PIPELINE;
    }

    /// Writes every pending insertion.
    pub fn flush(&mut self) {
        let start = (self.head + PIPELINE - self.npending) % PIPELINE;
        for i in 0..self.npending {
            let (k, s, h) = self.pending[(start + i) % PIPELINE];
            self.insert(&k, &s, h);
        }
        self.npending = 0;
        self.head = 0;
    }

    #[inline(always)]
    fn insert(&mut self, key: &[u64; N], sums: &Sums, h: u64) {
        if self.len >= self.watch {
            self.on_size();
        }
        if self.leaving.is_some() {
            self.move_some(MOVE_PER_INSERT);
        }
        self.put(key, sums, h);
    }

    /// Adds sums to the key's row in `slots` (a new row if absent; no growth).
    #[inline(always)]
    fn put(&mut self, key: &[u64; N], sums: &Sums, h: u64) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.key[N - 1] & OCCUPIED == 0 {
                if self.full && *key != self.rest {
                    return self.put_rest(sums);
                }
                let slot = &mut self.slots[i];
                slot.key = *key;
                slot.sums.copy_from_slice(&sums[..A]);
                self.len += 1;
                return;
            }
            if slot.key == *key {
                for (a, b) in slot.sums.iter_mut().zip(sums) {
                    *a = a.saturating_add(*b);
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// A new key's sums, the table full: to the rest row.
    #[cold]
    #[inline(never)]
    fn put_rest(&mut self, sums: &Sums) {
        self.folded += 1;
        let rest = self.rest;
        self.put(&rest, sums, hash_words(&rest));
    }

    /// The table reached its `watch` mark: grows when the next key would pass 5/8 full (or, at
    /// its most slots, is full at 3/4), else faults in a page more of the next array.
    #[cold]
    fn on_size(&mut self) {
        if self.slots.len() >= self.max_slots {
            self.full = (self.len + 1) * FULL_DEN > self.slots.len() * FULL_NUM;
            self.watch = if self.full { usize::MAX } else { self.slots.len() * FULL_NUM / FULL_DEN };
            return;
        }
        if self.slots.len() >= self.max_slots {
            self.full = (self.len + 1) * FULL_DEN > self.slots.len() * FULL_NUM;
        } else if (self.len + 1) * 8 > self.slots.len() * 5 {
            self.grow();
        } else {
            // SAFETY: all-zero bytes are an empty slot (see `empty_slots`).
            unsafe { NextArray::prepare(&mut self.next, self.slots.len() * 2) };
        }
        self.watch = self.next_watch();
    }

    /// Doubles the slots: the rows move into the new array from now on, a few per insertion
    /// (an earlier move still under way is finished first).
    fn grow(&mut self) {
        self.move_some(usize::MAX);
        let cap = self.slots.len() * 2;
        let bigger = NextArray::take(&mut self.next, cap).unwrap_or_else(|| empty_slots(cap));
        let old = std::mem::replace(&mut self.slots, bigger);
        self.leaving = (self.len > 0).then_some(Leaving { slots: old, from: 0, left: self.len });
        self.len = 0;
    }

    /// Moves the rows of up to `n` slots of the array being left into `slots`; frees it when
    /// the last has moved.
    #[cold]
    fn move_some(&mut self, n: usize) {
        let Some(mut leaving) = self.leaving.take() else { return };
        let end = leaving.from.saturating_add(n).min(leaving.slots.len());
        for s in &leaving.slots[leaving.from..end] {
            if s.key[N - 1] & OCCUPIED != 0 {
                let mut sums = [0; 3];
                sums[..A].copy_from_slice(&s.sums);
                self.put(&s.key, &sums, hash_words(&s.key));
                leaving.left -= 1;
            }
        }
        leaving.from = end;
        if leaving.left > 0 {
            self.leaving = Some(leaving);
        } else {
            free_in_background(leaving.slots);
        }
    }

    /// Every row as (key without the occupied bit, sums; those not kept are 0).
    pub fn rows(&mut self) -> impl Iterator<Item = ([u64; N], Sums)> + '_ {
        self.flush();
        self.move_some(usize::MAX);
        self.slots.iter().filter(|s| s.key[N - 1] & OCCUPIED != 0).map(|s| {
            let mut k = s.key;
            k[N - 1] &= !OCCUPIED;
            let mut sums = [0; 3];
            sums[..A].copy_from_slice(&s.sums);
            (k, sums)
        })
    }

    /// Removes every row and keeps the slot array, whose memory is then already in place for
    /// the next window (see `Spare` in window.rs).
    pub fn clear(&mut self) {
        self.npending = 0;
        self.head = 0;
        self.leaving = None;
        self.next = None;
        (self.full, self.folded, self.max_slots) = (false, 0, self.bound_slots);
        if self.len > 0 {
            self.slots.fill_zero();
            self.len = 0;
        }
        self.watch = self.next_watch();
    }

    pub fn is_mapped(&self) -> bool {
        self.slots.is_mapped()
    }

    /// See [`ZeroedSlots::populator`].
    pub fn populator(&self) -> Option<Populate> {
        self.slots.populator()
    }

    /// Whether this table, empty, suits a window expected to hold `rows` rows: it would not
    /// grow, and is not so much bigger that clearing and probing it would waste time.
    pub fn suits(&self, rows: usize) -> bool {
        let want = Self::slots_for(rows).min(self.bound_slots);
        self.slots.len() <= self.bound_slots && (want..=want.saturating_mul(4)).contains(&self.slots.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Packed keys of some pattern, endless.
    type KeyStream = Box<dyn Iterator<Item = Vec<u64>>>;

    /// Mean slots probed per insert with linear probing into 2^20 slots filled to 2/3 (random
    /// hashes: about 2.0).
    fn mean_probes(keys: impl Iterator<Item = Vec<u64>>) -> f64 {
        let mask = (1usize << 20) - 1;
        let mut used = vec![false; mask + 1];
        let (mut probes, mut n) = (0usize, 0usize);
        for k in keys.take(700_000) {
            let mut i = hash_words(&k) as usize & mask;
            probes += 1;
            while used[i] {
                i = (i + 1) & mask;
                probes += 1;
            }
            used[i] = true;
            n += 1;
        }
        probes as f64 / n as f64
    }

    #[test]
    fn keys_with_a_pattern_probe_like_random_ones() {
        // Packed keys as windows hold them: an IPv4 address with the NULL bits above it (one
        // word), a protocol word before an address word.
        fn addr(a: u64) -> Vec<u64> {
            vec![a]
        }
        let patterns: [(&str, KeyStream); 5] = [
            ("consecutive addresses (a scan)", Box::new((0..).map(|i| addr(0x0a00_0000 + i)))),
            ("addresses 256 apart", Box::new((0..).map(|i| addr(0x0a00_0000 + i * 256)))),
            ("addresses 65,536 apart", Box::new((0..).map(|i| addr(i << 16)))),
            ("protocol and address", Box::new((0..).map(|i| vec![[1, 6, 17][i as usize % 3], 0x0a0b_0000 + i / 3]))),
            ("small numbers", Box::new((0..).map(addr))),
        ];
        for (what, keys) in patterns {
            let mean = mean_probes(keys);
            assert!(mean < 2.15, "{what}: {mean:.2} slots probed per insert (random keys: about 2.0)");
        }
    }

    #[test]
    fn agrees_with_a_hash_map_through_growth() {
        let mut t = PackedTable::<2, 3>::with_capacity(0);
        let mut m: HashMap<[u64; 2], Sums> = HashMap::new();
        let mut next = crate::testrand::words(12345);
        let (mut seen_moving, mut seen_next, mut looked) = (0, 0, false);
        for i in 0..200_000u64 {
            let x = next();
            let key = [x % 50_000, (x >> 40) & 3]; // repeats, and NULL bits in the last word
            t.add(&key, &[i, 1, 0]);
            let e = m.entry(key).or_insert([0; 3]);
            e[0] += i;
            e[1] += 1;
            seen_moving += t.leaving.is_some() as usize;
            seen_next += t.next.is_some() as usize;
            if i > 20_000 && seen_moving > 0 && t.leaving.is_some() && !looked {
                // Mid-move, a look at every row finishes the move first.
                looked = true;
                assert_eq!(t.rows().collect::<HashMap<_, _>>(), m);
                assert!(t.leaving.is_none());
            }
        }
        assert!(looked && seen_moving > 1000 && seen_next > 1000, "growth moved rows a few at a time ({seen_moving}) into an array made ahead ({seen_next})");
        assert_eq!(t.len(), m.len());
        let rows: HashMap<[u64; 2], Sums> = t.rows().collect();
        assert_eq!(rows, m);
        // Cleared, the same array takes a new set of rows.
        t.add(&[1, 2], &[1, 1, 0]);
        t.clear();
        assert!(t.is_empty() && t.rows().next().is_none());
        t.add(&[7, 1], &[3, 1, 0]);
        assert_eq!(t.rows().collect::<Vec<_>>(), vec![([7, 1], [3, 1, 0])]);
    }

    #[test]
    fn a_full_table_sums_new_keys_into_the_rest_row_and_keeps_its_size() {
        // 16-byte slots, 1 MiB: 65,536 slots, full at 49,152 keys.
        let rest = [u64::MAX >> 2];
        let mut t = PackedTable::<1, 1>::bounded(0, 1 << 20, &rest);
        let mut total = 0u64;
        for k in 0..100_000u64 {
            t.add(&[k], &[k, 0, 0]);
            total += k;
        }
        // A key in the table keeps its row; one not in it goes to the rest row.
        t.add(&[5], &[1_000_000, 0, 0]);
        t.add(&[99_999], &[7, 0, 0]);
        total += 1_000_007;
        assert_eq!(t.slots.len(), 65_536, "never grew past the bound");
        assert_eq!(t.len(), 49_152 + 1, "3/4 full, and the rest row");
        assert_eq!(t.folded(), 100_000 - 49_152 + 1);
        let rows: std::collections::HashMap<u64, u64> = t.rows().map(|(k, s)| (k[0], s[0])).collect();
        assert_eq!(rows.values().sum::<u64>(), total, "every addition counted somewhere");
        assert_eq!(rows[&5], 1_000_005);
        let first_out = (0..100_000).find(|k| !rows.contains_key(k)).unwrap();
        assert!(rows[&rest[0]] >= first_out, "the rest row holds the keys left out");
        // Cleared (a spare), the bound stays and the count starts again.
        t.clear();
        assert_eq!((t.folded(), t.len()), (0, 0));
        for k in 0..60_000u64 {
            t.add(&[k], &[1, 0, 0]);
        }
        assert_eq!((t.slots.len(), t.folded()), (65_536, 60_000 - 49_152));
        // A merge lifts the bound until the next clear.
        t.lift_bound(3);
        for k in 60_000..100_000u64 {
            t.add(&[k], &[1, 0, 0]);
        }
        assert_eq!(t.folded(), 60_000 - 49_152 + 3);
        assert!(t.slots.len() > 65_536 && t.len() == 49_152 + 1 + 40_000);
        t.clear();
        assert!(!t.suits(10), "an array grown past the bound is not reused");
    }

    #[test]
    fn pending_rows_count_and_all_zero_key() {
        let mut t = PackedTable::<1, 3>::with_capacity(4);
        t.add(&[0], &[5, 0, 0]);
        t.add(&[0], &[6, 0, 0]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.rows().collect::<Vec<_>>(), vec![([0], [11, 0, 0])]);
    }
}
