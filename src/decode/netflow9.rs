//! NetFlow v9 (RFC 3954): a 20-byte header, then flowsets: templates (0), options templates
//! (1) and data (>= 256). The datagram has no length field, so flowsets run to its end.

use super::cache::TemplateKey;
use super::template::{be16, be32, Wire};
use super::{Datagram, DecodeError, Decoder, FlowSink};

const HEADER: usize = 20;

pub(super) fn decode(d: &mut Decoder, dg: &Datagram<'_>, sink: &mut impl FlowSink) {
    let b = dg.bytes;
    if b.len() < HEADER {
        return d.error(DecodeError::ShortHeader);
    }
    let domain = be32(b, 16).unwrap_or(0);
    let mut pos = HEADER;
    while b.len() - pos >= 4 {
        let set_id = be16(b, pos).unwrap_or(0);
        let len = be16(b, pos + 2).unwrap_or(0) as usize;
        if len == 0 && set_id == 0 {
            break; // zero fill after the last flowset (seen from Palo Alto)
        }
        if len < 4 || pos + len > b.len() {
            d.error(DecodeError::BadSet);
            break;
        }
        let body = &b[pos + 4..pos + len];
        match set_id {
            0 | 1 => d.template_set(Wire::V9, set_id == 1, dg.exporter, domain, body),
            2..=255 => {} // reserved
            id => d.data_set(9, TemplateKey { exporter: dg.exporter, domain, id }, body, dg.time_ms, sink),
        }
        pos += len;
    }
}

