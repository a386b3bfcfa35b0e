//! NetFlow v5: a fixed 24-byte header and 48-byte records, decoded with a built-in template so
//! that v5 flows take the same data path as v9 and IPFIX ones.

use super::template::{be16, FieldSpec, Template};
use super::{data_records, Datagram, DecodeError, Decoder, FlowContext, FlowSink};
use super::cache::TemplateKey;
use std::sync::LazyLock;

const HEADER: usize = 24;
const RECORD: usize = 48;
/// The v5 format allows at most 30 records per datagram.
const MAX_RECORDS: usize = 30;

/// The v5 record layout as (information element, length); 210 is padding.
const LAYOUT: &[(u16, u16)] = &[
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2),
    (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (210, 2),
];

static V5_TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
    let fields = LAYOUT.iter().map(|&(ie, len)| FieldSpec { ie, pen: 0, len, field: None }).collect();
    Template::compile(fields, 0, false).expect("v5 layout is a valid template")
});

pub(super) fn decode(d: &mut Decoder, dg: &Datagram<'_>, sink: &mut impl FlowSink) {
    let b = dg.bytes;
    if b.len() < HEADER {
        return d.error(DecodeError::ShortHeader);
    }
    let count = be16(b, 2).unwrap_or(0) as usize;
    if count == 0 || count > MAX_RECORDS || b.len() < HEADER + count * RECORD {
        return d.error(DecodeError::BadLength);
    }
    let domain = (b[20] as u32) << 8 | b[21] as u32;
    let sampling = be16(b, 22).unwrap_or(0) & 0x3FFF;
    let announced = (sampling > 1).then_some(sampling as u64);
    let key = TemplateKey { exporter: dg.exporter, domain, id: 0 };
    let rate = d.devices.rate(dg.exporter, domain, announced);
    let ctx = FlowContext { version: 5, key, rate, time_ms: dg.time_ms };
    let body = &b[HEADER..HEADER + count * RECORD];
    let (n, _) = data_records(&V5_TEMPLATE, body, &mut d.flow, &ctx, &mut d.stats.octets, sink);
    d.stats.flows += n;
}
