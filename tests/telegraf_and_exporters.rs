//! Telegraf's NetFlow/IPFIX cases (record counts, spot-checked fields) and softflowd's exports
//! of a capture whose every flow is known (traffic.truth.json): decoded flows must equal the
//! truth exactly.

mod common;

use common::{data_dir, replay, Rec};
use std::collections::BTreeMap;
use xenoeye::config::json::{self, Value};
use xenoeye::fields::FieldId;

/// Fields of one telegraf line-protocol record (`measurement,tags fields timestamp`).
fn telegraf_line(line: &str) -> (String, BTreeMap<String, String>) {
    let (head, rest) = line.split_once(' ').unwrap();
    let measurement = head.split(',').next().unwrap().to_string();
    let mut fields = BTreeMap::new();
    // Split on commas outside quotes.
    let (mut key, mut cur, mut quoted) = (String::new(), String::new(), false);
    for ch in rest.chars() {
        match ch {
            '"' => quoted = !quoted,
            '=' if !quoted && key.is_empty() => key = std::mem::take(&mut cur),
            ',' | ' ' if !quoted => {
                fields.insert(std::mem::take(&mut key), std::mem::take(&mut cur));
                if ch == ' ' {
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    if !key.is_empty() {
        fields.insert(key, cur);
    }
    (measurement, fields)
}

fn flow_value(r: &Rec, name: &str) -> Option<String> {
    let f = r.flow.as_ref()?;
    let id = match name {
        "src" => return f.addr(FieldId::SrcHost).or(f.addr(FieldId::SrcHost6)).map(|a| a.to_string()),
        "dst" => return f.addr(FieldId::DstHost).or(f.addr(FieldId::DstHost6)).map(|a| a.to_string()),
        "src_port" => FieldId::SrcPort,
        "dst_port" => FieldId::DstPort,
        "in_bytes" => FieldId::Octets,
        "in_packets" => FieldId::Packets,
        _ => return None,
    };
    f.get(id).map(|v| v.to_string())
}

#[test]
fn telegraf_cases() {
    let dir = data_dir().join("telegraf");
    let cases = [
        "ipfix_example", "ipfix_options", "ipfix_pen_35632", "issue_13305", "netflow_v5_example",
        "netflow_v9_example", "netflow_v9_options",
    ];
    let mut checked = 0;
    for case in cases {
        let expected = std::fs::read_to_string(dir.join(format!("expected/{case}/expected.out"))).unwrap();
        let lines: Vec<_> = expected.lines().filter(|l| !l.trim().is_empty()).map(telegraf_line).collect();
        let (rec, dec) = replay(&[dir.join(format!("cases/{case}.pcap"))]);
        assert_eq!(rec.recs.len(), lines.len(), "{case}: record count ({:?})", dec.stats);
        assert_eq!(dec.stats.total_errors(), 0, "{case}");
        for (i, (measurement, fields)) in lines.iter().enumerate() {
            assert_eq!(rec.recs[i].flow.is_some(), measurement == "netflow", "{case}#{i}: data or options");
            if measurement != "netflow" {
                continue; // options records are not flows (telegraf names their scope "in_bytes")
            }
            for name in ["src", "dst", "src_port", "dst_port", "in_bytes", "in_packets"] {
                if let Some(want) = fields.get(name) {
                    let want = want.trim_end_matches('u');
                    assert_eq!(flow_value(&rec.recs[i], name).as_deref(), Some(want), "{case}#{i}: {name}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 236, "only {checked} values compared");
}

/// (src, dst, sport, dport, proto) -> (packets, bytes, tcp flags, records)
type Totals = BTreeMap<(String, String, u128, u128, u128), (u128, u128, u128, usize)>;

fn truth(ipv4_only: bool) -> Totals {
    let path = data_dir().join("exporters/traffic.truth.json");
    let root = json::parse_file(&path).unwrap();
    let mut t = Totals::new();
    for f in root.get("flows").unwrap().as_array(&path, "").unwrap() {
        let s = |k: &str| match &f.get(k).unwrap().value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.clone(),
            v => panic!("{v:?}"),
        };
        let n = |k: &str| s(k).parse::<u128>().unwrap();
        if ipv4_only && n("ipver") != 4 {
            continue;
        }
        let e = t.entry((s("src"), s("dst"), n("sport"), n("dport"), n("proto"))).or_default();
        e.0 += n("packets");
        e.1 += n("bytes");
        e.2 |= n("tcp_flags");
        e.3 += 1;
    }
    t
}

fn decoded(capture: &str) -> Totals {
    let (rec, dec) = replay(&[data_dir().join("exporters").join(capture)]);
    assert_eq!(dec.stats.total_errors(), 0, "{capture}: {:?}", dec.stats);
    let mut t = Totals::new();
    for r in rec.recs.iter().filter(|r| r.flow.is_some()) {
        let f = r.flow.as_ref().unwrap();
        let addr = |a: FieldId, b: FieldId| f.addr(a).or(f.addr(b)).unwrap().to_string();
        let proto = f.get(FieldId::Proto).unwrap();
        let mut dport = f.get_or_zero(FieldId::DstPort);
        if (proto == 1 || proto == 58) && dport == 0 {
            // ICMP type and code: v9/IPFIX carry them in element 32 (v4) or 139 (v6).
            dport = r.element(32).or(r.element(139)).map(xenoeye::decode::template::read_be).unwrap_or(0);
        }
        let key = (addr(FieldId::SrcHost, FieldId::SrcHost6), addr(FieldId::DstHost, FieldId::DstHost6),
                   f.get_or_zero(FieldId::SrcPort), dport, proto);
        let e = t.entry(key).or_default();
        e.0 += f.get(FieldId::Packets).unwrap();
        e.1 += f.get(FieldId::Octets).unwrap();
        e.2 |= f.get_or_zero(FieldId::TcpFlags);
        e.3 += 1;
    }
    t
}

fn assert_equal_to_truth(capture: &str, ipv4_only: bool) {
    let want = truth(ipv4_only);
    let got = decoded(capture);
    for (k, w) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("{capture}: flow {k:?} missing"));
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{capture}: flow {k:?} packets, bytes, flags");
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{capture}: flows not in the truth: {extra:?}");
}

#[test]
fn softflowd_netflow5_equals_truth() {
    // NetFlow v5 cannot carry IPv6: softflowd exports only the IPv4 flows.
    assert_eq!(truth(true).len(), 76);
    assert_equal_to_truth("softflowd-v5.pcap", true);
}

#[test]
fn softflowd_netflow9_equals_truth() {
    assert_eq!(truth(false).len(), 100);
    assert_equal_to_truth("softflowd-v9.pcap", false);
}

#[test]
fn softflowd_ipfix_equals_truth() {
    assert_equal_to_truth("softflowd-v10.pcap", false);
}
