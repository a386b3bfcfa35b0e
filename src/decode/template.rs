//! Templates: parsing v9/IPFIX template records, and decoding data records with them.
//!
//! A template is compiled once when it arrives: each element is bound to its flow slot from the
//! field table, and the minimal record length is computed. Decoding a data record then walks
//! the element list, copies each bound value into the flow and skips the rest; records of a
//! fixed-length template use precomputed offsets. NetFlow v5 uses the same machinery through a
//! built-in template, so every version takes one data path.

use crate::fields::{self, FieldId, Kind};
use crate::flow::Flow;

/// Length marker of an IPFIX variable-length element (RFC 7011 §7).
pub const VARLEN: u16 = 0xFFFF;

/// One element of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Information element number (without the enterprise bit).
    pub ie: u16,
    /// Private enterprise number; 0 for IANA elements.
    pub pen: u32,
    /// Length in bytes, or [`VARLEN`].
    pub len: u16,
    /// The flow slot this element fills, if any.
    pub field: Option<FieldId>,
}

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub fields: Vec<FieldSpec>,
    /// Number of leading scope elements (options templates only).
    pub scope_count: u16,
    pub is_options: bool,
    /// Shortest possible record (every variable-length element empty).
    pub min_len: usize,
    /// `Some(len)` when no element has a variable length.
    pub fixed_len: Option<usize>,
    /// For fixed-length templates: (offset, length, slot) of each bound element.
    ops: Vec<(u16, u16, FieldId)>,
    /// The slots `ops` fill, as a presence mask.
    ops_mask: u64,
}

/// Why a template record was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    Truncated,
    /// A template whose records would take no bytes: data could never be delimited.
    EmptyRecord,
    TooManyFields,
}

/// Upper bound on elements per template (a v9/IPFIX set is at most 65535 bytes anyway).
const MAX_FIELDS: usize = 1024;

impl Template {
    /// Compiles a template from its element list, binding each element to its flow slot.
    pub fn compile(mut fields: Vec<FieldSpec>, scope_count: u16, is_options: bool) -> Result<Self, TemplateError> {
        if fields.len() > MAX_FIELDS {
            return Err(TemplateError::TooManyFields);
        }
        let mut bound = 0u64;
        // Primary elements first, so an alias (total counts) only binds a slot nobody else fills.
        for f in fields.iter_mut() {
            f.field = None;
            if f.pen == 0 {
                if let Some(id) = fields::by_ie(f.ie).filter(|d| d.stored).map(|d| d.id) {
                    if bound & (1 << id as u32) == 0 {
                        bound |= 1 << id as u32;
                        f.field = Some(id);
                    }
                }
            }
        }
        for f in fields.iter_mut().filter(|f| f.pen == 0 && f.field.is_none()) {
            if let Some(id) = fields::stored_for_ie(f.ie) {
                if bound & (1 << id as u32) == 0 {
                    bound |= 1 << id as u32;
                    f.field = Some(id);
                }
            }
        }
        let min_len: usize = fields.iter().map(|f| if f.len == VARLEN { 1 } else { f.len as usize }).sum();
        if min_len == 0 {
            return Err(TemplateError::EmptyRecord);
        }
        let fixed = fields.iter().all(|f| f.len != VARLEN);
        let mut ops = Vec::new();
        if fixed {
            let mut off = 0usize;
            for f in &fields {
                if let Some(id) = f.field.filter(|id| value_fits(id.def().kind, f.len)) {
                    ops.push((off as u16, f.len, id));
                }
                off += f.len as usize;
            }
        }
        let ops_mask = ops.iter().fold(0u64, |m, &(_, _, id)| m | 1 << id as u32);
        Ok(Template { fields, scope_count, is_options, min_len, fixed_len: fixed.then_some(min_len), ops, ops_mask })
    }

    /// Decodes one data record at the start of `data` into `flow` (which the caller cleared).
    /// Returns the record's length, or `None` when the record is cut short.
    #[inline]
    pub fn decode_record(&self, data: &[u8], flow: &mut Flow) -> Option<usize> {
        if let Some(len) = self.fixed_len {
            let rec = data.get(..len)?;
            for &(off, l, id) in &self.ops {
                let (off, l) = (off as usize, l as usize);
                debug_assert!((1..=16).contains(&l) && off + l <= rec.len());
                let value = if l <= 8 && off + 8 <= data.len() {
                    // Eight bytes from the element's start (the rest is the next elements or
                    // records), the element's own bytes shifted down: no branch on its length,
                    // which changes from element to element.
                    // SAFETY: `off + 8 <= data.len()` was just checked.
                    let word = unsafe { data.get_unchecked(off..off + 8) };
                    (u64::from_be_bytes(word.try_into().expect("eight bytes")) >> (64 - 8 * l)) as u128
                } else {
                    // SAFETY: compile() built `ops` from the element lengths, so every element
                    // lies within the first `fixed_len` bytes, and `rec` has exactly that length.
                    read_be(unsafe { rec.get_unchecked(off..off + l) })
                };
                flow.put(id, value);
            }
            flow.mark(self.ops_mask);
            return Some(len);
        }
        let mut pos = 0usize;
        for f in &self.fields {
            let (start, len) = element_bounds(data, pos, f.len)?;
            if let Some(id) = f.field.filter(|id| value_fits(id.def().kind, len as u16)) {
                flow.set(id, read_be(&data[start..start + len]));
            }
            pos = start + len;
        }
        Some(pos)
    }

    /// Walks the elements of one record: `(spec, value bytes)` pairs, for printing and options.
    pub fn elements<'a>(&'a self, record: &'a [u8]) -> Elements<'a> {
        Elements { fields: &self.fields, data: record, pos: 0, idx: 0 }
    }
}

/// Iterator over the elements of one record.
pub struct Elements<'a> {
    fields: &'a [FieldSpec],
    data: &'a [u8],
    pos: usize,
    idx: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = (&'a FieldSpec, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let f = self.fields.get(self.idx)?;
        let (start, len) = element_bounds(self.data, self.pos, f.len)?;
        self.idx += 1;
        self.pos = start + len;
        Some((f, &self.data[start..start + len]))
    }
}

/// Start and length of an element at `pos`, resolving the IPFIX variable-length prefix.
#[inline]
fn element_bounds(data: &[u8], pos: usize, len: u16) -> Option<(usize, usize)> {
    let (start, len) = if len == VARLEN {
        let first = *data.get(pos)?;
        if first == 255 {
            let b = data.get(pos + 1..pos + 3)?;
            (pos + 3, u16::from_be_bytes([b[0], b[1]]) as usize)
        } else {
            (pos + 1, first as usize)
        }
    } else {
        (pos, len as usize)
    };
    if start + len > data.len() {
        return None;
    }
    Some((start, len))
}

/// Whether a value of `len` bytes can be stored for a field of this kind. Addresses must have
/// their exact size; numbers may use reduced-size encoding (RFC 7011 §6.2) up to 16 bytes.
#[inline]
fn value_fits(kind: Kind, len: u16) -> bool {
    match kind {
        Kind::Ipv4 => len == 4,
        Kind::Ipv6 => len == 16,
        Kind::Mac => len == 6,
        Kind::Addr => false,
        Kind::Uint | Kind::Counter => (1..=16).contains(&len),
    }
}

/// Big-endian unsigned value of up to 16 bytes.
#[inline]
pub fn read_be(b: &[u8]) -> u128 {
    match b.len() {
        1 => b[0] as u128,
        2 => u16::from_be_bytes([b[0], b[1]]) as u128,
        4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u128,
        8 => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as u128,
        _ => b.iter().take(16).fold(0u128, |acc, &x| (acc << 8) | x as u128),
    }
}

/// Reads a big-endian u16 at `pos`.
#[inline]
pub fn be16(b: &[u8], pos: usize) -> Option<u16> {
    b.get(pos..pos + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Reads a big-endian u32 at `pos`.
#[inline]
pub fn be32(b: &[u8], pos: usize) -> Option<u32> {
    b.get(pos..pos + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Which wire format a template record is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    V9,
    Ipfix,
}

/// A parsed template record: its id and either a template or a withdrawal.
#[derive(Debug)]
pub struct TemplateRecord {
    pub id: u16,
    /// `None` for an IPFIX withdrawal (field count 0).
    pub template: Option<Result<Template, TemplateError>>,
    /// Bytes of the record as received, kept for persistence.
    pub raw_len: usize,
}

/// Parses one template or options-template record at the start of `b`.
/// Returns `None` when not even the record header fits (end of set or padding).
pub fn parse_template_record(wire: Wire, options: bool, b: &[u8]) -> Option<TemplateRecord> {
    let head = record_head(wire, options, b)?;
    let Some(n) = head.specs else {
        return Some(TemplateRecord { id: head.id, template: None, raw_len: 4 });
    };
    let mut fields = Vec::with_capacity(n.min(MAX_FIELDS));
    let Some(used) = walk_specs(wire, b, head.start, n, |f| fields.push(f)) else {
        return Some(TemplateRecord { id: head.id, template: Some(Err(TemplateError::Truncated)), raw_len: b.len() });
    };
    Some(TemplateRecord { id: head.id, template: Some(Template::compile(fields, head.scope, options)), raw_len: used })
}

/// A template record complete at the start of `b` (not a withdrawal): its id and length,
/// found without building anything, so that a template resent unchanged (exporters resend
/// theirs every few datagrams) costs a byte comparison and no allocation.
pub fn template_extent(wire: Wire, options: bool, b: &[u8]) -> Option<(u16, usize)> {
    let head = record_head(wire, options, b)?;
    let end = walk_specs(wire, b, head.start, head.specs?, |_| {})?;
    Some((head.id, end))
}

/// The fixed part of a template record.
struct RecordHead {
    id: u16,
    /// Where the element specifiers start.
    start: usize,
    /// How many there are; `None` for an IPFIX withdrawal (field count 0).
    specs: Option<usize>,
    /// Scope fields of an options template.
    scope: u16,
}

/// Reads the fixed part of a record; `None` when it does not fit.
fn record_head(wire: Wire, options: bool, b: &[u8]) -> Option<RecordHead> {
    let id = be16(b, 0)?;
    let count = be16(b, 2)?;
    Some(match (wire, options) {
        (Wire::Ipfix, _) if count == 0 => RecordHead { id, start: 4, specs: None, scope: 0 },
        (_, false) => RecordHead { id, start: 4, specs: Some(count as usize), scope: 0 },
        (Wire::V9, true) => {
            // v9 options template: scope length and option length are in bytes (RFC 3954 §6.1).
            let (scope_len, opt_len) = (count as usize, be16(b, 4)? as usize);
            RecordHead { id, start: 6, specs: Some(scope_len / 4 + opt_len / 4), scope: (scope_len / 4) as u16 }
        }
        (Wire::Ipfix, true) => RecordHead { id, start: 6, specs: Some(count as usize), scope: be16(b, 4)? },
    })
}

/// Walks `n` element specifiers starting at `pos`, handing each to `each`; returns the end
/// position, or `None` when they do not fit (or are too many).
fn walk_specs(wire: Wire, b: &[u8], mut pos: usize, n: usize, mut each: impl FnMut(FieldSpec)) -> Option<usize> {
    if n > MAX_FIELDS {
        return None;
    }
    for _ in 0..n {
        let raw_ie = be16(b, pos)?;
        let len = be16(b, pos + 2)?;
        pos += 4;
        let (ie, pen) = if wire == Wire::Ipfix && raw_ie & 0x8000 != 0 {
            let pen = be32(b, pos)?;
            pos += 4;
            (raw_ie & 0x7FFF, pen)
        } else {
            (raw_ie, 0)
        };
        each(FieldSpec { ie, pen, len, field: None });
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ie: u16, len: u16) -> FieldSpec {
        FieldSpec { ie, pen: 0, len, field: None }
    }

    #[test]
    fn fixed_template_binds_and_decodes() {
        let t = Template::compile(vec![spec(8, 4), spec(1, 4), spec(999, 2), spec(4, 1)], 0, false).unwrap();
        assert_eq!(t.fixed_len, Some(11));
        let rec = [10, 0, 0, 1, 0, 0, 1, 0, 0xAA, 0xBB, 17];
        let mut f = Flow::default();
        assert_eq!(t.decode_record(&rec, &mut f), Some(11));
        assert_eq!(f.get(FieldId::SrcHost), Some(0x0A000001));
        assert_eq!(f.get(FieldId::Octets), Some(256));
        assert_eq!(f.get(FieldId::Proto), Some(17));
        assert_eq!(t.decode_record(&rec[..10], &mut f), None);
    }

    #[test]
    fn every_element_length_reads_the_same_with_or_without_bytes_after_the_record() {
        // Counters in reduced-size encoding of 1 to 8 bytes (the eight-byte read), 16 bytes,
        // and an IPv6 address, each followed by a one-byte protocol.
        for l in (1..=8).chain([16]) {
            let t = Template::compile(vec![spec(1, l), spec(27, 16), spec(4, 1)], 0, false).unwrap();
            let mut rec: Vec<u8> = (1..=l as u8).collect();
            rec.extend((0..16).map(|i| 0x20 + i as u8));
            rec.push(6);
            let want = rec[..l as usize].iter().fold(0u128, |a, &b| a << 8 | b as u128);
            let v6 = u128::from_be_bytes(rec[l as usize..l as usize + 16].try_into().unwrap());
            // The record alone, then followed by another record's bytes (the usual case).
            let mut followed = rec.clone();
            followed.extend([0xFF; 24]);
            for data in [&rec[..], &followed[..]] {
                let mut f = Flow::default();
                assert_eq!(t.decode_record(data, &mut f), Some(rec.len()), "{l} bytes");
                assert_eq!(f.get(FieldId::Octets), Some(want), "{l} bytes");
                assert_eq!(f.get(FieldId::SrcHost6), Some(v6), "{l} bytes");
                assert_eq!(f.get(FieldId::Proto), Some(6), "{l} bytes");
            }
        }
    }

    #[test]
    fn variable_length_elements() {
        let t = Template::compile(vec![spec(4, 1), spec(82, VARLEN), spec(7, 2)], 0, false).unwrap();
        assert_eq!(t.min_len, 4);
        let rec = [6, 3, b'e', b't', b'h', 0, 80];
        let mut f = Flow::default();
        assert_eq!(t.decode_record(&rec, &mut f), Some(7));
        assert_eq!(f.get(FieldId::SrcPort), Some(80));
        let els: Vec<_> = t.elements(&rec).map(|(s, v)| (s.ie, v.to_vec())).collect();
        assert_eq!(els[1], (82, b"eth".to_vec()));
        // Three-byte length form.
        let mut long = vec![6, 255, 1, 0];
        long.extend(std::iter::repeat_n(b'x', 256));
        long.extend([0, 22]);
        assert_eq!(t.decode_record(&long, &mut f), Some(long.len()));
        assert_eq!(f.get(FieldId::SrcPort), Some(22));
    }

    #[test]
    fn alias_only_when_primary_absent() {
        let t = Template::compile(vec![spec(85, 8), spec(1, 4)], 0, false).unwrap();
        assert_eq!(t.fields[0].field, None);
        assert_eq!(t.fields[1].field, Some(FieldId::Octets));
        let t = Template::compile(vec![spec(85, 8)], 0, false).unwrap();
        assert_eq!(t.fields[0].field, Some(FieldId::Octets));
    }

    #[test]
    fn zero_length_template_refused() {
        assert_eq!(Template::compile(vec![spec(8, 0)], 0, false), Err(TemplateError::EmptyRecord));
    }

    #[test]
    fn wrong_sized_address_not_stored() {
        let t = Template::compile(vec![spec(8, 2)], 0, false).unwrap();
        let mut f = Flow::default();
        t.decode_record(&[1, 2], &mut f);
        assert_eq!(f.get(FieldId::SrcHost), None);
    }
}
