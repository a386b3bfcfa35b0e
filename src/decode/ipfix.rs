//! IPFIX (RFC 7011): messages with a 16-byte header carrying their own length (several may share
//! one datagram), then sets: templates (2), options templates (3) and data (>= 256).

use super::cache::TemplateKey;
use super::template::{be16, be32, Wire};
use super::{Datagram, DecodeError, Decoder, FlowSink};

const HEADER: usize = 16;

pub(super) fn decode(d: &mut Decoder, dg: &Datagram<'_>, sink: &mut impl FlowSink) {
    let b = dg.bytes;
    let mut start = 0;
    while b.len() - start >= HEADER {
        let msg = &b[start..];
        if be16(msg, 0) != Some(10) {
            return d.error(DecodeError::UnknownVersion);
        }
        let len = be16(msg, 2).unwrap_or(0) as usize;
        if len < HEADER || len > msg.len() {
            return d.error(DecodeError::BadLength);
        }
        message(d, dg, &msg[..len], sink);
        start += len;
    }
    if start == 0 {
        d.error(DecodeError::ShortHeader);
    }
}

fn message(d: &mut Decoder, dg: &Datagram<'_>, m: &[u8], sink: &mut impl FlowSink) {
    let domain = be32(m, 12).unwrap_or(0);
    let mut pos = HEADER;
    while m.len() - pos >= 4 {
        let set_id = be16(m, pos).unwrap_or(0);
        let len = be16(m, pos + 2).unwrap_or(0) as usize;
        if len < 4 || pos + len > m.len() {
            d.error(DecodeError::BadSet);
            return;
        }
        let body = &m[pos + 4..pos + len];
        match set_id {
            2 | 3 => d.template_set(Wire::Ipfix, set_id == 3, dg.exporter, domain, body),
            0..=255 => {} // reserved
            id => d.data_set(10, TemplateKey { exporter: dg.exporter, domain, id }, body, dg.time_ms, sink),
        }
        pos += len;
    }
}

