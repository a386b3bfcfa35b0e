//! The rows of a window: keys packed into a few 64-bit words, summed in a hash map sized to the
//! key, and ordered and limited for export.
//!
//! A busy window holds millions of keys (every external address of a flood), so the size of an
//! entry decides the speed: a key is packed into as few words as its fields need (see
//! [`KeyLayout`]), and the map type is chosen per window among a few fixed sizes
//! ([`PackedTable`]). A window keyed by one IPv4 address stores 8 bytes of key per row. Integer
//! key fields keep their low 64 bits.

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

/// Where one key field sits in the packed words (a layout's places are read for every flow of
/// every window, so they are kept inline; the fields are of the widths the packing computes
/// with, which takes fewer instructions than narrower ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    id: FieldId,
    /// First word.
    word: usize,
    /// Bit offset in that word (narrow fields share words).
    shift: u32,
    /// 32 (IPv4), 48 (MAC), 64 (numbers: their low 64 bits) or 128 (IPv6, `dev-ip`).
    bits: u32,
    /// The field's presence bit in a flow (0 for a field flows never store: always NULL).
    present: u64,
}

impl Place {
    const UNUSED: Place = Place { id: FieldId::SrcHost, word: 0, shift: 0, bits: 0, present: 0 };
}

/// The top two bits of a key's last word are left to the tables (used / removed marks).
const TABLE_BITS: u32 = 2;

/// How a key's fields are packed: numbers take a word, IPv6 addresses two, IPv4 and MAC
/// addresses share words (two IPv4 addresses per word), and the NULL bits (one per field) go in
/// the last word's spare bits, or in a word of their own when there are none. A key of one
/// IPv4 address is one word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// The first `n` are the key fields' places, in key order (inline: no pointer to follow
    /// on the per-flow path).
    places: [Place; MAX_KEY_FIELDS],
    n: u8,
    /// Word and bit offset of the NULL bits (bit `i` set: field `i` is NULL).
    nulls_word: usize,
    nulls_shift: u32,
    /// Words in use.
    pub words: usize,
    /// How [`KeyLayout::pack`] writes the words (derived from the places).
    packer: Packer,
    /// A bit always set in the last word: 0, but [`NESTED_MARK`] in a layout made by
    /// [`KeyLayout::extended`].
    mark: u64,
}

/// The bit set in every key packed by an [`extended`](KeyLayout::extended) layout: it tells
/// such a key from the key it extends when the extra field is 0 (a moving average nested in
/// another's table keeps both kinds of keys there). Just below the tables' two bits.
pub const NESTED_MARK: u64 = 1 << (63 - TABLE_BITS);

/// What an [extended](KeyLayout::extended) layout adds to the key it extends, as it packs it
/// from a flow: the last word's bits of its extra field (value or NULL bit) and the mark.
/// Or-ed into the extended key's last word, they make the extended layout's key: what a moving
/// average nested in another's table packs per flow, instead of its whole key (kept inline
/// with the queue that packs it: a few loads fewer per flow than through the layout).
#[derive(Clone, Copy, Debug)]
pub struct Extension {
    slot: usize,
    present: u64,
    value_mask: u64,
    shift: u32,
    mark: u64,
    /// The bits of a flow without the field: its NULL bit and the mark.
    absent: u64,
}

impl Extension {
    /// Where the extra field's value starts in the last word.
    pub fn value_shift(&self) -> u32 {
        self.shift
    }

    /// See [`Extension`].
    #[inline(always)]
    pub fn bits(&self, flow: &Flow) -> u64 {
        if flow.present_mask() & self.present != 0 {
            (flow.stored_value(self.slot) as u64 & self.value_mask) << self.shift | self.mark
        } else {
            self.absent
        }
    }
}



/// How a flow's key is packed: straight-line code for the commonest keys (most windows and
/// moving averages are keyed by an address, a number, an address and a protocol or port, or
/// who talks to whom and how; IPv4 or IPv6), the places in turn for the others. A window or
/// average packs a key per flow, and the loop over places took two to four times the
/// instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packer {
    /// No key field: word 0, no NULL bit.
    Empty,
    /// One field narrower than a word (IPv4, MAC): at bit 0 of word 0, its NULL bit just
    /// above it.
    OneNarrow,
    /// One number: word 0; its NULL bit is word 1.
    OneWord,
    /// One 128-bit field: words 0 and 1; its NULL bit is word 2.
    OneWide,
    /// A number (field `number` in key order) and a field narrower than a word (an address
    /// and its protocol or port): the number is word 0, the other at bit 0 of word 1, the
    /// NULL bits just above it.
    WordAndNarrow { number: u8 },
    /// Two numbers: words 0 and 1; the NULL bits are word 2.
    TwoWords,
    /// Two IPv4 addresses: word 0; the NULL bits are word 1.
    TwoIpv4,
    /// Two IPv4 addresses (fields `a` and `b` in key order) and a number (field `number`),
    /// who talks to whom and how: the number is word 0, the addresses word 1, the NULL bits
    /// word 2.
    TwoIpv4AndWord { a: u8, b: u8, number: u8 },
    /// An IPv6 address (or another 128-bit field) and a number, in key order: words 0-2 in
    /// key order, the NULL bits word 3.
    WideAndWord { wide: u8 },
    /// Two IPv6 addresses: words 0-3; the NULL bits are word 4.
    TwoWide,
    /// Any other key: each place in turn.
    Places,
    /// A key [extended](KeyLayout::extended): its places but the last in turn, then the
    /// [`Extension`]'s bits.
    Extended,
}

/// Bits a key field takes in a packed key.
fn key_bits(id: FieldId) -> u32 {
    match id.def().kind {
        Kind::Ipv4 => 32,
        Kind::Mac => 48,
        Kind::Ipv6 | Kind::Addr => 128,
        Kind::Uint | Kind::Counter => 64,
    }
}

/// `bits` low bits set (up to 63).
fn low_bits(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

impl KeyLayout {
    pub fn new(keys: &[FieldId]) -> KeyLayout {
        let keys = &keys[..keys.len().min(MAX_KEY_FIELDS)];
        let mut places = [Place::UNUSED; MAX_KEY_FIELDS];
        for (p, &id) in places.iter_mut().zip(keys) {
            *p = Place { id, word: 0, shift: 0, bits: key_bits(id), present: Flow::presence_bit(id) };
        }
        let used_places = &mut places[..keys.len()];
        // Whole words first, then the narrow fields first-fit into shared words.
        let mut words = 0;
        for p in used_places.iter_mut().filter(|p| p.bits >= 64) {
            p.word = words;
            words += p.bits as usize / 64;
        }
        let mut used: Vec<u32> = Vec::new(); // bits used in each shared word
        for p in used_places.iter_mut().filter(|p| p.bits < 64) {
            let k = used.iter().position(|&u| u + p.bits <= 64).unwrap_or_else(|| {
                used.push(0);
                used.len() - 1
            });
            (p.word, p.shift) = (words + k, used[k]);
            used[k] += p.bits;
        }
        // The NULL bits go into the shared word with the most room, made the last word.
        let room = 64 - TABLE_BITS - keys.len() as u32;
        let roomiest = (0..used.len()).min_by_key(|&k| used[k]).filter(|&k| used[k] <= room);
        let (nulls_word, nulls_shift) = match roomiest {
            Some(k) => {
                let last = used.len() - 1;
                for p in used_places.iter_mut().filter(|p| p.bits < 64) {
                    if p.word == words + k {
                        p.word = words + last;
                    } else if p.word == words + last {
                        p.word = words + k;
                    }
                }
                (words + last, used[k])
            }
            None => (words + used.len(), 0),
        };
        let mut layout = KeyLayout { places, n: keys.len() as u8, nulls_word, nulls_shift, words: nulls_word + 1, packer: Packer::Places, mark: 0 };
        layout.packer = layout.straight_line_packer().unwrap_or(Packer::Places);
        layout
    }

    /// The straight-line packer that writes this layout, if any: chosen by the shape, and
    /// taken only when the places are where it writes them.
    fn straight_line_packer(&self) -> Option<Packer> {
        use Packer::*;
        let bits: Vec<u32> = self.places().iter().map(|p| p.bits).collect();
        // Each packer, the places it writes (word, bit) in key order, and where the NULL bits go.
        let (packer, at, nulls_at): (_, &[(usize, u32)], _) = match bits[..] {
            [] => (Empty, &[], (0, 0)),
            [n] if n < 64 => (OneNarrow, &[(0, 0)], (0, n)),
            [64] => (OneWord, &[(0, 0)], (1, 0)),
            [_] => (OneWide, &[(0, 0)], (2, 0)),
            [64, n] if n < 64 => (WordAndNarrow { number: 0 }, &[(0, 0), (1, 0)], (1, n)),
            [n, 64] if n < 64 => (WordAndNarrow { number: 1 }, &[(1, 0), (0, 0)], (1, n)),
            [64, 64] => (TwoWords, &[(0, 0), (1, 0)], (2, 0)),
            [32, 32] => (TwoIpv4, &[(0, 0), (0, 32)], (1, 0)),
            [64, 32, 32] => (TwoIpv4AndWord { a: 1, b: 2, number: 0 }, &[(0, 0), (1, 0), (1, 32)], (2, 0)),
            [32, 64, 32] => (TwoIpv4AndWord { a: 0, b: 2, number: 1 }, &[(1, 0), (0, 0), (1, 32)], (2, 0)),
            [32, 32, 64] => (TwoIpv4AndWord { a: 0, b: 1, number: 2 }, &[(1, 0), (1, 32), (0, 0)], (2, 0)),
            [128, 64] => (WideAndWord { wide: 0 }, &[(0, 0), (2, 0)], (3, 0)),
            [64, 128] => (WideAndWord { wide: 1 }, &[(0, 0), (1, 0)], (3, 0)),
            [128, 128] => (TwoWide, &[(0, 0), (2, 0)], (4, 0)),
            _ => return None,
        };
        let places_agree = self.places().iter().zip(at).all(|(p, &w)| (p.word, p.shift) == w);
        (places_agree && (self.nulls_word, self.nulls_shift) == nulls_at).then_some(packer)
    }

    /// This layout's keys with one more field, `extra`, packed into the spare bits of the last
    /// word: the same words, each of this layout's fields where it is here, the extra field's
    /// NULL bit next to the others, then its value, then [`NESTED_MARK`]. So masking
    /// [`KeyLayout::extension_mask`] off an extended key gives the key it extends. `None`
    /// when `extra` is not a number of 8 bits ([`FieldId::narrow_bits`]: a key's variants
    /// sit together in a nested table, so they must be few), the last word has too little
    /// room, or there are as many fields as a key may have. The extra field keeps the low 8
    /// bits of its value: every value of its type (a broken exporter's longer element is cut
    /// to them), so a key has at most 257 variants, NULL included.
    pub fn extended(&self, extra: FieldId) -> Option<KeyLayout> {
        let n = self.len();
        let shift = self.nulls_shift + n as u32 + 1;
        let bits = extra.narrow_bits()?;
        if n == MAX_KEY_FIELDS || shift + bits > 63 - TABLE_BITS {
            return None;
        }
        let mut out = self.clone();
        out.places[n] = Place { id: extra, word: self.nulls_word, shift, bits, present: Flow::presence_bit(extra) };
        out.n += 1;
        (out.packer, out.mark) = (Packer::Extended, NESTED_MARK);
        Some(out)
    }

    /// The bits of an [extended](KeyLayout::extended) key that the extra field takes (its
    /// NULL bit, its value and the mark), in the last word: 0 for other layouts.
    pub fn extension_mask(&self) -> u64 {
        if self.mark == 0 {
            return 0;
        }
        let extra_null = self.nulls_shift + self.len() as u32 - 1;
        (self.mark << 1) - (1 << extra_null)
    }

    /// How an [extended](KeyLayout::extended) layout packs what it adds to the key it
    /// extends (`None` for other layouts).
    pub fn extension(&self) -> Option<Extension> {
        let i = self.len().checked_sub(1).filter(|_| self.mark != 0)?;
        let p = &self.places[i];
        let null = 1 << (self.nulls_shift + i as u32);
        Some(Extension { slot: p.id as usize, present: p.present, value_mask: low_bits(p.bits), shift: p.shift, mark: self.mark, absent: null | self.mark })
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn places(&self) -> &[Place] {
        &self.places[..self.n as usize]
    }

    /// Packs a flow's key fields into `out` (words past `self.words` are left as they are;
    /// `out` holds at least `self.words`), in a straight line for the common keys,
    /// place by place for the others. Always inline: each caller (a window, a moving
    /// average's queue) packs for every flow.
    #[inline(always)]
    pub fn pack<const N: usize>(&self, flow: &Flow, out: &mut [u64; N]) {
        match self.packer {
            Packer::Empty => out[0] = 0,
            Packer::OneNarrow => {
                let (v, null) = Self::field_of(flow, &self.places[0]);
                let bits = self.places[0].bits;
                out[0] = (v as u64 & low_bits(bits)) | null << bits;
            }
            Packer::OneWord => {
                let (v, null) = Self::field_of(flow, &self.places[0]);
                out[0] = v as u64;
                out[1] = null;
            }
            Packer::OneWide => {
                let (v, null) = Self::field_of(flow, &self.places[0]);
                out[0] = v as u64;
                out[1] = (v >> 64) as u64;
                out[2] = null;
            }
            Packer::WordAndNarrow { number } => {
                let (w, n) = (number as usize, 1 - number as usize);
                let (number, number_null) = Self::field_of(flow, &self.places[w]);
                let (narrow, narrow_null) = Self::field_of(flow, &self.places[n]);
                let bits = self.places[n].bits;
                out[0] = number as u64;
                out[1] = (narrow as u64 & low_bits(bits)) | (number_null << w | narrow_null << n) << bits;
            }
            Packer::TwoWords => {
                let (a, a_null) = Self::field_of(flow, &self.places[0]);
                let (b, b_null) = Self::field_of(flow, &self.places[1]);
                out[0] = a as u64;
                out[1] = b as u64;
                out[2] = a_null | b_null << 1;
            }
            Packer::TwoIpv4 => {
                let (a, a_null) = Self::field_of(flow, &self.places[0]);
                let (b, b_null) = Self::field_of(flow, &self.places[1]);
                out[0] = (a as u64 & low_bits(32)) | (b as u64 & low_bits(32)) << 32;
                out[1] = a_null | b_null << 1;
            }
            Packer::TwoIpv4AndWord { a, b, number } => {
                let (a, b, w) = (a as usize, b as usize, number as usize);
                let (x, x_null) = Self::field_of(flow, &self.places[a]);
                let (y, y_null) = Self::field_of(flow, &self.places[b]);
                let (number, number_null) = Self::field_of(flow, &self.places[w]);
                out[0] = number as u64;
                out[1] = (x as u64 & low_bits(32)) | (y as u64 & low_bits(32)) << 32;
                out[2] = x_null << a | y_null << b | number_null << w;
            }
            Packer::WideAndWord { wide } => {
                let (w, n) = (wide as usize, 1 - wide as usize);
                let (wide, wide_null) = Self::field_of(flow, &self.places[w]);
                let (number, number_null) = Self::field_of(flow, &self.places[n]);
                // In key order: the first field's words first.
                let (lo, hi, number_word) = if w == 0 { (0, 1, 2) } else { (1, 2, 0) };
                out[lo] = wide as u64;
                out[hi] = (wide >> 64) as u64;
                out[number_word] = number as u64;
                out[3] = wide_null << w | number_null << n;
            }
            Packer::TwoWide => {
                let (a, a_null) = Self::field_of(flow, &self.places[0]);
                let (b, b_null) = Self::field_of(flow, &self.places[1]);
                out[0] = a as u64;
                out[1] = (a >> 64) as u64;
                out[2] = b as u64;
                out[3] = (b >> 64) as u64;
                out[4] = a_null | b_null << 1;
            }
            Packer::Places => self.pack_places(flow, out, self.len()),
            Packer::Extended => {
                // The key extended, then what the extension adds (its last place's value or
                // NULL bit, and the mark).
                self.pack_places(flow, out, self.len() - 1);
                out[self.nulls_word] |= self.extension().expect("an extended layout").bits(flow);
            }
        }
    }

    /// A field's value in a flow (0 when absent) and its NULL bit (1 when absent).
    #[inline(always)]
    fn field_of(flow: &Flow, p: &Place) -> (u128, u64) {
        if flow.present_mask() & p.present != 0 {
            (flow.stored_value(p.id as usize), 0)
        } else {
            (0, 1)
        }
    }

    /// [`KeyLayout::pack`] for any layout: each place in turn (the first `n`). No word is
    /// cleared first: a shared word's field at bit 0 (the first placed there, so the first in
    /// key order) overwrites it, the others are or-ed in.
    #[inline(always)]
    fn pack_places<const N: usize>(&self, flow: &Flow, out: &mut [u64; N], n: usize) {
        let mut nulls = 0u64;
        let present = flow.present_mask();
        for (i, p) in self.places[..n].iter().enumerate() {
            let v = if present & p.present != 0 {
                flow.stored_value(p.id as usize)
            } else {
                nulls |= 1 << i;
                0
            };
            Self::put(out, p, v);
        }
        if self.nulls_shift == 0 {
            out[self.nulls_word] = nulls;
        } else {
            out[self.nulls_word] |= nulls << self.nulls_shift;
        }
    }

    /// Writes one field's value (see [`KeyLayout::pack_places`] for the order).
    #[inline(always)]
    fn put(out: &mut [u64], p: &Place, v: u128) {
        match p.bits {
            128 => {
                out[p.word] = v as u64;
                out[p.word + 1] = (v >> 64) as u64;
            }
            64 => out[p.word] = v as u64,
            bits => {
                let x = (v as u64 & low_bits(bits)) << p.shift;
                if p.shift == 0 {
                    out[p.word] = x;
                } else {
                    out[p.word] |= x;
                }
            }
        }
    }

    /// The i-th key value of packed words, `None` for NULL.
    #[inline]
    pub fn value(&self, words: &[u64], i: usize) -> Option<u128> {
        if words[self.nulls_word] >> (self.nulls_shift + i as u32) & 1 != 0 {
            return None;
        }
        let p = &self.places()[i];
        Some(match p.bits {
            128 => words[p.word] as u128 | (words[p.word + 1] as u128) << 64,
            64 => words[p.word] as u128,
            bits => (words[p.word] >> p.shift & low_bits(bits)) as u128,
        })
    }

    /// Unpacks into an export row key.
    pub fn unpack(&self, words: &[u64]) -> Key {
        Key((0..self.len()).map(|i| self.value(words, i)).collect())
    }

    /// Packs explicit values (tests, limits files). The NULL bits go in last: a field placed
    /// at bit 0 of their word overwrites it.
    pub fn pack_values(&self, vals: &[Option<u128>]) -> [u64; MAX_WORDS] {
        let mut out = [0u64; MAX_WORDS];
        let mut nulls = 0u64;
        for (i, (v, p)) in vals.iter().zip(self.places()).enumerate() {
            Self::put(&mut out, p, v.unwrap_or(0));
            if v.is_none() {
                nulls |= 1 << i;
            }
        }
        out[self.nulls_word] |= nulls << self.nulls_shift | self.mark;
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
fn export_sized<const N: usize, const A: usize>(spec: &FwmSpec, map: &mut PackedTable<N, A>) -> Vec<(Key, Aggs)> {
    let mut v: Vec<([u64; N], Aggs)> = map.rows().collect();
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
    ($($variant:ident = $n:literal words, $a:literal sums;)*) => {
        /// A window's rows: packed key -> sums, in a map sized to the key and the sums.
        // The variants differ in size by their inline insertion queue; there is one map per
        // window and worker, and boxing it would add an indirection to every flow.
        #[allow(clippy::large_enum_variant)]
        pub enum RowMap { $($variant(PackedTable<$n, $a>),)* }

        impl RowMap {
            /// An empty map for keys of `words` words and `sums` aggregable fields, with room
            /// for `capacity` rows. One field keeps one sum per row, more keep three.
            pub fn new(words: usize, sums: usize, capacity: usize) -> RowMap {
                Self::bounded(words, sums, capacity, usize::MAX, &[0; MAX_WORDS])
            }

            /// [`RowMap::new`] with the slot array bounded to `max_bytes`: once full, new keys'
            /// sums go to the row of the packed key `rest` (see `PackedTable::bounded`).
            pub fn bounded(words: usize, sums: usize, capacity: usize, max_bytes: usize, rest: &[u64; MAX_WORDS]) -> RowMap {
                let kept = if sums <= 1 { 1 } else { 3 };
                $(if words <= $n && kept == $a {
                    let mut r = [0u64; $n];
                    r.copy_from_slice(&rest[..$n]);
                    return RowMap::$variant(PackedTable::bounded(capacity, max_bytes, &r));
                })*
                unreachable!("a key has at most {MAX_WORDS} words")
            }

            /// Additions of new keys summed into the rest row since the map was cleared (the
            /// map was full).
            pub fn folded(&mut self) -> u64 {
                match self { $(RowMap::$variant(m) => m.folded(),)* }
            }

            /// Adds sums to the row of a packed key. Always inlined: the per-flow loop of an
            /// object is one function, and when it grew the compiler once stopped inlining
            /// this into it (the call and its dispatch cost about 200 instructions per flow).
            #[inline(always)]
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

            /// Moves every row of `other` (another worker's piece of the same window) into
            /// this map, its count of folded additions too; `other` is left empty.
            pub fn merge(&mut self, other: &mut RowMap) {
                // Each worker's piece is bounded; their merge is not (it is bounded by them).
                let folded = other.folded();
                match self { $(RowMap::$variant(m) => m.lift_bound(folded),)* }
                match other {
                    $(RowMap::$variant(o) => {
                        for (k, s) in o.rows() {
                            let mut w = [0u64; MAX_WORDS];
                            w[..$n].copy_from_slice(&k);
                            self.add(&w, &s);
                        }
                        o.clear();
                    })*
                }
            }

            /// The rows to export: ordered by the window's fields, limited, with the NULL
            /// remainder row. The map is left empty.
            pub fn export_rows(&mut self, spec: &FwmSpec) -> Vec<(Key, Aggs)> {
                match self {
                    $(RowMap::$variant(m) => {
                        let rows = export_sized(spec, m);
                        m.clear();
                        rows
                    })*
                }
            }

            /// Whether the map's slots are a mapping of their own (big enough for huge pages).
            pub fn is_mapped(&self) -> bool {
                match self { $(RowMap::$variant(m) => m.is_mapped(),)* }
            }

            /// Empties the map, keeping its memory.
            pub fn clear(&mut self) {
                match self { $(RowMap::$variant(m) => m.clear(),)* }
            }

            /// Whether this map, empty, suits a window (of the same fields) expected to hold
            /// `rows` rows (see `PackedTable::suits`).
            pub fn suits(&self, rows: usize) -> bool {
                match self { $(RowMap::$variant(m) => m.suits(rows),)* }
            }
        }

        impl crate::objects::slots::HasSlots for RowMap {
            fn populator(&self) -> Option<crate::objects::slots::Populate> {
                match self { $(RowMap::$variant(m) => m.populator(),)* }
            }
        }
    };
}

row_maps! {
    W1 = 1 words, 3 sums; W2 = 2 words, 3 sums; W3 = 3 words, 3 sums; W4 = 4 words, 3 sums;
    W5 = 5 words, 3 sums; W7 = 7 words, 3 sums; W9 = 9 words, 3 sums; W17 = 17 words, 3 sums;
    W1S1 = 1 words, 1 sums; W2S1 = 2 words, 1 sums; W3S1 = 3 words, 1 sums; W4S1 = 4 words, 1 sums;
    W5S1 = 5 words, 1 sums; W7S1 = 7 words, 1 sums; W9S1 = 9 words, 1 sums; W17S1 = 17 words, 1 sums;
}

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
        // IPv6 address: words 0-1; proto: word 2; IPv4 address and NULL bits share word 3.
        let l = KeyLayout::new(&[FieldId::SrcHost, FieldId::DstHost6, FieldId::Proto]);
        assert_eq!(l.words, 4);
        let mut f = Flow::default();
        f.set(FieldId::SrcHost, 0xff020304);
        f.set(FieldId::Proto, 6);
        let mut w = [7u64; MAX_WORDS];
        l.pack(&f, &mut w);
        assert_eq!(&w[..5], &[0, 0, 6, 0xff020304 | 0b10 << 32, 7], "words past the key untouched");
        assert_eq!(l.unpack(&w), Key(vec![Some(0xff020304), None, Some(6)]));
        assert_eq!(&l.pack_values(&[Some(0xff020304), None, Some(6)])[..4], &w[..4]);
        f.set(FieldId::DstHost6, u128::MAX - 1);
        l.pack(&f, &mut w);
        assert_eq!(l.value(&w, 1), Some(u128::MAX - 1));
        assert_eq!(l.value(&w, 0), Some(0xff020304));
        // The tables' two marks in the last word's top bits stay free.
        assert_eq!(w[3] >> 62, 0);
        assert_eq!(KeyLayout::new(&[]).words, 1);
        assert_eq!(KeyLayout::new(&[FieldId::DstHost]).words, 1);
        assert_eq!(KeyLayout::new(&[FieldId::SrcHost, FieldId::DstHost]).words, 2, "no room for NULL bits beside two");
        assert_eq!(KeyLayout::new(&[FieldId::DstHost, FieldId::Proto]).words, 2);
        assert_eq!(KeyLayout::new(&[FieldId::DevIp; MAX_KEY_FIELDS]).words, MAX_WORDS);
    }

    #[test]
    fn narrow_fields_share_words_and_keep_their_values() {
        use FieldId::*;
        let keys = [SrcHost, DstHost, SrcMac, Proto, BgpNextHop, SrcPort, DstMac, DevIp];
        let l = KeyLayout::new(&keys);
        let vals: Vec<Option<u128>> = keys.iter().enumerate().map(|(i, id)| match key_bits(*id) {
            _ if i == 5 => None,
            32 => Some(0xffff_fff0 + i as u128),
            48 => Some(0xffff_ffff_fff0 + i as u128),
            64 => Some(u64::MAX as u128 - i as u128),
            _ => Some(u128::MAX - i as u128),
        }).collect();
        let w = l.pack_values(&vals);
        assert_eq!(l.unpack(&w), Key(vals.clone()));
        assert_eq!(w[l.words - 1] >> 62, 0);
        let mut f = Flow::default();
        for (id, v) in keys.iter().zip(&vals) {
            if let Some(v) = v {
                f.set(*id, *v);
            }
        }
        let mut packed = [u64::MAX; MAX_WORDS];
        l.pack(&f, &mut packed);
        assert_eq!(&packed[..l.words], &w[..l.words]);
    }

    #[test]
    fn packing_a_flow_agrees_with_packing_its_values() {
        // Random layouts of every kind of field (and a field flows never store: always NULL),
        // random values, some absent, packed over words left from an earlier key.
        use FieldId::*;
        let pool = [SrcHost, DstHost6, SrcMac, Proto, SrcPort, DevIp, DstHost, DstMac, NextHop];
        let mut next = crate::testrand::words(0x9e37_79b9_7f4a_7c15);
        let width = |id: &FieldId| if key_bits(*id) == 128 { u128::MAX } else { (1u128 << key_bits(*id)) - 1 };
        let mut packers = std::collections::HashSet::new();
        let mut extended = 0;
        for _ in 0..4000 {
            // Half of the keys of up to three fields: the shapes with packers of their own.
            let fields = if next().is_multiple_of(2) { next() % 4 } else { 1 + next() % MAX_KEY_FIELDS as u64 };
            let keys: Vec<FieldId> = (0..fields).map(|_| pool[next() as usize % pool.len()]).collect();
            let l = KeyLayout::new(&keys);
            packers.insert(format!("{:?}", l.packer));
            let mut f = Flow::default();
            for &id in &keys {
                let v = (next() as u128) << 64 | next() as u128;
                // Mostly of the field's width; some wider (a key keeps the low bits).
                let v = if next().is_multiple_of(8) { v } else { v & width(&id) };
                if id.is_stored() && !next().is_multiple_of(4) {
                    f.set(id, v);
                }
            }
            let vals: Vec<Option<u128>> = keys.iter().map(|id| f.get(*id).map(|v| v & width(id))).collect();
            let mut packed = [next(); MAX_WORDS];
            let rest = packed[l.words..].to_vec();
            l.pack(&f, &mut packed);
            assert_eq!(&packed[..l.words], &l.pack_values(&vals)[..l.words], "{keys:?} {vals:?}");
            assert_eq!(&packed[l.words..], &rest[..], "words past the key untouched");
            assert_eq!(l.unpack(&packed), Key(vals.clone()));
            extended += extended_agrees(&l, &mut f, vals, &packed[..l.words], &mut next) as usize;
        }
        assert_eq!(packers.len(), 15, "every packer tried, in every key order: {packers:?}");
        assert!(extended > 1000, "keys extended: {extended}");
    }

    /// Extends `l` (which packed flow `f`'s `vals` as `packed`) by a random 8-bit field, and
    /// checks the extended key: `l`'s key with the extension's bits or-ed in, the same values
    /// and the extra one (its low bits), and `l`'s key again with the extension masked off.
    /// Returns whether `l` could be extended.
    fn extended_agrees(l: &KeyLayout, f: &mut Flow, mut vals: Vec<Option<u128>>, packed: &[u64], next: &mut impl FnMut() -> u64) -> bool {
        use FieldId::*;
        // (Not one of the key's fields: the flow's value of it is set here.)
        let Some(&extra) = [Proto, SrcTos, DstTos, MaxTtl, Direction].iter().cycle().skip(next() as usize % 5).take(5).find(|id| !l.places().iter().any(|p| p.id == **id)) else { return false };
        let Some(e) = l.extended(extra) else {
            // No room: a MAC address in the last word, or too many fields.
            let last = l.places().iter().filter(|p| p.word == l.nulls_word).map(|p| p.shift + p.bits).max().unwrap_or(0);
            assert!(last.max(l.nulls_shift + l.len() as u32) + 1 + 8 > 63 - TABLE_BITS || l.len() == MAX_KEY_FIELDS, "{l:?}");
            return false;
        };
        let bits = e.places[l.len()].bits;
        assert_eq!(bits, 8);
        // Mostly of the field's width, some too wide (cut to the bits kept).
        let v = if next().is_multiple_of(8) { next() as u128 } else { next() as u128 & 0xff };
        let present = !next().is_multiple_of(4);
        if present {
            f.set(extra, v);
        } else {
            *f = {
                let mut g = Flow::default();
                for (p, val) in l.places().iter().zip(&vals) {
                    if let Some(val) = val.filter(|_| p.id.is_stored()) {
                        g.set(p.id, val);
                    }
                }
                g
            };
        }
        vals.push(present.then_some(v & low_bits(bits) as u128));
        let mut out = [0u64; MAX_WORDS];
        e.pack(f, &mut out);
        let words = e.words;
        assert_eq!(words, l.words);
        assert_eq!(&out[..words], &e.pack_values(&vals)[..words], "{vals:?}");
        assert_eq!(&out[..words - 1], &packed[..words - 1]);
        assert_eq!(out[words - 1], packed[words - 1] | e.extension().unwrap().bits(f), "the extension's bits make the key");
        assert_eq!(out[words - 1] & !e.extension_mask(), packed[words - 1], "and masked off give the key extended");
        assert_ne!(out[words - 1] & NESTED_MARK, 0);
        assert_eq!(e.unpack(&out), Key(vals));
        true
    }

    #[test]
    fn common_keys_are_packed_in_a_straight_line() {
        use FieldId::*;
        let packer = |keys: &[FieldId]| KeyLayout::new(keys).packer;
        assert_eq!(packer(&[]), Packer::Empty);
        assert_eq!(packer(&[DstHost]), Packer::OneNarrow);
        assert_eq!(packer(&[SrcMac]), Packer::OneNarrow);
        assert_eq!(packer(&[Proto]), Packer::OneWord);
        assert_eq!(packer(&[SrcHost6]), Packer::OneWide);
        assert_eq!(packer(&[DstHost, Proto]), Packer::WordAndNarrow { number: 1 });
        assert_eq!(packer(&[DstPort, SrcHost]), Packer::WordAndNarrow { number: 0 });
        assert_eq!(packer(&[SrcPort, DstPort]), Packer::TwoWords);
        assert_eq!(packer(&[SrcHost, DstHost]), Packer::TwoIpv4);
        assert_eq!(packer(&[SrcHost, DstHost, Proto]), Packer::TwoIpv4AndWord { a: 0, b: 1, number: 2 });
        assert_eq!(packer(&[SrcHost, DstPort, DstHost]), Packer::TwoIpv4AndWord { a: 0, b: 2, number: 1 });
        assert_eq!(packer(&[Proto, SrcHost, DstHost]), Packer::TwoIpv4AndWord { a: 1, b: 2, number: 0 });
        assert_eq!(packer(&[SrcHost6, Proto]), Packer::WideAndWord { wide: 0 });
        assert_eq!(packer(&[DstPort, DstHost6]), Packer::WideAndWord { wide: 1 });
        assert_eq!(packer(&[SrcHost6, DstHost6]), Packer::TwoWide);
        // Others go place by place.
        assert_eq!(packer(&[SrcMac, DstMac]), Packer::Places);
        assert_eq!(packer(&[SrcHost6, DstHost6, Proto]), Packer::Places);
        assert_eq!(packer(&[SrcHost, DstHost, Proto, DstPort]), Packer::Places);
    }

    #[test]
    fn maps_sum_and_merge() {
        let l = KeyLayout::new(&[FieldId::DstHost]);
        let mut a = RowMap::new(l.words, 3, 0);
        let mut b = RowMap::new(l.words, 3, 0);
        a.add(&l.pack_values(&[Some(1)]), &[10, 1, 0]);
        a.add(&l.pack_values(&[Some(1)]), &[5, 1, 0]);
        b.add(&l.pack_values(&[Some(1)]), &[1, 1, 0]);
        b.add(&l.pack_values(&[None]), &[2, 1, 0]);
        a.merge(&mut b);
        assert_eq!(a.len(), 2);
        assert!(b.is_empty(), "merged rows leave their piece");
        assert!(matches!(a, RowMap::W1(_)), "one IPv4 address and its NULL bit: one word");
        // One aggregable field: one sum kept per row, the others read as 0.
        let mut one = RowMap::new(l.words, 1, 0);
        assert!(matches!(one, RowMap::W1S1(_)));
        one.add(&l.pack_values(&[Some(1)]), &[10, 0, 0]);
        let mut other = RowMap::new(l.words, 1, 0);
        other.add(&l.pack_values(&[Some(1)]), &[7, 0, 0]);
        other.add(&l.pack_values(&[Some(2)]), &[3, 0, 0]);
        one.merge(&mut other);
        let RowMap::W1S1(mut t) = one else { unreachable!() };
        let mut rows: Vec<_> = t.rows().map(|(k, s)| (l.unpack(&k), s)).collect();
        rows.sort_by_key(|(_, s)| s[0]);
        assert_eq!(rows, vec![(Key(vec![Some(2)]), [3, 0, 0]), (Key(vec![Some(1)]), [17, 0, 0])]);
    }
}
