//! IPFIX (RFC 7011): messages with a 16-byte header carrying their own length (several may share
//! one datagram), then sets: templates (2), options templates (3) and data (>= 256).

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
        d.sets(Wire::Ipfix, dg, be32(msg, 12).unwrap_or(0), &msg[HEADER..len], sink);
        start += len;
    }
    if start == 0 {
        d.error(DecodeError::ShortHeader);
    }
}

