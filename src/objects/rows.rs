//! The rows of a window: keys packed into a few 64-bit words, summed in a hash map sized to the
//! key, and ordered and limited for export.
//!
//! A busy window holds millions of keys (every external address of a flood), so the size of an
//! entry decides the speed: a key is packed into exactly as many words as its fields need (one
//! per field, two for IPv6 addresses and `dev-ip`) plus one word of NULL bits, and the map type
//! is chosen per window among a few fixed sizes ([`PackedTable`]). A window keyed by one IPv4
//! address stores 16 bytes of key per row. Integer key fields keep their low 64 bits.

use super::table::PackedTable;
use super::window::{ColumnSource, FwmSpec};
use crate::fields::{FieldId, Kind};
use crate::flow::Flow;
use std::cmp::Ordering;

/// Most key fields one window may have.
pub const MAX_KEY_FIELDS: usize = 8;

/// Most words a packed key takes: two per field and the NULL bits.
pub const MAX_WORDS: usize = 2 * MAX_KEY_FIELDS + 1;

/// Sums of one row, indexed like `FwmSpec::aggs`.
pub type Aggs = [u64; 3];

/// Where each key field sits in the packed words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// (field, first word, takes two words)
    slots: Vec<(FieldId, usize, bool)>,
    /// Words in use, the NULL-bits word included.
    pub words: usize,
}

impl KeyLayout {
    pub fn new(keys: &[FieldId]) -> KeyLayout {
        let mut slots = Vec::new();
        let mut w = 0;
        for &id in keys.iter().take(MAX_KEY_FIELDS) {
            let wide = matches!(id.def().kind, Kind::Ipv6 | Kind::Addr);
            slots.push((id, w, wide));
            w += 1 + wide as usize;
        }
        KeyLayout { slots, words: w + 1 }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Packs a flow's key fields into `out` (words past `self.words` are left as they are;
    /// `out` holds at least `self.words`).
    #[inline]
    pub fn pack<const N: usize>(&self, flow: &Flow, out: &mut [u64; N]) {
        let mut nulls = 0u64;
        for (i, &(id, w, wide)) in self.slots.iter().enumerate() {
            match flow.get(id) {
                Some(v) => {
                    out[w] = v as u64;
                    if wide {
                        out[w + 1] = (v >> 64) as u64;
                    }
                }
                None => {
                    out[w] = 0;
                    if wide {
                        out[w + 1] = 0;
                    }
                    nulls |= 1 << i;
                }
            }
        }
        out[self.words - 1] = nulls;
    }

    /// The i-th key value of packed words, `None` for NULL.
    #[inline]
    pub fn value(&self, words: &[u64], i: usize) -> Option<u128> {
        let (_, w, wide) = self.slots[i];
        if words[self.words - 1] & (1 << i) != 0 {
            return None;
        }
        Some(words[w] as u128 | if wide { (words[w + 1] as u128) << 64 } else { 0 })
    }

    /// Unpacks into an export row key.
    pub fn unpack(&self, words: &[u64]) -> Key {
        Key((0..self.slots.len()).map(|i| self.value(words, i)).collect())
    }

    /// Packs explicit values (tests, and the NULL remainder row).
    pub fn pack_values(&self, vals: &[Option<u128>]) -> [u64; MAX_WORDS] {
        let mut out = [0u64; MAX_WORDS];
        for (i, v) in vals.iter().enumerate().take(self.slots.len()) {
            let (_, w, wide) = self.slots[i];
            match v {
                Some(v) => {
                    out[w] = *v as u64;
                    if wide {
                        out[w + 1] = (*v >> 64) as u64;
                    }
                }
                None => out[self.words - 1] |= 1 << i,
            }
        }
        out
    }
}

/// The key values of an exported row (`None` = NULL), in key-field order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Vec<Option<u128>>);

impl Key {
    pub fn get(&self, i: usize) -> Option<u128> {
        self.0.get(i).copied().flatten()
    }
}

#[inline]
fn add_sums(into: &mut Aggs, sums: &Aggs) {
    for (a, b) in into.iter_mut().zip(sums) {
        *a = a.saturating_add(*b);
    }
}

/// Orders two rows by the window's fields in order (honouring `desc`; NULL after values, as in
/// PostgreSQL's ascending order).
fn compare(spec: &FwmSpec, a: (&[u64], &Aggs), b: (&[u64], &Aggs)) -> Ordering {
    for c in &spec.columns {
        let ord = match c.source {
            ColumnSource::Agg(i) => a.1[i].cmp(&b.1[i]),
            ColumnSource::Key(i) => match (spec.layout.value(a.0, i), spec.layout.value(b.0, i)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
            },
        };
        let ord = if c.desc { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Export order and limit for one map size: sorts (with a `limit`, selects the first rows in
/// linear time and sorts only those), sums the rest into a row of NULL keys.
fn export_sized<const N: usize>(spec: &FwmSpec, map: PackedTable<N>) -> Vec<(Key, Aggs)> {
    let mut v: Vec<([u64; N], Aggs)> = map.into_rows().collect();
    let cmp = |a: &([u64; N], Aggs), b: &([u64; N], Aggs)| compare(spec, (&a.0, &a.1), (&b.0, &b.1));
    let mut rest = None;
    if let Some(limit) = spec.limit.filter(|&l| l < v.len()) {
        if limit > 0 {
            v.select_nth_unstable_by(limit - 1, cmp);
        }
        let mut sums = [0u64; 3];
        for (_, s) in v.drain(limit..) {
            add_sums(&mut sums, &s);
        }
        rest = Some(sums);
    }
    v.sort_unstable_by(cmp);
    let mut out: Vec<(Key, Aggs)> = v.iter().map(|(k, s)| (spec.layout.unpack(k), *s)).collect();
    if let Some(sums) = rest {
        out.push((Key(vec![None; spec.layout.len()]), sums));
    }
    out
}

macro_rules! row_maps {
    ($($variant:ident = $n:literal),*) => {
        /// A window's rows: packed key -> sums, in a map sized to the key.
        // The variants differ in size by their inline insertion queue; there is one map per
        // window and worker, and boxing it would add an indirection to every flow.
        #[allow(clippy::large_enum_variant)]
        pub enum RowMap { $($variant(PackedTable<$n>),)* }

        impl RowMap {
            /// An empty map for keys of `words` words, with room for `capacity` rows.
            pub fn new(words: usize, capacity: usize) -> RowMap {
                $(if words <= $n {
                    return RowMap::$variant(PackedTable::with_capacity(capacity));
                })*
                unreachable!("a key has at most {MAX_WORDS} words")
            }

            /// Adds sums to the row of a packed key.
            #[inline]
            pub fn add(&mut self, key: &[u64; MAX_WORDS], sums: &Aggs) {
                match self {
                    $(RowMap::$variant(m) => {
                        let mut k = [0u64; $n];
                        k.copy_from_slice(&key[..$n]);
                        m.add(&k, sums);
                    })*
                }
            }

            pub fn len(&mut self) -> usize {
                match self { $(RowMap::$variant(m) => m.len(),)* }
            }

            pub fn is_empty(&mut self) -> bool {
                self.len() == 0
            }

            /// Adds every row of `other` (another worker's piece of the same window).
            pub fn merge(&mut self, other: RowMap) {
                match other {
                    $(RowMap::$variant(o) => for (k, s) in o.into_rows() {
                        let mut w = [0u64; MAX_WORDS];
                        w[..$n].copy_from_slice(&k);
                        self.add(&w, &s);
                    },)*
                }
            }

            /// The rows to export: ordered by the window's fields, limited, with the NULL
            /// remainder row.
            pub fn export_rows(self, spec: &FwmSpec) -> Vec<(Key, Aggs)> {
                match self { $(RowMap::$variant(m) => export_sized(spec, m),)* }
            }
        }
    };
}

row_maps!(W1 = 1, W2 = 2, W3 = 3, W4 = 4, W5 = 5, W7 = 7, W9 = 9, W17 = 17);

impl std::fmt::Debug for RowMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowMap")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_packs_wide_fields_and_nulls() {
        let l = KeyLayout::new(&[FieldId::SrcHost, FieldId::DstHost6, FieldId::Proto]);
        assert_eq!(l.words, 5);
        let mut f = Flow::default();
        f.set(FieldId::SrcHost, 0x01020304);
        f.set(FieldId::Proto, 6);
        let mut w = [7u64; MAX_WORDS];
        l.pack(&f, &mut w);
        assert_eq!(&w[..5], &[0x01020304, 0, 0, 6, 0b10]);
        assert_eq!(l.unpack(&w), Key(vec![Some(0x01020304), None, Some(6)]));
        f.set(FieldId::DstHost6, u128::MAX - 1);
        l.pack(&f, &mut w);
        assert_eq!(l.value(&w, 1), Some(u128::MAX - 1));
        assert_eq!(KeyLayout::new(&[]).words, 1);
        assert_eq!(KeyLayout::new(&[FieldId::DevIp; MAX_KEY_FIELDS]).words, MAX_WORDS);
    }

    #[test]
    fn maps_sum_and_merge() {
        let l = KeyLayout::new(&[FieldId::DstHost]);
        let mut a = RowMap::new(l.words, 0);
        let mut b = RowMap::new(l.words, 0);
        a.add(&l.pack_values(&[Some(1)]), &[10, 1, 0]);
        a.add(&l.pack_values(&[Some(1)]), &[5, 1, 0]);
        b.add(&l.pack_values(&[Some(1)]), &[1, 1, 0]);
        b.add(&l.pack_values(&[None]), &[2, 1, 0]);
        a.merge(b);
        assert_eq!(a.len(), 2);
        assert!(matches!(a, RowMap::W2(_)));
    }
}
