//! Every NetFlow/IPFIX capture the tests hold, decoded by us and by tshark (Wireshark's
//! dissector, an independent decoder): datagram by datagram, the records' elements must hold
//! the same values in the same order (addresses, ports, protocol, counters, interfaces, AS
//! numbers, ToS, TCP flags). The vendor captures' golden values (logstash, telegraf) cover
//! some records; this covers every record tshark decodes, and the captures no other test
//! reads (goflow2's NetFlow cases, the scapy-crafted one).

mod common;

use common::{data_dir, udp_datagrams, CapturedDatagram};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use xenoeye::decode::template::read_be;
use xenoeye::decode::{Datagram, Decoder, FlowSink, RecordView};
use xenoeye::flow::Flow;
use xenoeye::devices::Devices;

/// An IPFIX reverse element (RFC 5103, enterprise 29305) in [`FIELDS`]: tshark shows a
/// biflow's reverse ToS as `cflow.tos` too.
const REVERSE: u32 = 1 << 16;

/// tshark's field -> the information elements it shows (UDP and TCP ports too), and whether
/// they are addresses.
const FIELDS: &[(&str, &[u32], bool)] = &[
    ("cflow.octets", &[1], false),
    ("cflow.packets", &[2], false),
    ("cflow.protocol", &[4], false),
    ("cflow.tos", &[5, REVERSE | 5], false),
    ("cflow.tcpflags", &[6], false),
    ("cflow.srcport", &[7, 180, 182], false),
    ("cflow.srcaddr", &[8], true),
    ("cflow.inputint", &[10], false),
    ("cflow.dstport", &[11, 181, 183], false),
    ("cflow.dstaddr", &[12], true),
    ("cflow.outputint", &[14], false),
    ("cflow.srcas", &[16], false),
    ("cflow.dstas", &[17], false),
    ("cflow.srcaddrv6", &[27], true),
    ("cflow.dstaddrv6", &[28], true),
];

/// One datagram's records as we decode them: per element of [`FIELDS`], the values of the
/// records that hold it, in order.
type Values = Vec<Vec<String>>;

/// A value as tshark prints it: numbers in decimal, addresses in their usual text.
fn text(bytes: &[u8], address: bool) -> String {
    match (address, bytes.len()) {
        (true, 4) => Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()).to_string(),
        (true, 16) => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_string(),
        _ => read_be(bytes).to_string(),
    }
}

/// Records' elements as we decode them (the scope elements of options records left out: a v9
/// scope's type is not an information element), each as (element, value); IANA's elements
/// and reverse ones (marked [`REVERSE`]).
#[derive(Default)]
struct Elements(Vec<Vec<(u32, Vec<u8>)>>);

impl Elements {
    fn push(&mut self, r: &RecordView<'_>) {
        let scope = r.template.scope_count as usize;
        self.0.push(r.elements().skip(scope).filter_map(|(s, v)| match s.pen {
            0 => Some((s.ie as u32, v.to_vec())),
            29305 => Some((REVERSE | s.ie as u32, v.to_vec())),
            _ => None,
        }).collect());
    }
}

impl FlowSink for Elements {
    fn flow(&mut self, _: &Flow, r: &RecordView<'_>) {
        self.push(r);
    }
    fn options_record(&mut self, r: &RecordView<'_>) {
        self.push(r);
    }
}

/// Our decoding of `grams`, datagram by datagram, with the frame each came in.
fn ours(grams: &[CapturedDatagram]) -> Vec<(usize, Values)> {
    let mut decoder = Decoder::new(Arc::new(Devices::default()), None);
    let mut sink = Elements::default();
    let mut out = Vec::new();
    for g in grams {
        let before = sink.0.len();
        decoder.decode(&Datagram { bytes: &g.payload, exporter: g.src, time_ms: g.time_ms }, &mut sink);
        let values = FIELDS
            .iter()
            .map(|&(_, ies, address)| sink.0[before..].iter().flatten().filter(|(ie, _)| ies.contains(ie)).map(|(_, v)| text(v, address)).collect())
            .collect();
        out.push((g.frame, values));
    }
    out
}

/// tshark's decoding of `capture` (whose datagrams are `grams`): per frame, per element of
/// [`FIELDS`], its values.
fn theirs(capture: &Path, grams: &[CapturedDatagram]) -> Vec<Values> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(capture);
    // tshark is told the datagrams' destination ports carry NetFlow.
    let ports: BTreeSet<u16> = grams.iter().map(|g| g.dst_port).collect();
    for port in ports {
        cmd.args(["-d", &format!("udp.port=={port},cflow")]);
    }
    cmd.args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t"]);
    for (field, _, _) in FIELDS {
        cmd.args(["-e", field]);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}: Debian package tshark (scripts/test.sh installs it)"));
    assert!(out.status.success(), "tshark on {}: {}", capture.display(), String::from_utf8_lossy(&out.stderr));
    let number = |v: &str| match v.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16).unwrap().to_string(),
        None => v.to_string(),
    };
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            line.split('\t')
                .zip(FIELDS)
                .map(|(list, &(_, _, address))| {
                    list.split(',').filter(|v| !v.is_empty()).map(|v| if address { v.parse::<IpAddr>().unwrap().to_string() } else { number(v) }).collect()
                })
                .collect()
        })
        .collect()
}

/// Datagrams of which tshark reads a part only: its values must begin ours. (capture, frame,
/// why)
const TSHARK_STOPS_EARLY: &[(&str, usize, &str)] = &[
    ("logstash-codec-netflow/cases/IPFIX.pcap", 1, "three IPFIX messages in one datagram: tshark reads the first"),
    (
        "logstash-codec-netflow/cases/Netflow_9_invalid_01.pcap",
        1,
        "the v9 header counts the two templates only: tshark stops there, we (and logstash) read the data sets after them",
    ),
];

/// Datagrams we count as malformed and skip, which tshark decodes anyway. (capture, frame, why)
const WE_REJECT: &[(&str, usize, &str)] = &[
    ("logstash-codec-netflow/cases/Netflow_5_invalid_01.pcap", 1, "a v5 header counting 55,582 records in a datagram of 30"),
    ("logstash-codec-netflow/cases/Netflow_5_invalid_02.pcap", 1, "a v5 header counting 163 records in a datagram of 30"),
];

/// How a datagram's values are to compare with tshark's.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Same,
    TsharkStopsEarly,
    WeReject,
}

fn expectation(name: &str, frame: usize) -> Expect {
    let listed = |list: &[(&str, usize, &str)]| list.iter().any(|&(n, f, _)| n == name && f == frame);
    match (listed(TSHARK_STOPS_EARLY), listed(WE_REJECT)) {
        (true, _) => Expect::TsharkStopsEarly,
        (_, true) => Expect::WeReject,
        _ => Expect::Same,
    }
}

/// Whether one field's values (ours, tshark's) of a datagram compare as expected.
fn agrees(ours: &[String], theirs: &[String], expect: Expect) -> bool {
    match expect {
        Expect::Same => ours == theirs,
        Expect::TsharkStopsEarly => ours.len() >= theirs.len() && ours[..theirs.len()] == *theirs,
        Expect::WeReject => ours.is_empty(),
    }
}

/// Compares our decoding of `capture` (`name` under tests/data) with tshark's; returns the
/// values compared, the differences found, and the datagrams found listed as exceptions.
fn compare(capture: &Path, name: &str) -> (usize, Vec<String>, Vec<(Expect, String)>) {
    let grams = udp_datagrams(capture);
    let (ours, theirs) = (ours(&grams), theirs(capture, &grams));
    let mut compared = 0;
    let mut differences = Vec::new();
    let mut exceptions = Vec::new();
    for (frame, values) in ours {
        let Some(tshark) = theirs.get(frame - 1) else {
            differences.push(format!("{name} frame {frame}: tshark read no such frame"));
            continue;
        };
        let expect = expectation(name, frame);
        if expect != Expect::Same {
            // The exception must still hold: tshark read more than we did, or we less.
            let (n_ours, n_theirs) = (values.iter().map(Vec::len).sum::<usize>(), tshark.iter().map(Vec::len).sum::<usize>());
            assert!(n_ours != n_theirs, "{name} frame {frame}: listed as {expect:?}, but both read {n_ours} values");
            exceptions.push((expect, format!("{name} frame {frame}")));
        }
        for ((ours, theirs), (field, _, _)) in values.iter().zip(tshark).zip(FIELDS) {
            if agrees(ours, theirs, expect) {
                compared += ours.len().min(theirs.len());
            } else {
                differences.push(format!("{name} frame {frame} {field}: ours {ours:?}, tshark {theirs:?}"));
            }
        }
    }
    (compared, differences, exceptions)
}

/// A capture's path under tests/data.
fn name_of(capture: &Path) -> String {
    capture.strip_prefix(data_dir()).unwrap().display().to_string()
}

#[test]
fn every_capture_decodes_as_tshark_decodes_it() {
    let (mut total, mut differences, mut exceptions) = (0, Vec::new(), Vec::new());
    let captures = common::netflow_captures();
    let results = common::in_two_threads(&captures, |c| compare(c, &name_of(c)));
    for (compared, d, e) in results {
        total += compared;
        differences.extend(d);
        exceptions.extend(e);
    }
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));
    // Every listed exception was met (a capture renamed or decoded otherwise would show).
    assert_eq!(exceptions.len(), TSHARK_STOPS_EARLY.len() + WE_REJECT.len(), "{exceptions:?}");
    // The captures: logstash's 49 NetFlow/IPFIX cases, telegraf's 7, softflowd's 3, goflow2's
    // and the scapy-crafted one.
    assert_eq!(captures.len(), 61, "{captures:?}");
    assert!(total >= 8_400, "only {total} values compared");
    eprintln!("{} captures, {total} values compared", captures.len());
}
