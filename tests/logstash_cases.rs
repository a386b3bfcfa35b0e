//! Every case of logstash-codec-netflow's test suite (50 vendor captures): record counts and
//! golden field values against our decoding of the same captures.
//!
//! Logstash names fields after its own definitions; the table below maps each name we compare
//! to its IANA/v9 element and value kind. Vendor enterprise fields, dates that logstash derives
//! from uptime, and header fields (sequence numbers, flowset ids) are not flow fields and are
//! skipped; the test counts and reports what it compared so a shrinking map cannot go unseen.

mod common;

use common::{data_dir, replay, Rec};
use std::net::{Ipv4Addr, Ipv6Addr};
use xenoeye::config::json::{self, Node, Value};
use xenoeye::decode::template::read_be;
use xenoeye::fields::FieldId;

#[derive(Clone, Copy)]
enum K {
    U,
    V4,
    V6,
    Mac,
    Str,
    /// Unix seconds or milliseconds: logstash prints a number or an ISO date, depending.
    Secs,
    Ms,
}

/// logstash field name -> (information element, kind).
const MAP: &[(&str, u16, K)] = &[
    ("in_bytes", 1, K::U), ("octetDeltaCount", 1, K::U), ("in_pkts", 2, K::U), ("packetDeltaCount", 2, K::U),
    ("protocol", 4, K::U), ("protocolIdentifier", 4, K::U), ("src_tos", 5, K::U), ("ipClassOfService", 5, K::U),
    ("tcp_flags", 6, K::U), ("tcpControlBits", 6, K::U), ("l4_src_port", 7, K::U), ("sourceTransportPort", 7, K::U),
    ("ipv4_src_addr", 8, K::V4), ("sourceIPv4Address", 8, K::V4), ("src_mask", 9, K::U),
    ("input_snmp", 10, K::U), ("ingressInterface", 10, K::U), ("l4_dst_port", 11, K::U),
    ("destinationTransportPort", 11, K::U), ("ipv4_dst_addr", 12, K::V4), ("destinationIPv4Address", 12, K::V4),
    ("dst_mask", 13, K::U), ("output_snmp", 14, K::U), ("egressInterface", 14, K::U),
    ("ipv4_next_hop", 15, K::V4), ("ipNextHopIPv4Address", 15, K::V4), ("src_as", 16, K::U),
    ("bgpSourceAsNumber", 16, K::U), ("dst_as", 17, K::U), ("bgpDestinationAsNumber", 17, K::U),
    ("bgp_ipv4_next_hop", 18, K::V4), ("flowEndSysUpTime", 21, K::U), ("flowStartSysUpTime", 22, K::U),
    ("out_bytes", 23, K::U), ("out_pkts", 24, K::U), ("minimumIpTotalLength", 25, K::U),
    ("maximumIpTotalLength", 26, K::U), ("sourceIPv6Address", 27, K::V6), ("destinationIPv6Address", 28, K::V6),
    ("icmpTypeCodeIPv4", 32, K::U), ("samplingInterval", 34, K::U), ("flow_active_timeout", 36, K::U),
    ("flowActiveTimeout", 36, K::U), ("flow_inactive_timeout", 37, K::U), ("flowIdleTimeout", 37, K::U),
    ("total_bytes_exp", 40, K::U), ("total_pkts_exp", 41, K::U), ("exportedMessageTotalCount", 41, K::U),
    ("total_flows_exp", 42, K::U), ("exportedFlowRecordTotalCount", 42, K::U), ("ipv4_src_prefix", 44, K::V4),
    ("flow_sampler_id", 48, K::U), ("maximumTTL", 53, K::U), ("ipv4_ident", 54, K::U),
    ("in_src_mac", 56, K::Mac), ("sourceMacAddress", 56, K::Mac), ("out_dst_mac", 57, K::Mac),
    ("src_vlan", 58, K::U), ("vlanId", 58, K::U), ("dst_vlan", 59, K::U), ("ip_protocol_version", 60, K::U),
    ("ipVersion", 60, K::U), ("direction", 61, K::U), ("flowDirection", 61, K::U),
    ("ipNextHopIPv6Address", 62, K::V6), ("in_dst_mac", 80, K::Mac), ("out_src_mac", 81, K::Mac),
    ("if_desc", 83, K::Str), ("octetTotalCount", 85, K::U), ("in_permanent_bytes", 85, K::U),
    ("packetTotalCount", 86, K::U), ("application_description", 94, K::Str), ("postIpDiffServCodePoint", 98, K::U),
    ("exporterIPv4Address", 130, K::V4), ("exporterIPv6Address", 131, K::V6),
    ("droppedPacketTotalCount", 135, K::U), ("flowEndReason", 136, K::U), ("flow_end_reason", 136, K::U),
    ("observationPointId", 138, K::U), ("meteringProcessId", 143, K::U), ("exportingProcessId", 144, K::U),
    ("wlanSSID", 147, K::Str), ("conn_id", 148, K::U), ("flowId", 148, K::U), ("flowStartSeconds", 150, K::Secs),
    ("flowEndSeconds", 151, K::Secs), ("flowStartMilliseconds", 152, K::Ms), ("flowEndMilliseconds", 153, K::Ms), ("flow_start_msec", 152, K::U), ("systemInitTimeMilliseconds", 160, K::U),
    ("flowDurationMilliseconds", 161, K::U), ("ignoredPacketTotalCount", 164, K::U),
    ("notSentPacketTotalCount", 167, K::U), ("icmp_type", 176, K::U), ("icmp_code", 177, K::U),
    ("udp_dst_port", 181, K::U), ("tcp_src_port", 182, K::U), ("tcpSequenceNumber", 184, K::U),
    ("ip_dscp", 195, K::U), ("ipDiffServCodePoint", 195, K::U), ("ipPrecedence", 196, K::U),
    ("tcpOptions", 209, K::U), ("exportProtocolVersion", 214, K::U), ("exportTransportProtocol", 215, K::U),
    ("xlate_src_addr_ipv4", 225, K::V4), ("postNATSourceIPv4Address", 225, K::V4),
    ("xlate_dst_addr_ipv4", 226, K::V4), ("postNATDestinationIPv4Address", 226, K::V4),
    ("xlate_src_port", 227, K::U), ("xlate_dst_port", 228, K::U), ("fwd_flow_delta_bytes", 231, K::U),
    ("rev_flow_delta_bytes", 232, K::U), ("fw_event", 233, K::U), ("firewallEvent", 233, K::U),
    ("ingressVRFID", 234, K::U), ("egressVRFID", 235, K::U), ("ingressPhysicalInterface", 252, K::U),
    ("egressPhysicalInterface", 253, K::U), ("ethernetType", 256, K::U), ("samplingPacketInterval", 305, K::U),
    ("samplingPacketSpace", 306, K::U), ("selectorAlgorithm", 304, K::U), ("event_time_msec", 323, K::U),
    ("privateEnterpriseNumber", 346, K::U), ("layer2SegmentId", 351, K::U), ("staMacAddress", 365, K::Mac),
    ("staIPv4Address", 366, K::V4), ("wtpMacAddress", 367, K::Mac),
    // Cisco ASA's own numbers for the same fields (NSEL).
    ("xlate_src_addr_ipv4", 40001, K::V4), ("xlate_dst_addr_ipv4", 40002, K::V4),
    ("xlate_src_port", 40003, K::U), ("xlate_dst_port", 40004, K::U), ("fw_event", 40005, K::U),
    // NetFlow v9 calls element 32 (ICMP type and code) icmp_type.
    ("icmp_type", 32, K::U),
];

/// Cases we deliberately decode differently from logstash: (slug, our record count, why).
const DEVIATIONS: &[(&str, usize, &str)] = &[(
    "IPFIX",
    13,
    "the datagram holds three IPFIX messages (484 + 64 + 240 bytes, sequence 6, 7, 12); logstash \
     and tshark read only the first (1 options + 6 data records), we read all three (+1 +5)",
)];

/// ISO 8601 UTC time of unix milliseconds, as logstash prints dates.
fn iso(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    let (h, mi, sec, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{milli:03}Z")
}

fn render(kind: K, v: &[u8], golden_is_text: bool) -> Option<String> {
    Some(match (kind, v.len()) {
        (K::Secs | K::Ms, 1..=8) if golden_is_text => {
            let n = read_be(v) as u64;
            format!("\"{}\"", iso(if matches!(kind, K::Secs) { n * 1000 } else { n }))
        }
        (K::Secs | K::Ms, 1..=8) => read_be(v).to_string(),
        (K::U, 1..=16) => read_be(v).to_string(),
        (K::V4, 4) => format!("\"{}\"", Ipv4Addr::new(v[0], v[1], v[2], v[3])),
        (K::V6, 16) => format!("\"{}\"", Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?)),
        (K::Mac, 6) => format!("\"{}\"", v.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")),
        (K::Str, _) => format!("\"{}\"", String::from_utf8_lossy(v).trim_end_matches('\0')),
        _ => return None,
    })
}

fn golden(n: &Node) -> String {
    match &n.value {
        Value::Number(s) => s.clone(),
        Value::String(s) => format!("\"{s}\""),
        other => format!("{other:?}"),
    }
}

struct Tally {
    compared: usize,
    skipped: std::collections::BTreeSet<String>,
}

fn check_golden(slug: &str, rec: &Rec, event: &Node, tally: &mut Tally) {
    let Some(nf) = event.get("netflow") else { return };
    for (key, value) in nf.members() {
        // A name may stand for several elements (vendors differ); the one the record has counts.
        let mut rows = MAP.iter().filter(|(n, _, _)| *n == key.name).peekable();
        if rows.peek().is_none() {
            tally.skipped.insert(key.name.clone());
            continue;
        }
        let mut ie = 0;
        let mut got = None;
        for &(_, e, kind) in rows {
            if let Some(v) = rec.element(e) {
                (ie, got) = (e, render(kind, v, matches!(value.value, Value::String(_))));
                break;
            }
        }
        assert_eq!(got.as_deref(), Some(golden(value).as_str()), "{slug}: field {} (IE {ie})", key.name);
        tally.compared += 1;
    }
    // The stored flow slots agree with the raw elements.
    if let (Some(flow), Some(v)) = (&rec.flow, nf.get("ipv4_src_addr").or(nf.get("sourceIPv4Address"))) {
        let ip = flow.addr(FieldId::SrcHost).map(|a| format!("\"{a}\""));
        assert_eq!(ip.as_deref(), Some(golden(v).as_str()), "{slug}: src host slot");
    }
    if let (Some(flow), Some(v)) = (&rec.flow, nf.get("in_bytes").or(nf.get("octetDeltaCount"))) {
        // The slot holds the raw count times the sampling rate (the v5 header's, for Juniper).
        let rate = flow.get(FieldId::Rate).unwrap();
        let raw: u128 = golden(v).parse().unwrap();
        assert_eq!(flow.get(FieldId::Octets), Some(raw * rate), "{slug}: octets slot at rate {rate}");
    }
}

#[test]
fn every_logstash_case() {
    let dir = data_dir().join("logstash-codec-netflow");
    let cases = json::parse_file(&dir.join("cases/cases.json")).unwrap();
    let cases = cases.as_array(&dir, "").unwrap();
    assert_eq!(cases.len(), 50);
    let mut tally = Tally { compared: 0, skipped: Default::default() };
    let mut counted = 0;
    for case in cases {
        let slug = match &case.get("slug").unwrap().value {
            Value::String(s) => s.clone(),
            _ => unreachable!(),
        };
        let pcap = dir.join(case.get("pcap").unwrap().as_str(&dir, "pcap").unwrap());
        let (rec, dec) = replay(&[pcap]);
        let recs = &rec.recs;
        if let Some(n) = case.get("expected_event_count").filter(|n| n.value != Value::Null) {
            let mut want = n.as_u64(&dir, "count").unwrap() as usize;
            if let Some((_, ours, why)) = DEVIATIONS.iter().find(|(s, _, _)| *s == slug) {
                eprintln!("{slug}: logstash counts {want}, we decode {ours}: {why}");
                want = *ours;
            }
            assert_eq!(recs.len(), want, "{slug}: record count (decoder stats {:?})", dec.stats);
            counted += 1;
        }
        let events = case.get("golden_events").unwrap().as_array(&dir, "").unwrap();
        for idx in case.get("golden_event_index").unwrap().as_array(&dir, "").unwrap() {
            let d = idx.get("decoded_event").unwrap().as_u64(&dir, "").unwrap() as usize;
            let g = idx.get("golden_events_idx").unwrap().as_u64(&dir, "").unwrap() as usize;
            let r = recs.get(d).unwrap_or_else(|| panic!("{slug}: no record {d} (have {})", recs.len()));
            check_golden(&slug, r, &events[g], &mut tally);
        }
    }
    eprintln!(
        "logstash: {counted} cases with a count, {} golden values compared; skipped fields: {:?}",
        tally.compared, tally.skipped
    );
    assert_eq!(counted, 42);
    assert!(tally.compared >= 748, "compared only {}", tally.compared);
}

#[test]
fn invalid_netflow5_is_counted_not_decoded() {
    let dir = data_dir().join("logstash-codec-netflow/cases");
    for slug in ["Netflow_5_invalid_01", "Netflow_5_invalid_02"] {
        let (rec, dec) = replay(&[dir.join(format!("{slug}.pcap"))]);
        assert!(rec.recs.is_empty(), "{slug}");
        assert!(dec.stats.total_errors() > 0, "{slug}: {:?}", dec.stats);
    }
}
