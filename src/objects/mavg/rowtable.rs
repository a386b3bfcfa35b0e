//! The rows of one moving-average shard: open addressing with linear probing over slots
//! sized to the key and to the number of averaged fields, tombstones for removal, and an
//! address that workers can prefetch before they take the shard's lock. A table grows without
//! stopping a worker: its keys move into the new array a few per flow, and that array is made
//! and faulted in ahead, from the time the table is half full.
//!
//! A flood updates a random row per flow, so slots should be small and never straddle cache
//! lines: a slot holds only the key's own words and one sum per aggregable field, the time of
//! the last update as the low 32 bits of the unix milliseconds, and the threshold index with
//! its flags. A key of one IPv4 address (or an address and a protocol) with one field is a
//! 32-byte slot, two per line; slots up to 64 bytes are line-aligned. Whether a slot is used is
//! marked in the top bits of the key's last word (left free by the key layout).
//! Two moving averages of one object with the same key fields and as many averaged fields
//! share a table (when their joint slot fits a line): a slot then holds the key once and a row
//! per member, and a flow updates both rows in the one cache line it loads.
//! A moving average keyed by another's key plus one field of 8 bits (an address and its
//! protocol, after the address) is nested in that one's table ([`Nest`]): its rows have slots of their
//! own, under keys that extend the first's in the spare bits of the last word, hashed as the
//! key they extend. So a flow's two rows are in the same probe path, most often the same
//! cache line: one hash, one prefetch and one line serve both, where a table of its own took a
//! second of each.
//! The rest of the moving average sees a [`Row`]: slots are loaded into one and stored back.
//! The per-flow update visits the table with its slot type known ([`Rows::visit`], once per
//! batch), so a row access is neither a dispatch nor a loop over a runtime number of fields.

use super::{PackedKey, Row, MAVG_WORDS, MAX_MEMBERS};
use crate::objects::rows::{KeyLayout, NESTED_MARK};
use crate::objects::slots::{free_in_background, NextArray, ZeroedSlots};

/// Set in the last key word of an occupied slot.
const OCCUPIED: u64 = 1 << 63;
/// Set in the last key word of a removed slot (probing goes on past it).
const TOMB: u64 = 1 << 62;

/// The oldest a kept row's time is allowed to be, in ms (see [`RowTable::retain`]).
pub(super) const MAX_AGE: u64 = 1 << 30;

/// How far a row's stored time (`last`, the low 32 bits of the unix milliseconds) is ahead of
/// the clock `now_ms`: negative when behind, as it usually is (a row may be a little ahead of a
/// worker's clock).
#[inline(always)]
pub(super) fn ms_ahead(last: u32, now_ms: u64) -> i32 {
    last.wrapping_sub(now_ms as u32) as i32
}

/// A row as a slot keeps it.
#[derive(Clone, Copy)]
#[repr(C)]
struct Stored<const A: usize> {
    n: [f64; A],
    /// Low 32 bits of the unix milliseconds of the last update: exact while the last update is
    /// within 2^31 ms (24 days) of the clock, which the sweep ensures ([`RowTable::retain`]).
    last: u32,
    thr: u32,
}

impl<const A: usize> Stored<A> {
    #[inline]
    fn load(&self, now_ms: u64) -> Row {
        let mut n = [0.0; 3];
        n[..A].copy_from_slice(&self.n);
        Row { last_ms: now_ms.wrapping_add_signed(ms_ahead(self.last, now_ms) as i64), n, thr: self.thr }
    }

    #[inline]
    fn store(&mut self, row: &Row) {
        self.n.copy_from_slice(&row.n[..A]);
        self.last = row.last_ms as u32;
        self.thr = row.thr;
    }
}

macro_rules! slot_types {
    ($($name:ident = $k:literal words, $a:literal sums, $m:literal members, align $al:literal;)*) => {
        $(
            /// A slot for keys of this many words, this many averaged fields, and as many
            /// moving averages sharing the table.
            #[derive(Clone)]
            #[repr(C, align($al))]
            pub(super) struct $name {
                key: [u64; $k],
                rows: [Stored<$a>; $m],
            }

            impl Slot for $name {
                const WORDS: usize = $k;
                const SUMS: usize = $a;
                const MEMBERS: usize = $m;
                #[inline]
                fn key(&self) -> &[u64] {
                    &self.key
                }
                #[inline]
                fn key_mut(&mut self) -> &mut [u64] {
                    &mut self.key
                }
                #[inline]
                fn load(&self, m: usize, now_ms: u64) -> Row {
                    self.rows[m].load(now_ms)
                }
                #[inline]
                fn store(&mut self, m: usize, row: &Row) {
                    self.rows[m].store(row)
                }
                #[inline]
                fn parts_mut(&mut self, m: usize) -> (&mut [f64], &mut u32, &mut u32) {
                    let r = &mut self.rows[m];
                    (&mut r.n, &mut r.last, &mut r.thr)
                }
            }
        )*

        /// The rows, in a table whose slots fit the moving average's key and fields.
        pub(super) enum Rows { $($name(RowTable<$name>),)* }

        impl Rows {
            /// A table for keys of `words` words and `sums` aggregable fields, shared by
            /// `members` moving averages (see [`Rows::shared_fits`]) in each slot, and holding
            /// the slots of a nested one as `nest` says.
            pub fn new(words: usize, sums: usize, members: usize, nest: Nest) -> Rows {
                $(if words == $k && sums == $a && members == $m {
                    return Rows::$name(RowTable::with_capacity(16, nest));
                })*
                unreachable!("moving-average keys have 1..={MAVG_WORDS} words and 1..=3 fields, not {words}/{sums}/{members}")
            }

            /// Bytes of a slot for such keys (for prefetching), if there is such a slot type.
            pub fn slot_bytes_of(words: usize, sums: usize, members: usize) -> Option<usize> {
                $(if words == $k && sums == $a && members == $m {
                    return Some(std::mem::size_of::<$name>());
                })*
                None
            }

            /// Runs `v` on the table with its slot type known: code that visits once per batch
            /// of flows works on the slots directly, without a dispatch per row access.
            #[inline]
            pub fn visit<V: Visit>(&mut self, v: V) {
                match self { $(Rows::$name(t) => v.visit(t),)* }
            }

            /// Address of the slot array and the index mask: for prefetching.
            pub fn probe_start(&self) -> (usize, usize) {
                match self { $(Rows::$name(t) => t.probe_start(),)* }
            }

            /// The slot of a key, if it has one.
            #[inline]
            pub fn find(&mut self, key: &PackedKey, hash: u64) -> Option<usize> {
                match self { $(Rows::$name(t) => t.find(key, hash),)* }
            }

            #[cfg(test)]
            pub fn go_on_moving(&mut self, n: usize) {
                match self { $(Rows::$name(t) => t.go_on_moving(n),)* }
            }

            /// Whether a growing table still has keys to move (tests).
            #[cfg(test)]
            pub fn is_moving(&self) -> bool {
                match self { $(Rows::$name(t) => t.moving.is_some(),)* }
            }

            /// Which row of its slots member `m` has (0 in a table with a nested member, where
            /// each slot holds one member's row).
            pub fn member_row(&self, m: usize) -> usize {
                match self { $(Rows::$name(t) => t.member_row(m),)* }
            }

            /// Member `m`'s row in slot `i` replaced.
            pub fn store(&mut self, i: usize, m: usize, row: &Row) {
                match self { $(Rows::$name(t) => t.store(i, m, row),)* }
            }

            /// A new key's slot with a row per member (the key must not be in the table).
            pub fn insert(&mut self, key: &PackedKey, hash: u64, row: &[Row]) -> usize {
                match self { $(Rows::$name(t) => t.insert(key, hash, row),)* }
            }

            /// Member `m`'s row in slot `i`, as of the clock `now_ms`.
            #[inline]
            pub fn load(&self, i: usize, m: usize, now_ms: u64) -> Row {
                match self { $(Rows::$name(t) => t.load(i, m, now_ms),)* }
            }

            /// Keeps the keys for which `f` returns true, given a slot's key, the member of its
            /// first row and its rows (every member's, from member 0; in a table with a nested
            /// member, the row of the member whose key it is). Changes `f` makes are kept. It
            /// looks at up to `max` slots from slot `from` on, and returns
            /// how many slots it looked at and whether that reached the table's end. A growing
            /// table first moves up to `max` slots' keys (so they move without flows too); keys
            /// not moved yet wait for a later pass. (A table that grew in between has moved its
            /// keys: a pass going on over it may see a key twice or miss one.)
            pub fn retain(&mut self, from: usize, max: usize, now_ms: u64, f: impl FnMut(&PackedKey, usize, &mut [Row]) -> bool) -> (usize, bool) {
                match self {
                    $(Rows::$name(t) => {
                        t.go_on_moving(max);
                        t.retain(from, max, now_ms, f)
                    })*
                }
            }

            /// Member `m`'s every row with its key.
            pub fn for_each(&self, now_ms: u64, m: usize, f: impl FnMut(PackedKey, &Row)) {
                match self { $(Rows::$name(t) => t.for_each(now_ms, m, f),)* }
            }

            /// Member `m`'s every row's key with its threshold index and flags, which `f` may
            /// change.
            pub fn for_each_thr(&mut self, m: usize, f: impl FnMut(&PackedKey, &mut u32)) {
                match self { $(Rows::$name(t) => t.for_each_thr(m, f),)* }
            }
        }
    };
}

// Slots of up to 32 bytes are 32-byte aligned (two per line), up to 64 bytes line-aligned.
// Shared tables (two members) only where the slot fits a line.
slot_types! {
    K1A1 = 1 words, 1 sums, 1 members, align 32;
    K1A2 = 1 words, 2 sums, 1 members, align 32;
    K1A3 = 1 words, 3 sums, 1 members, align 64;
    K2A1 = 2 words, 1 sums, 1 members, align 32;
    K2A2 = 2 words, 2 sums, 1 members, align 64;
    K2A3 = 2 words, 3 sums, 1 members, align 64;
    K3A1 = 3 words, 1 sums, 1 members, align 64;
    K3A2 = 3 words, 2 sums, 1 members, align 64;
    K3A3 = 3 words, 3 sums, 1 members, align 64;
    K4A1 = 4 words, 1 sums, 1 members, align 64;
    K4A2 = 4 words, 2 sums, 1 members, align 64;
    K4A3 = 4 words, 3 sums, 1 members, align 64;
    K5A1 = 5 words, 1 sums, 1 members, align 64;
    K5A2 = 5 words, 2 sums, 1 members, align 64;
    K5A3 = 5 words, 3 sums, 1 members, align 8;
    K1A1x2 = 1 words, 1 sums, 2 members, align 64;
    K1A2x2 = 1 words, 2 sums, 2 members, align 64;
    K2A1x2 = 2 words, 1 sums, 2 members, align 64;
    K2A2x2 = 2 words, 2 sums, 2 members, align 64;
    K3A1x2 = 3 words, 1 sums, 2 members, align 64;
    K4A1x2 = 4 words, 1 sums, 2 members, align 64;
}

impl Rows {
    /// Bytes of a slot for keys of `words` words and `sums` aggregable fields (one member).
    #[cfg(test)]
    pub fn slot_bytes(words: usize, sums: usize) -> usize {
        Rows::slot_bytes_of(words, sums, 1).expect("a slot type for every single key")
    }

    /// Whether two moving averages with such keys can share a table (their slot fits a line).
    pub fn shared_fits(words: usize, sums: usize) -> bool {
        Rows::slot_bytes_of(words, sums, 2).is_some()
    }
}

/// Rounds a slot index down to the first slot of its cache line, for slots of `slot_bytes`
/// (slots up to 64 bytes are aligned to their size; larger ones each start a line). Computed
/// once per table: the prefetch, which knows the slot size only at run time, would otherwise
/// divide on every flow.
pub(super) const fn line_mask(slot_bytes: usize) -> usize {
    let per_line = if slot_bytes < 64 { 64 / slot_bytes } else { 1 };
    !(per_line - 1)
}

/// The first slot of a hash's probe path in an array of `mask + 1` slots (`line_mask` of
/// their size): the first slot of the cache line holding slot `hash & mask`, so that the line
/// the prefetch loaded is searched whole before the next one (prefetched with it, see
/// `Mavg::prefetch`) is needed.
#[inline(always)]
pub(super) fn home_slot(hash: u64, mask: usize, line_mask: usize) -> usize {
    hash as usize & mask & line_mask
}

/// How a table holds the rows of a moving average nested in it (member 1, keyed by the first
/// member's key fields and one more: see [`KeyLayout::extended`]):
/// in slots of their own, whose keys carry `mark`, hashed as the key they extend (`extension`
/// masked off the last word). The default, all zero, is a table without.
///
/// A key's variants by the extra field's values 0-31 (the protocols of nearly all traffic:
/// TCP, UDP, ICMP) sit on the key's own probe path; those by 32-63, 64-95 and so on each on
/// a path of their own, [`SPREAD_SLOTS`] apart and more (bits 5-7 of the value xor-ed into
/// the hash there), so that their runs of slots do not merge. So a flood of every protocol
/// number to one host walks about 32 slots per flow, not 257.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Nest {
    pub mark: u64,
    pub extension: u64,
    /// Where bits 5-7 of the extra field's value are in the last word.
    pub spread_from: u32,
}

/// How far apart (in slots) the probe paths of a key's variants by the extra field's values
/// 0-31, 32-63 and so on start (see [`Nest`]): more than such a run of 33 slots takes.
/// A table holding all 257 variants of a key has 512 slots or more: they fit.
const SPREAD_SLOTS: u64 = 64;

impl Nest {
    /// The nesting of a moving average whose keys `layout` packs, an
    /// [extended](KeyLayout::extended) layout.
    pub fn of(layout: &KeyLayout) -> Nest {
        let extension = layout.extension().expect("an extended layout");
        Nest { mark: NESTED_MARK, extension: layout.extension_mask(), spread_from: extension.value_shift() + 5 }
    }

    /// The member whose key it is.
    #[inline]
    pub fn member_of(self, key: &PackedKey) -> usize {
        self.member_of_last(key.w[key.n as usize - 1])
    }

    #[inline]
    fn member_of_last(self, last: u64) -> usize {
        (last & self.mark != 0) as usize
    }

    /// The hash that places a key in the table (and its shard): that of the key it extends,
    /// for a nested member's, spread by its extra field's value (see [`Nest`]).
    pub fn hash_of(self, key: &PackedKey) -> u64 {
        let mut home = *key;
        let last = &mut home.w[key.n as usize - 1];
        let extension = *last & self.extension;
        *last &= !self.extension;
        self.hash_extended(home.hash64(), extension)
    }

    /// The hash of a key extended by `extension` (its bits of the last word), from the hash of
    /// the key it extends: the same but for three low bits (the same shard; the same slot for
    /// values 0-31).
    #[inline(always)]
    pub fn hash_extended(self, hash: u64, extension: u64) -> u64 {
        hash ^ (((extension >> self.spread_from) & 7) * SPREAD_SLOTS)
    }
}

/// What the table needs of a slot type.
pub(super) trait Slot: Send + 'static + Clone {
    const WORDS: usize;
    /// Sums kept (the moving average's aggregable fields).
    const SUMS: usize;
    /// Moving averages sharing the table: a row each.
    const MEMBERS: usize;
    fn key(&self) -> &[u64];
    fn key_mut(&mut self) -> &mut [u64];
    /// Member `m`'s row.
    fn load(&self, m: usize, now_ms: u64) -> Row;
    fn store(&mut self, m: usize, row: &Row);
    /// Member `m`'s stored row in place: its `SUMS` sums, the low 32 bits of its time, its
    /// threshold index and flags (see [`Row`]).
    fn parts_mut(&mut self, m: usize) -> (&mut [f64], &mut u32, &mut u32);
}

/// Work on a [`RowTable`] of whatever slot type (see [`Rows::visit`]).
pub(super) trait Visit {
    fn visit<S: Slot>(self, table: &mut RowTable<S>);
}

pub(super) struct RowTable<S: Slot> {
    slots: ZeroedSlots<S>,
    /// Keys held (in `slots` and in `moving` together).
    len: usize,
    /// Removed slots in `slots`.
    tombs: usize,
    /// While the table grows: the previous slot array, whose keys move into `slots` a few at
    /// a time (see [`RowTable::go_on_moving`]), so growing a table of millions of keys never
    /// stops a worker for long (moving them all at once took a quarter of a second at 1.9
    /// million keys).
    moving: Option<Moving<S>>,
    /// The slot array the table will grow into, made ahead once the table is half full (see
    /// [`NextArray`]).
    next: Option<NextArray<S>>,
    nest: Nest,
}

/// The slot array a growing table is leaving: keys before `next` have moved (or were taken
/// early, see [`RowTable::find`]); a moved key's slot is marked removed, so the probe paths
/// of the keys still there stay whole.
struct Moving<S: Slot> {
    slots: ZeroedSlots<S>,
    next: usize,
    /// Keys still here.
    left: usize,
}

impl<S: Slot> RowTable<S> {
    fn with_capacity(cap: usize, nest: Nest) -> Self {
        // SAFETY: an all-zero slot is an empty one: last key word 0 (neither occupied nor
        // removed) and a row of plain numbers.
        let slots = unsafe { ZeroedSlots::<S>::new(cap.next_power_of_two()) };
        RowTable { slots, len: 0, tombs: 0, moving: None, next: None, nest }
    }

    fn member_row(&self, m: usize) -> usize {
        if self.nest.mark != 0 {
            0
        } else {
            m
        }
    }

    /// Whether a slot holds member `m`'s row (every occupied one does, in a table without a
    /// nested member).
    fn holds_member(nest: Nest, s: &S, m: usize) -> bool {
        let last = Self::last(s);
        last & OCCUPIED != 0 && (nest.mark == 0 || nest.member_of_last(last) == m)
    }

    pub(super) fn probe_start(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.slots.len() - 1)
    }

    /// Member `m`'s row in slot `i`, as of the clock `now_ms`.
    #[inline]
    pub(super) fn load(&self, i: usize, m: usize, now_ms: u64) -> Row {
        self.slots[i].load(m, now_ms)
    }

    /// Slot `i` itself (see [`Slot::parts_mut`]).
    #[inline]
    pub(super) fn slot_mut(&mut self, i: usize) -> &mut S {
        &mut self.slots[i]
    }

    #[inline]
    pub(super) fn store(&mut self, i: usize, m: usize, row: &Row) {
        self.slots[i].store(m, row)
    }

    #[inline(always)]
    fn home(hash: u64, mask: usize) -> usize {
        home_slot(hash, mask, const { line_mask(std::mem::size_of::<S>()) })
    }

    fn last(s: &S) -> u64 {
        s.key()[S::WORDS - 1]
    }

    /// Index of the key's slot, if present. A key still in the array a growing table is
    /// leaving is moved first.
    #[inline]
    pub(super) fn find(&mut self, key: &PackedKey, hash: u64) -> Option<usize> {
        self.find_extended(key, 0, hash)
    }

    /// [`RowTable::find`] for `key` with `extension` or-ed into its last word (a nested
    /// member's key, see [`Nest`]; `hash` is the key's).
    #[inline]
    pub(super) fn find_extended(&mut self, key: &PackedKey, extension: u64, hash: u64) -> Option<usize> {
        match Self::probe(&self.slots, key, extension, hash) {
            None if self.moving.is_some() => self.take_early_extended(key, extension, hash),
            found => found,
        }
    }

    #[cold]
    fn take_early_extended(&mut self, key: &PackedKey, extension: u64, hash: u64) -> Option<usize> {
        let mut key = *key;
        key.w[S::WORDS - 1] |= extension;
        self.take_early(&key, hash)
    }

    /// Index of the slot of `key` with `extension` or-ed into its last word, in `slots`, if
    /// there.
    #[inline(always)]
    fn probe(slots: &[S], key: &PackedKey, extension: u64, hash: u64) -> Option<usize> {
        let mask = slots.len() - 1;
        let want_last = key.w[S::WORDS - 1] | extension | OCCUPIED;
        let mut i = Self::home(hash, mask);
        loop {
            let s = &slots[i];
            let last = Self::last(s);
            if last == 0 {
                return None;
            }
            // The other words, compared without a loop bound or a length check (both const).
            let k = s.key();
            if last == want_last && (0..S::WORDS - 1).fold(0, |d, j| d | (k[j] ^ key.w[j])) == 0 {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Moves a key from the array being left, if it is there, ahead of the others; returns
    /// its new index.
    #[cold]
    fn take_early(&mut self, key: &PackedKey, hash: u64) -> Option<usize> {
        let moving = self.moving.as_mut()?;
        let j = Self::probe(&moving.slots, key, 0, hash)?;
        Some(self.move_slot(j, hash))
    }

    /// Moves slot `j` of the array being left (an occupied one, of key hash `hash`) into the
    /// table; returns its index there.
    fn move_slot(&mut self, j: usize, hash: u64) -> usize {
        let i = self.claim_slot(hash);
        let moving = self.moving.as_mut().expect("a table growing");
        self.slots[i] = moving.slots[j].clone();
        Self::mark_removed(&mut moving.slots[j]);
        moving.left -= 1;
        if moving.left == 0 {
            if let Some(done) = self.moving.take() {
                free_in_background(done.slots);
            }
        }
        i
    }

    /// Moves the keys of up to `n` slots of the array a growing table is leaving (a worker
    /// calls this once per batch of flows; when the last key has moved, the array is freed).
    #[inline]
    pub(super) fn go_on_moving(&mut self, n: usize) {
        if self.moving.is_some() {
            self.move_some(n);
        }
    }

    #[cold]
    fn move_some(&mut self, n: usize) {
        let Some(moving) = self.moving.as_mut() else { return };
        let end = moving.next.saturating_add(n).min(moving.slots.len());
        let start = std::mem::replace(&mut moving.next, end);
        for j in start..end {
            // (Freed as soon as its last key has moved.)
            let Some(moving) = self.moving.as_ref() else { return };
            let s = &moving.slots[j];
            if Self::last(s) & OCCUPIED != 0 {
                let hash = self.nest.hash_of(&Self::key_of(s));
                self.move_slot(j, hash);
            }
        }
        debug_assert!(self.moving.as_ref().is_none_or(|m| m.next < m.slots.len()), "keys left behind");
    }

    /// Inserts a key known to be absent with every member's row; returns its slot index.
    pub(super) fn insert(&mut self, key: &PackedKey, hash: u64, rows: &[Row]) -> usize {
        debug_assert_eq!(rows.len(), S::MEMBERS);
        if (self.len + self.tombs + 1) * 8 > self.slots.len() * 5 {
            self.rebuild();
        } else if NextArray::due(self.len, &self.slots) && NextArray::wants_more(&self.next) {
            self.prepare_growth();
        }
        let i = self.claim_slot(hash);
        let slot = &mut self.slots[i];
        let k = slot.key_mut();
        k.copy_from_slice(&key.w[..S::WORDS]);
        k[S::WORDS - 1] |= OCCUPIED;
        for (m, row) in rows.iter().enumerate() {
            slot.store(m, row);
        }
        self.len += 1;
        i
    }

    /// The key of an occupied slot.
    fn key_of(s: &S) -> PackedKey {
        let mut w = [0u64; MAVG_WORDS];
        w[..S::WORDS].copy_from_slice(s.key());
        w[S::WORDS - 1] &= !OCCUPIED;
        PackedKey { n: S::WORDS as u8, w }
    }

    /// Has the array the table will grow into made (see [`NextArray::prepare`]).
    #[cold]
    fn prepare_growth(&mut self) {
        // SAFETY: as in `with_capacity`.
        unsafe { NextArray::prepare(&mut self.next, self.slots.len() * 2) }
    }

    /// Grows (or just drops tombstones): a new slot array (the one made ahead when it fits), into
    /// which the keys move a few at a time from now on (an earlier move still under way is
    /// finished first).
    fn rebuild(&mut self) {
        self.move_some(usize::MAX);
        let cap = if (self.len + 1) * 2 > self.slots.len() { self.slots.len() * 2 } else { self.slots.len() };
        // (A rebuild that only drops tombstones keeps the next array.)
        let slots = match NextArray::take(&mut self.next, cap) {
            Some(slots) => slots,
            // SAFETY: as in `with_capacity`.
            None => unsafe { ZeroedSlots::<S>::new(cap) },
        };
        let old = std::mem::replace(&mut self.slots, slots);
        self.tombs = 0;
        self.moving = (self.len > 0).then_some(Moving { slots: old, next: 0, left: self.len });
    }

    /// The first slot on a hash's probe path that is empty or removed (no growth), counted
    /// as taken: the caller fills it.
    fn claim_slot(&mut self, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = Self::home(hash, mask);
        while Self::last(&self.slots[i]) & OCCUPIED != 0 {
            i = (i + 1) & mask;
        }
        if Self::last(&self.slots[i]) & TOMB != 0 {
            self.tombs -= 1;
        }
        i
    }

    /// Marks a slot removed: probing goes on past it (its rows are left to the caller).
    fn mark_removed(s: &mut S) {
        let k = s.key_mut();
        k.fill(0);
        k[S::WORDS - 1] = TOMB;
    }

    /// Keeps the rows of slots `from..from + max` for which `f` returns true, storing what `f`
    /// changed; returns how many slots that was, and whether it reached the end. (Keys of a
    /// growing table not moved yet are not looked at.) Also keeps every kept row's time
    /// within 2^30 ms of the clock (the 32-bit time stays exact): a row idle that long has
    /// decayed to nothing, and only the age matters then.
    fn retain(&mut self, from: usize, max: usize, now_ms: u64, mut f: impl FnMut(&PackedKey, usize, &mut [Row]) -> bool) -> (usize, bool) {
        // (A table swapped away by a reload may be smaller than where a pass was: done.)
        let end = from.saturating_add(max).min(self.slots.len()).max(from);
        for s in self.slots.get_mut(from..end).unwrap_or_default() {
            if Self::last(s) & OCCUPIED == 0 {
                continue;
            }
            let key = Self::key_of(s);
            let mut rows: [Row; MAX_MEMBERS] = std::array::from_fn(|m| if m < S::MEMBERS { s.load(m, now_ms) } else { Row::default() });
            let rows = &mut rows[..S::MEMBERS];
            if f(&key, self.nest.member_of(&key), rows) {
                for (m, row) in rows.iter_mut().enumerate() {
                    if now_ms.saturating_sub(row.last_ms) > MAX_AGE {
                        row.last_ms = now_ms - MAX_AGE;
                    }
                    s.store(m, row);
                }
            } else {
                Self::mark_removed(s);
                for m in 0..S::MEMBERS {
                    s.store(m, &Row::default());
                }
                self.len -= 1;
                self.tombs += 1;
            }
        }
        (end - from, end >= self.slots.len())
    }

    /// (Also the keys not yet moved, of a growing table.)
    fn for_each_thr(&mut self, m: usize, mut f: impl FnMut(&PackedKey, &mut u32)) {
        let (row, nest) = (self.member_row(m), self.nest);
        let leaving = self.moving.iter_mut().flat_map(|mv| mv.slots.iter_mut());
        for s in self.slots.iter_mut().chain(leaving).filter(|s| Self::holds_member(nest, s, m)) {
            f(&Self::key_of(s), s.parts_mut(row).2);
        }
    }

    /// (Also the keys not yet moved, of a growing table.)
    fn for_each(&self, now_ms: u64, m: usize, mut f: impl FnMut(PackedKey, &Row)) {
        let (row, nest) = (self.member_row(m), self.nest);
        let leaving = self.moving.iter().flat_map(|mv| mv.slots.iter());
        for s in self.slots.iter().chain(leaving).filter(|s| Self::holds_member(nest, s, m)) {
            f(Self::key_of(s), &s.load(row, now_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(words: usize, a: u64) -> PackedKey {
        let mut w = [0u64; MAVG_WORDS];
        w[0] = a;
        PackedKey { n: words as u8, w }
    }

    #[test]
    fn slots_fit_the_key_and_never_straddle_lines() {
        for words in 1..=MAVG_WORDS {
            for sums in 1..=3 {
                let bytes = Rows::slot_bytes(words, sums);
                let need = words * 8 + sums * 8 + 8;
                assert!(bytes >= need && (bytes == need || bytes.is_power_of_two()), "{words}/{sums}: {bytes}");
                assert!(bytes > 64 || 64 % bytes == 0, "{words}/{sums}: {bytes} bytes straddle lines");
            }
        }
        // One IPv4 address (or an address and a protocol) and one field: two slots per line.
        assert_eq!(Rows::slot_bytes(1, 1), 32);
        assert_eq!(Rows::slot_bytes(2, 1), 32);
        assert_eq!(std::mem::align_of::<K2A1>(), 32);
        assert_eq!(Rows::slot_bytes(3, 1), 64);
        // A probe starts at the first slot of its line: two 32-byte slots a line, one of 64.
        assert_eq!((home_slot(5, 63, line_mask(32)), home_slot(4, 63, line_mask(32)), home_slot(5, 63, line_mask(64)), home_slot(69, 63, line_mask(32))), (4, 4, 5, 4));
        assert_eq!((line_mask(16), line_mask(128)), (!3, !0));
        // Shared by two: one line, where the key and both rows fit it.
        for words in 1..=MAVG_WORDS {
            for sums in 1..=3 {
                let need = words * 8 + 2 * (sums * 8 + 8);
                assert_eq!(Rows::shared_fits(words, sums), need <= 64, "{words}/{sums}");
                if let Some(bytes) = Rows::slot_bytes_of(words, sums, 2) {
                    assert_eq!(bytes, 64, "{words}/{sums}");
                }
            }
        }
    }

    #[test]
    fn a_growing_table_moves_its_keys_a_few_at_a_time_and_loses_none() {
        // Random inserts, finds (kept keys and absent ones), updates, small moving steps,
        // sweeps in pieces removing some keys, and whole listings, against a map: through many
        // growths, each with a long stretch of keys in both arrays.
        const NOW: u64 = 1_700_000_000_000;
        let mut rows = Rows::new(2, 1, 1, Nest::default());
        let mut model: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
        let mut keys: Vec<u64> = Vec::new();
        let mut next = crate::testrand::xorshift(0x9e37_79b9_7f4a_7c15);
        let row = |v: f64| Row { last_ms: NOW, n: [v, 0.0, 0.0], thr: 0 };
        let (mut fresh, mut cursor, mut moving_seen, mut found_while_moving) = (0u64, 0usize, 0, 0);
        for _ in 0..300_000 {
            moving_seen += rows.is_moving() as usize;
            match next(100) {
                0..=34 => {
                    fresh += 1;
                    let k = key(2, fresh);
                    rows.insert(&k, k.hash64(), &[row(fresh as f64)]);
                    model.insert(fresh, fresh as f64);
                    keys.push(fresh);
                }
                35..=79 if !keys.is_empty() => {
                    let a = keys[next(keys.len() as u64) as usize];
                    let Some(&v) = model.get(&a) else { continue }; // removed by a sweep
                    found_while_moving += rows.is_moving() as usize;
                    let k = key(2, a);
                    let i = rows.find(&k, k.hash64()).unwrap_or_else(|| panic!("key {a} lost"));
                    assert_eq!(rows.load(i, 0, NOW).n[0], v, "key {a}");
                    rows.store(i, 0, &row(v + 1.0));
                    model.insert(a, v + 1.0);
                }
                80..=89 => {
                    let k = key(2, 1 << 40 | next(1000));
                    assert_eq!(rows.find(&k, k.hash64()), None);
                }
                90..=97 => rows.go_on_moving(next(40) as usize),
                98 => {
                    let (looked, done) = rows.retain(cursor, 61, NOW, |k, _, r| {
                        assert_eq!(Some(&r[0].n[0]), model.get(&k.w[0]), "key {} in a sweep", k.w[0]);
                        let keep = k.w[0] % 13 != 0;
                        if !keep {
                            model.remove(&k.w[0]);
                        }
                        keep
                    });
                    cursor = if done { 0 } else { cursor + looked };
                }
                _ if next(10) == 0 => {
                    let mut seen = std::collections::HashMap::new();
                    rows.for_each(NOW, 0, |k, r| assert!(seen.insert(k.w[0], r.n[0]).is_none(), "key {} listed twice", k.w[0]));
                    assert_eq!(seen, model);
                }
                _ => {}
            }
        }
        assert!(model.len() > 50_000 && moving_seen > 10_000, "{} keys, {moving_seen} operations while moving", model.len());
        assert!(found_while_moving > 10_000, "keys looked up in both arrays: {found_while_moving}");
        rows.go_on_moving(usize::MAX);
        assert!(!rows.is_moving());
        let mut seen = std::collections::HashMap::new();
        rows.for_each(NOW, 0, |k, r| assert!(seen.insert(k.w[0], r.n[0]).is_none()));
        assert_eq!(seen, model);
    }

    #[test]
    fn members_of_a_shared_table_keep_their_own_rows() {
        const NOW: u64 = 1_700_000_000_000;
        let mut rows = Rows::new(1, 1, 2, Nest::default());
        let row = |n: f64, thr: u32| Row { last_ms: NOW, n: [n, 0.0, 0.0], thr };
        for a in 0..100u64 {
            let k = key(1, a);
            rows.insert(&k, k.hash64(), &[row(a as f64, 1), row(-(a as f64), 2)]);
        }
        rows.retain(0, usize::MAX, NOW, |k, _, r| {
            r[1].n[0] -= 0.5;
            k.w[0] < 50
        });
        let k = key(1, 7);
        let i = rows.find(&k, k.hash64()).unwrap();
        assert_eq!((rows.load(i, 0, NOW).n[0], rows.load(i, 0, NOW).thr), (7.0, 1));
        assert_eq!((rows.load(i, 1, NOW).n[0], rows.load(i, 1, NOW).thr), (-7.5, 2));
        let mut seen = 0;
        rows.for_each(NOW, 1, |k, r| {
            assert_eq!(r.n[0], -(k.w[0] as f64) - 0.5);
            seen += 1;
        });
        assert_eq!(seen, 50);
    }

    #[test]
    fn a_probe_starts_at_the_first_slot_of_its_line() {
        // Two slots a line: a key whose hash points at a line's second slot goes to the first
        // when it is free, and to the second when not; a third key of that line goes on to
        // the next line.
        let mut table = RowTable::<K1A1>::with_capacity(64, Nest::default());
        let row = [Row::default()];
        let first = table.insert(&key(1, 1), 5, &row);
        let second = table.insert(&key(1, 2), 4, &row);
        let third = table.insert(&key(1, 3), 5, &row);
        assert_eq!((first, second, third), (4, 5, 6));
        assert_eq!(table.find(&key(1, 3), 5), Some(6));
        assert_eq!(table.find(&key(1, 4), 4), None);
    }

    #[test]
    fn insert_find_grow_remove() {
        const NOW: u64 = 1_700_000_000_000;
        for words in 1..=MAVG_WORDS {
            for sums in 1..=3 {
                let mut rows = Rows::new(words, sums, 1, Nest::default());
                for a in 0..1000u64 {
                    let k = key(words, a);
                    assert_eq!(rows.find(&k, k.hash64()), None);
                    let row = Row { last_ms: NOW - a, n: [a as f64, 1.0, 2.0], thr: a as u32 };
                    let i = rows.insert(&k, k.hash64(), std::slice::from_ref(&row));
                    assert_eq!(rows.load(i, 0, NOW).last_ms, NOW - a);
                }
                for a in 0..1000u64 {
                    let k = key(words, a);
                    let i = rows.find(&k, k.hash64()).unwrap_or_else(|| panic!("{words} words: key {a}"));
                    let row = rows.load(i, 0, NOW + 5);
                    assert_eq!((row.last_ms, row.thr, row.n[0]), (NOW - a, a as u32, a as f64));
                    assert_eq!(&row.n[1..sums], &[1.0, 2.0][..sums - 1]);
                    assert!(row.n[sums..].iter().all(|x| *x == 0.0), "sums past the fields read as 0");
                }
                rows.retain(0, usize::MAX, NOW, |k, _, r| {
                    r[0].n[0] += 0.5;
                    k.w[0] % 2 == 0
                });
                let mut seen = Vec::new();
                rows.for_each(NOW, 0, |k, r| seen.push((k, r.thr, r.n[0])));
                seen.sort_by_key(|(_, t, _)| *t);
                assert_eq!(seen.len(), 500);
                assert!(seen.iter().all(|(k, t, n)| *k == key(words, *t as u64) && t % 2 == 0 && *n == *t as f64 + 0.5));
                let odd = key(words, 7);
                assert_eq!(rows.find(&odd, odd.hash64()), None, "removed");
                let i = rows.insert(&odd, odd.hash64(), &[Row::default()]);
                assert_eq!(rows.find(&odd, odd.hash64()), Some(i), "a tombstone is reused");
            }
        }
    }

    #[test]
    fn times_are_exact_around_the_32_bit_wrap_and_old_rows_are_clamped() {
        let mut rows = Rows::new(2, 1, 1, Nest::default());
        let k = key(2, 1);
        let wrap = 5u64 << 32;
        let i = rows.insert(&k, k.hash64(), &[Row { last_ms: wrap - 10, ..Row::default() }]);
        assert_eq!(rows.load(i, 0, wrap + 10).last_ms, wrap - 10, "clock just past the wrap");
        assert_eq!(rows.load(i, 0, wrap - 20).last_ms, wrap - 10, "row ahead of a worker's clock");
        let later = wrap + (3 << 29); // 1.5 * 2^30 ms idle: still exact, over the clamp
        rows.retain(0, usize::MAX, later, |_, _, _| true);
        assert_eq!(rows.load(i, 0, later).last_ms, later - (1 << 30), "kept within 2^30 ms");
    }
}
