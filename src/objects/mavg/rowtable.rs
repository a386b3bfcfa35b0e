//! The rows of one moving-average shard: open addressing with linear probing over small
//! slots, tombstones for removal, and an address that workers can prefetch before they take
//! the shard's lock.

use super::{PackedKey, Row};

const EMPTY: u8 = 0;
const TOMB: u8 = 0xFF;

#[derive(Clone)]
pub(super) struct Slot {
    pub key: PackedKey,
    pub row: Row,
}

pub(super) struct RowTable {
    slots: Vec<Slot>,
    len: usize,
    tombs: usize,
}

impl Default for RowTable {
    fn default() -> Self {
        RowTable::with_capacity(16)
    }
}

impl RowTable {
    fn with_capacity(cap: usize) -> Self {
        // SAFETY: an all-zero slot is an empty one: key length 0 (EMPTY), zero numbers, and
        // `None` for the boxed limit states (a null pointer).
        let slots = unsafe { crate::objects::table::zeroed_vec::<Slot>(cap.next_power_of_two()) };
        debug_assert!(slots.iter().all(|s| s.key.n == EMPTY && s.row.limits.is_none()));
        RowTable { slots, len: 0, tombs: 0 }
    }

    /// Address of the slot a hash starts probing at, and the mask: for prefetching.
    pub fn probe_start(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.slots.len() - 1)
    }

    /// Index of the key's slot, if present.
    #[inline]
    pub fn find(&self, key: &PackedKey, hash: u64) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let k = &self.slots[i].key;
            if k.n == EMPTY {
                return None;
            }
            if k.n != TOMB && k == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts a key known to be absent; returns its slot index.
    pub fn insert(&mut self, key: PackedKey, hash: u64, row: Row) -> usize {
        if (self.len + self.tombs + 1) * 8 > self.slots.len() * 5 {
            self.rebuild();
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while !matches!(self.slots[i].key.n, EMPTY | TOMB) {
            i = (i + 1) & mask;
        }
        if self.slots[i].key.n == TOMB {
            self.tombs -= 1;
        }
        self.slots[i] = Slot { key, row };
        self.len += 1;
        i
    }

    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut Row {
        &mut self.slots[i].row
    }

    /// Grows (or just drops tombstones) and re-places every row.
    fn rebuild(&mut self) {
        let cap = if (self.len + 1) * 2 > self.slots.len() { self.slots.len() * 2 } else { self.slots.len() };
        let old = std::mem::replace(self, RowTable::with_capacity(cap));
        for s in old.slots.into_iter().filter(|s| !matches!(s.key.n, EMPTY | TOMB)) {
            let h = s.key.hash64();
            self.insert(s.key, h, s.row);
        }
    }

    /// Keeps the rows for which `f` returns true.
    pub fn retain(&mut self, mut f: impl FnMut(&PackedKey, &mut Row) -> bool) {
        for s in self.slots.iter_mut() {
            if matches!(s.key.n, EMPTY | TOMB) {
                continue;
            }
            if !f(&s.key, &mut s.row) {
                s.key.n = TOMB;
                s.row = Row::default();
                self.len -= 1;
                self.tombs += 1;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PackedKey, &Row)> {
        self.slots.iter().filter(|s| !matches!(s.key.n, EMPTY | TOMB)).map(|s| (&s.key, &s.row))
    }
}
