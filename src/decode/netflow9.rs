//! NetFlow v9 (RFC 3954): a 20-byte header, then flowsets: templates (0), options templates
//! (1) and data (>= 256). The datagram has no length field, so flowsets run to its end.

use super::template::{be32, Wire};
use super::{Datagram, DecodeError, Decoder, FlowSink};

const HEADER: usize = 20;

pub(super) fn decode(d: &mut Decoder, dg: &Datagram<'_>, sink: &mut impl FlowSink) {
    let b = dg.bytes;
    if b.len() < HEADER {
        return d.error(DecodeError::ShortHeader);
    }
    d.sets(Wire::V9, dg, be32(b, 16).unwrap_or(0), &b[HEADER..], sink);
}
