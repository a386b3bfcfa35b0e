//! The rows of one moving-average shard: open addressing with linear probing over slots
//! sized to the key, tombstones for removal, and an address that workers can prefetch before
//! they take the shard's lock.
//!
//! A flood updates a random row per flow, so a slot should be one cache line: a slot holds
//! only the key's own words (not the widest key's), and keys of up to three words (an address,
//! an address and a port or protocol) make a 64-byte, line-aligned slot. Whether a slot is used is marked in the top bits of the key's
//! last word (the NULL-bits word, whose low bits only are used).

use super::{PackedKey, Row, MAVG_WORDS};

/// Set in the last key word of an occupied slot.
const OCCUPIED: u64 = 1 << 63;
/// Set in the last key word of a removed slot (probing goes on past it).
const TOMB: u64 = 1 << 62;

macro_rules! slot_types {
    ($($name:ident = $n:literal, align $a:literal;)*) => {
        $(
            /// A slot for keys of this many words.
            #[derive(Clone)]
            #[repr(C, align($a))]
            pub(super) struct $name {
                key: [u64; $n],
                row: Row,
            }

            impl Slot for $name {
                const WORDS: usize = $n;
                #[inline]
                fn key(&self) -> &[u64] {
                    &self.key
                }
                #[inline]
                fn parts(&mut self) -> (&mut [u64], &mut Row) {
                    (&mut self.key, &mut self.row)
                }
                fn row(&self) -> &Row {
                    &self.row
                }
            }
        )*

        /// The rows, in a table whose slots fit the moving average's key.
        pub(super) enum Rows { $($name(RowTable<$name>),)* }

        impl Rows {
            /// A table for keys of `words` words.
            pub fn new(words: usize) -> Rows {
                $(if words == $n {
                    return Rows::$name(RowTable::with_capacity(16));
                })*
                unreachable!("moving-average keys have 1..={MAVG_WORDS} words, not {words}")
            }

            /// Bytes of a slot for keys of `words` words (for prefetching).
            pub fn slot_bytes(words: usize) -> usize {
                $(if words == $n {
                    return std::mem::size_of::<$name>();
                })*
                unreachable!()
            }
        }

        impl Rows {
            /// Address of the slot array and the index mask: for prefetching.
            pub fn probe_start(&self) -> (usize, usize) {
                match self { $(Rows::$name(t) => t.probe_start(),)* }
            }

            #[inline]
            pub fn find(&self, key: &PackedKey, hash: u64) -> Option<usize> {
                match self { $(Rows::$name(t) => t.find(key, hash),)* }
            }

            pub fn insert(&mut self, key: PackedKey, hash: u64, row: Row) -> usize {
                match self { $(Rows::$name(t) => t.insert(&key, hash, row),)* }
            }

            #[inline]
            pub fn row_mut(&mut self, i: usize) -> &mut Row {
                match self { $(Rows::$name(t) => t.row_mut(i),)* }
            }

            /// Keeps the rows for which `f` returns true.
            pub fn retain(&mut self, f: impl FnMut(&PackedKey, &mut Row) -> bool) {
                match self { $(Rows::$name(t) => t.retain(f),)* }
            }

            /// Every row with its key.
            pub fn for_each(&self, f: impl FnMut(PackedKey, &Row)) {
                match self { $(Rows::$name(t) => t.for_each(f),)* }
            }
        }
    };
}

// Rows are 40 bytes: keys of up to three words (an address and a number + NULL bits) make a
// 64-byte, line-aligned slot; wider keys pack without padding.
slot_types! {
    Slot1 = 1, align 64;
    Slot2 = 2, align 64;
    Slot3 = 3, align 64;
    Slot4 = 4, align 8;
    Slot5 = 5, align 16;
}

/// What the table needs of a slot type.
pub(super) trait Slot: Clone {
    const WORDS: usize;
    fn key(&self) -> &[u64];
    fn parts(&mut self) -> (&mut [u64], &mut Row);
    fn row(&self) -> &Row;
}

pub(super) struct RowTable<S: Slot> {
    slots: Vec<S>,
    len: usize,
    tombs: usize,
}

impl<S: Slot> RowTable<S> {
    fn with_capacity(cap: usize) -> Self {
        // SAFETY: an all-zero slot is an empty one: last key word 0 (neither occupied nor
        // removed) and a row of plain numbers.
        let slots = unsafe { crate::objects::table::zeroed_vec::<S>(cap.next_power_of_two()) };
        RowTable { slots, len: 0, tombs: 0 }
    }

    fn probe_start(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.slots.len() - 1)
    }

    fn last(s: &S) -> u64 {
        s.key()[S::WORDS - 1]
    }

    /// Index of the key's slot, if present.
    #[inline]
    fn find(&self, key: &PackedKey, hash: u64) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let want_last = key.w[S::WORDS - 1] | OCCUPIED;
        let mut i = hash as usize & mask;
        loop {
            let s = &self.slots[i];
            let last = Self::last(s);
            if last == 0 {
                return None;
            }
            let k = s.key();
            if last == want_last && k[..S::WORDS - 1].iter().zip(&key.w).fold(0, |d, (a, b)| d | (a ^ b)) == 0 {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts a key known to be absent; returns its slot index.
    fn insert(&mut self, key: &PackedKey, hash: u64, row: Row) -> usize {
        if (self.len + self.tombs + 1) * 8 > self.slots.len() * 5 {
            self.rebuild();
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while Self::last(&self.slots[i]) & OCCUPIED != 0 {
            i = (i + 1) & mask;
        }
        if Self::last(&self.slots[i]) & TOMB != 0 {
            self.tombs -= 1;
        }
        let (k, r) = self.slots[i].parts();
        k.copy_from_slice(&key.w[..S::WORDS]);
        k[S::WORDS - 1] |= OCCUPIED;
        *r = row;
        self.len += 1;
        i
    }

    #[inline]
    fn row_mut(&mut self, i: usize) -> &mut Row {
        self.slots[i].parts().1
    }

    /// The key of an occupied slot.
    fn key_of(s: &S) -> PackedKey {
        let mut w = [0u64; MAVG_WORDS];
        w[..S::WORDS].copy_from_slice(s.key());
        w[S::WORDS - 1] &= !OCCUPIED;
        PackedKey { n: S::WORDS as u8, w }
    }

    /// Grows (or just drops tombstones) and re-places every row.
    fn rebuild(&mut self) {
        let cap = if (self.len + 1) * 2 > self.slots.len() { self.slots.len() * 2 } else { self.slots.len() };
        let old = std::mem::replace(self, RowTable::with_capacity(cap));
        for mut s in old.slots.into_iter().filter(|s| Self::last(s) & OCCUPIED != 0) {
            let key = Self::key_of(&s);
            let row = std::mem::take(s.parts().1);
            self.insert(&key, key.hash64(), row);
        }
    }

    fn retain(&mut self, mut f: impl FnMut(&PackedKey, &mut Row) -> bool) {
        for s in self.slots.iter_mut() {
            if Self::last(s) & OCCUPIED == 0 {
                continue;
            }
            let key = Self::key_of(s);
            let (k, r) = s.parts();
            if !f(&key, r) {
                k.fill(0);
                k[S::WORDS - 1] = TOMB;
                *r = Row::default();
                self.len -= 1;
                self.tombs += 1;
            }
        }
    }

    fn for_each(&self, mut f: impl FnMut(PackedKey, &Row)) {
        for s in self.slots.iter().filter(|s| Self::last(s) & OCCUPIED != 0) {
            f(Self::key_of(s), s.row());
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
    fn slots_fit_the_key_and_one_address_is_one_line() {
        for words in 1..=3 {
            assert_eq!(Rows::slot_bytes(words), 64, "{words} words");
        }
        assert_eq!(std::mem::align_of::<Slot3>(), 64);
        assert_eq!(Rows::slot_bytes(4), 72);
        assert_eq!(Rows::slot_bytes(5), 80);
    }

    #[test]
    fn insert_find_grow_remove() {
        for words in 1..=MAVG_WORDS {
            let mut rows = Rows::new(words);
            for a in 0..1000u64 {
                let k = key(words, a);
                assert_eq!(rows.find(&k, k.hash64()), None);
                let i = rows.insert(k, k.hash64(), Row { last_ms: a, ..Row::default() });
                assert_eq!(rows.row_mut(i).last_ms, a);
            }
            for a in 0..1000u64 {
                let k = key(words, a);
                let i = rows.find(&k, k.hash64()).unwrap_or_else(|| panic!("{words} words: key {a}"));
                assert_eq!(rows.row_mut(i).last_ms, a);
            }
            rows.retain(|k, _| k.w[0] % 2 == 0);
            let mut seen = Vec::new();
            rows.for_each(|k, r| seen.push((k, r.last_ms)));
            seen.sort_by_key(|(_, t)| *t);
            assert_eq!(seen.len(), 500);
            assert!(seen.iter().all(|(k, t)| *k == key(words, *t) && t % 2 == 0));
            let odd = key(words, 7);
            assert_eq!(rows.find(&odd, odd.hash64()), None, "removed");
            let i = rows.insert(odd, odd.hash64(), Row::default());
            assert_eq!(rows.find(&odd, odd.hash64()), Some(i), "a tombstone is reused");
        }
    }
}
