//! Link-layer parsing for pcap sources: from a captured frame to the UDP payload and the
//! sender's address. Handles Ethernet (with VLAN tags), Linux cooked capture v1/v2, raw IP and
//! BSD loopback framing, IPv4 (unfragmented) and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A UDP datagram found in a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src: IpAddr,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// pcap link types we understand.
pub const DLT_NULL: i32 = 0;
pub const DLT_EN10MB: i32 = 1;
pub const DLT_RAW: i32 = 101;
pub const DLT_RAW_BSD: i32 = 12;
pub const DLT_LOOP: i32 = 108;
pub const DLT_LINUX_SLL: i32 = 113;
pub const DLT_LINUX_SLL2: i32 = 276;

/// Extracts the UDP payload of a frame, or `None` for anything else (other protocols, IPv4
/// fragments, truncated frames).
pub fn udp_payload(linktype: i32, frame: &[u8]) -> Option<Udp<'_>> {
    let (ethertype, ip) = match linktype {
        DLT_EN10MB => ethernet(frame)?,
        DLT_LINUX_SLL => (u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]), frame.get(16..)?),
        DLT_LINUX_SLL2 => (u16::from_be_bytes([*frame.first()?, *frame.get(1)?]), frame.get(20..)?),
        DLT_RAW | DLT_RAW_BSD => (0, frame),
        DLT_NULL | DLT_LOOP => (0, frame.get(4..)?),
        _ => return None,
    };
    match (ethertype, ip.first()? >> 4) {
        (0x0800 | 0, 4) => ipv4(ip),
        (0x86DD | 0, 6) => ipv6(ip),
        _ => None,
    }
}

fn ethernet(f: &[u8]) -> Option<(u16, &[u8])> {
    let mut pos = 12;
    let mut et = u16::from_be_bytes([*f.get(pos)?, *f.get(pos + 1)?]);
    while et == 0x8100 || et == 0x88A8 {
        pos += 4;
        et = u16::from_be_bytes([*f.get(pos)?, *f.get(pos + 1)?]);
    }
    Some((et, f.get(pos + 2..)?))
}

fn ipv4(p: &[u8]) -> Option<Udp<'_>> {
    let ihl = (p.first()? & 0x0F) as usize * 4;
    let total = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]) as usize;
    let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
    if frag & 0x3FFF != 0 || *p.get(9)? != 17 || ihl < 20 {
        return None; // fragment (more-fragments flag or offset) or not UDP
    }
    let a = p.get(12..16)?;
    let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    let end = total.min(p.len());
    udp(IpAddr::V4(src), p.get(ihl..end)?)
}

fn ipv6(p: &[u8]) -> Option<Udp<'_>> {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(p.get(8..24)?).ok()?);
    let plen = u16::from_be_bytes([*p.get(4)?, *p.get(5)?]) as usize;
    let mut next = *p.get(6)?;
    let mut pos = 40;
    // Skip hop-by-hop, routing and destination options headers.
    while matches!(next, 0 | 43 | 60) {
        next = *p.get(pos)?;
        pos += (*p.get(pos + 1)? as usize + 1) * 8;
    }
    if next != 17 {
        return None;
    }
    let end = (40 + plen).min(p.len());
    udp(IpAddr::V6(src), p.get(pos..end)?)
}

fn udp(src: IpAddr, u: &[u8]) -> Option<Udp<'_>> {
    let dst_port = u16::from_be_bytes([*u.get(2)?, *u.get(3)?]);
    let len = u16::from_be_bytes([*u.get(4)?, *u.get(5)?]) as usize;
    let end = if len >= 8 { len.min(u.len()) } else { u.len() };
    Some(Udp { src, dst_port, payload: u.get(8..end)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_vlan_ipv4_udp() {
        let mut f = vec![0u8; 12];
        f.extend([0x81, 0x00, 0, 5, 0x08, 0x00]);
        let ip = [0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        f.extend(ip);
        f.extend([0x12, 0x34, 0x08, 0x07, 0, 12, 0, 0, 1, 2, 3, 4]);
        let u = udp_payload(DLT_EN10MB, &f).unwrap();
        assert_eq!(u.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(u.dst_port, 2055);
        assert_eq!(u.payload, &[1, 2, 3, 4]);
        // A fragment is refused.
        let mut frag = f.clone();
        frag[18 + 6] = 0x20; // more-fragments flag
        assert_eq!(udp_payload(DLT_EN10MB, &frag), None);
        assert_eq!(udp_payload(DLT_EN10MB, &f[..30]), None);
    }
}
