//! The decoded flow: one fixed-size record reused for every flow a worker decodes.
//!
//! Every stored field of the table in [`crate::fields`] has a `u128` slot and a presence bit, so
//! filling a flow is a few stores and resetting it is one: no allocation, no map, no strings on
//! the hot path. An IPv4 field on an IPv6 flow is simply absent.

use crate::fields::{FieldId, Kind, FIELD_COUNT};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Value slots of a flow: one per field id of the table, label-only ones included (those are
/// never written), rounded up to 64 so that an index by any `FieldId` needs no bounds check.
const SLOTS: usize = 64;
const _: () = assert!(FIELD_COUNT <= SLOTS);

/// A decoded flow record plus its virtual fields.
#[derive(Clone)]
pub struct Flow {
    present: u64,
    values: [u128; SLOTS],
    /// Collector clock at receipt, unix milliseconds; the capture time when replaying a file.
    pub time_ms: u64,
}

impl Default for Flow {
    fn default() -> Self {
        Flow { present: 0, values: [0; SLOTS], time_ms: 0 }
    }
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for def in crate::fields::FIELDS.iter().filter(|d| self.has(d.id)) {
            m.entry(&def.label, &self.values[def.id as usize]);
        }
        m.finish()
    }
}

impl Flow {
    /// Forgets every field (values stay in memory but are no longer present).
    #[inline]
    pub fn clear(&mut self) {
        self.present = 0;
    }

    #[inline]
    pub fn set(&mut self, id: FieldId, value: u128) {
        debug_assert!(id.is_stored());
        self.values[id as usize] = value;
        self.present |= 1u64 << id as u32;
    }

    /// Stores a value without marking it present; [`Flow::mark`] marks a whole set at once
    /// (the decoder's fast path for fixed-length templates).
    #[inline]
    pub(crate) fn put(&mut self, id: FieldId, value: u128) {
        self.values[id as usize] = value;
    }

    /// Marks the fields of `mask` (bit = field id) present.
    #[inline]
    pub(crate) fn mark(&mut self, mask: u64) {
        self.present |= mask;
    }

    /// Bit `id`: field `id` is present (for code that tests several fields at once).
    #[inline(always)]
    pub(crate) fn present_mask(&self) -> u64 {
        self.present
    }

    /// The value in slot `slot` (a stored field's id), present or not: what an absent field
    /// holds is meaningless.
    #[inline(always)]
    pub(crate) fn stored_value(&self, slot: usize) -> u128 {
        self.values[slot]
    }

    /// Field `id`'s bit in a flow's presence mask ([`Flow::present_mask`]); 0 for a field no
    /// flow stores.
    #[inline(always)]
    pub(crate) fn presence_bit(id: FieldId) -> u64 {
        if id.is_stored() {
            1u64 << id as u32
        } else {
            0
        }
    }

    #[inline]
    pub fn has(&self, id: FieldId) -> bool {
        // Not through `presence_bit`: the branch here costs filters fewer instructions.
        id.is_stored() && self.present & (1u64 << id as u32) != 0
    }

    #[inline]
    pub fn get(&self, id: FieldId) -> Option<u128> {
        if self.has(id) {
            Some(self.values[id as usize])
        } else {
            None
        }
    }

    /// Value of a field, 0 when absent (counters, where absent means nothing was counted).
    #[inline]
    pub fn get_or_zero(&self, id: FieldId) -> u128 {
        self.get(id).unwrap_or(0)
    }

    /// Multiplies a present counter by `factor` (the sampling rate), saturating.
    #[inline]
    pub fn scale(&mut self, id: FieldId, factor: u64) {
        if self.has(id) {
            let v = &mut self.values[id as usize];
            *v = v.saturating_mul(factor as u128);
        }
    }

    /// An address-kind field as an `IpAddr`, for tests and printing.
    pub fn addr(&self, id: FieldId) -> Option<IpAddr> {
        let v = self.get(id)?;
        Some(match id.def().kind {
            Kind::Ipv4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Kind::Ipv6 => IpAddr::V6(Ipv6Addr::from(v)),
            Kind::Addr => addr_from_u128(v),
            _ => return None,
        })
    }
}

/// Stores any address in one 128-bit number (IPv4 as `::ffff:a.b.c.d`).
pub fn addr_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A MAC address as written in filters and limits files, six hex pairs separated by `:` or
/// `-` (`00:1b:21:0a:0b:0c`), as the number a flow stores.
pub fn parse_mac(text: &str) -> Option<u128> {
    let mut v = 0u128;
    let mut parts = 0;
    for part in text.split([':', '-']) {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        v = v << 8 | u8::from_str_radix(part, 16).ok()? as u128;
        parts += 1;
    }
    (parts == 6).then_some(v)
}

/// Inverse of [`addr_to_u128`].
pub fn addr_from_u128(v: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(v);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_are_six_hex_pairs() {
        assert_eq!(parse_mac("00:0c:29:70:86:09"), Some(0x000c_2970_8609));
        assert_eq!(parse_mac("00-0C-29-70-86-9"), Some(0x000c_2970_8609));
        // Seven parts one of which is not hex (was read as the other six in limits files),
        // signs, long parts, empty parts, five parts.
        for bad in ["00:0c:29:70:86:09:zz", "+0:0c:29:70:86:09", "000:0c:29:70:86:09", "00::29:70:86:09", "00:0c:29:70:86", ""] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn set_get_clear() {
        let mut f = Flow::default();
        assert_eq!(f.get(FieldId::Proto), None);
        f.set(FieldId::Proto, 6);
        f.set(FieldId::Octets, 100);
        f.scale(FieldId::Octets, 10);
        f.scale(FieldId::Packets, 10);
        assert_eq!(f.get(FieldId::Proto), Some(6));
        assert_eq!(f.get(FieldId::Octets), Some(1000));
        assert_eq!(f.get(FieldId::Packets), None);
        f.clear();
        assert_eq!(f.get(FieldId::Proto), None);
        assert!(!f.has(FieldId::SrcMask), "info fields are never stored");
    }

    #[test]
    fn addresses_round_trip() {
        for s in ["1.2.3.4", "2001:db8::1", "::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(addr_from_u128(addr_to_u128(ip)), ip);
        }
    }
}
