//! A peer collector's opinion: nfdump's collector (nfcapd) receives the datagrams of every
//! NetFlow/IPFIX capture the tests hold, each exporter from an address of its own, and its
//! flows (as nfdump prints them) are compared with ours: per 5-tuple, the same number of
//! flows, packets and bytes. The tshark test compares the records' elements; this compares
//! what the flows count, after templates, sampling and vendor layouts, with a collector that
//! operators run in production.

mod common;

use common::{data_dir, free_port, udp_datagrams, CapturedDatagram, Running};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenoeye::decode::{Datagram, Decoder, FlowSink, RecordView};
use xenoeye::devices::Devices;
use xenoeye::fields::FieldId;
use xenoeye::flow::Flow;

/// A flow's key as both sides print it: (src, dst, src port, dst port, protocol). An address
/// that is absent or all zero is "0"; ICMP flows have ports 0 (nfdump writes type and code
/// there, vendors in other elements).
type Key = (String, String, u128, u128, u128);
/// Flows, packets, bytes.
type Counts = (u64, u128, u128);
/// Key -> its counts.
type Totals = BTreeMap<Key, Counts>;

/// Captures where nfdump and we differ by design, how, and why.
const DIFFERENCES: &[(&str, Differ, &str)] = &[
    ("logstash-codec-netflow/cases/IPFIX.pcap", Differ::TheirsPart, "three IPFIX messages in one datagram: nfcapd reads the first"),
    (
        "logstash-codec-netflow/cases/Netflow_5_valid_01.pcap",
        Differ::OursPart,
        "twelve NetFlow v5 messages in one datagram: nfcapd reads them all, we (like logstash and tshark) the first",
    ),
    ("logstash-codec-netflow/cases/Netflow_9_invalid_01.pcap", Differ::OursScaled(100), "its options announce a sampling interval of 100: we scale the counters by it, nfcapd does not"),
    (
        "logstash-codec-netflow/cases/Netflow_9_Cisco_ASA_2.pcap",
        Differ::OursWithoutBytes,
        "Cisco ASA (NSEL) carries bytes as initiatorOctets and responderOctets (231, 232) only: nfdump counts the first as bytes, we count octetDeltaCount (1) as the specification says",
    ),
    (
        "logstash-codec-netflow/cases/IPFIX_Procera.pcap",
        Differ::TheirsWithoutAddresses,
        "its templates hold IPv4 and IPv6 addresses: nfdump prints :: for the IPv4 flows' addresses",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Differ {
    /// nfcapd reads a part of what we read: each of its flows is within ours.
    TheirsPart,
    /// We read a part of what nfcapd reads.
    OursPart,
    /// Our packets and bytes are theirs times N (a sampling rate nfcapd does not apply).
    OursScaled(u128),
    /// Our flows have no bytes; flows and packets agree.
    OursWithoutBytes,
    /// Their flows' addresses are lost: flows compare by ports and protocol.
    TheirsWithoutAddresses,
}

/// An address as a key prints it: "0" when absent or all zero.
fn address(text: Option<String>) -> String {
    match text.as_deref() {
        None | Some("0.0.0.0" | "::" | "") => "0".into(),
        Some(a) => a.to_string(),
    }
}

/// A flow's key: ports 0 for ICMP.
fn key(src: String, dst: String, sport: u128, dport: u128, proto: u128) -> Key {
    let icmp = proto == 1 || proto == 58;
    (src, dst, if icmp { 0 } else { sport }, if icmp { 0 } else { dport }, proto)
}

/// Our flows, summed per key (an IPv4 address where the flow has a non-zero one, else the
/// IPv6 one).
#[derive(Default)]
struct Flows(Totals);

impl FlowSink for Flows {
    fn flow(&mut self, f: &Flow, _: &RecordView<'_>) {
        let addr = |v4: FieldId, v6: FieldId| {
            let a = address(f.addr(v4).map(|a| a.to_string()));
            if a == "0" {
                address(f.addr(v6).map(|a| a.to_string()))
            } else {
                a
            }
        };
        let k = key(
            addr(FieldId::SrcHost, FieldId::SrcHost6),
            addr(FieldId::DstHost, FieldId::DstHost6),
            f.get_or_zero(FieldId::SrcPort),
            f.get_or_zero(FieldId::DstPort),
            f.get_or_zero(FieldId::Proto),
        );
        let e = self.0.entry(k).or_default();
        e.0 += 1;
        e.1 += f.get_or_zero(FieldId::Packets);
        e.2 += f.get_or_zero(FieldId::Octets);
    }
}

fn ours(grams: &[CapturedDatagram]) -> Totals {
    let mut decoder = Decoder::new(Arc::new(Devices::default()), None);
    let mut sink = Flows::default();
    for g in grams {
        decoder.decode(&Datagram { bytes: &g.payload, exporter: g.src, time_ms: g.time_ms }, &mut sink);
    }
    sink.0
}

/// nfcapd listening on 127.0.0.1:`port`, writing to `dir`, once it is ready.
fn nfcapd(dir: &Path, port: u16) -> Running {
    let child = Command::new("nfcapd")
        .arg("-w")
        .arg(dir)
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "3600", "-B", "8000000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}: Debian package nfdump (scripts/test.sh installs it)"));
    let child = Running::from(child);
    wait_for("nfcapd to start", || udp_queue(port).is_some());
    child
}

/// Waits (up to 10 s) until `done`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:`port`, if one is
/// (from /proc/net/udp).
fn udp_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str())).then(|| u64::from_str_radix(cols[4].split(':').nth(1).unwrap(), 16).unwrap())
    })
}

/// nfdump's flows of `grams`: sent to a fresh nfcapd (each exporter from an address of its
/// own, 127.0.1.N: nfcapd keeps templates per exporter), which is stopped once it has read
/// them all.
fn theirs(grams: &[CapturedDatagram], dir: &Path) -> Totals {
    let port = free_port();
    let mut child = nfcapd(dir, port);
    let mut sockets: HashMap<IpAddr, UdpSocket> = HashMap::new();
    for g in grams {
        let n = sockets.len() as u8;
        let socket = sockets.entry(g.src).or_insert_with(|| UdpSocket::bind((Ipv4Addr::new(127, 0, 1, n + 1), 0)).unwrap());
        socket.send_to(&g.payload, ("127.0.0.1", port)).unwrap();
    }
    wait_for("nfcapd to read every datagram", || udp_queue(port) == Some(0));
    // SIGTERM: nfcapd writes its file and exits.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let out = Command::new("nfdump").arg("-R").arg(dir).args(["-q", "-N", "-6", "-o", "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt"]).output().unwrap();
    let mut t = Totals::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l != "No matching flows") {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(f.len(), 7, "nfdump: {line}");
        let n = |s: &str| s.parse::<u128>().unwrap_or_else(|_| panic!("nfdump: {line}"));
        // Ports print as numbers, an ICMP type and code as "8.0".
        let port = |s: &str| s.split('.').next().unwrap().parse::<u128>().unwrap_or_else(|_| panic!("nfdump: {line}"));
        let k = key(address(Some(f[0].into())), address(Some(f[1].into())), port(f[2]), port(f[3]), n(f[4]));
        let e = t.entry(k).or_default();
        e.0 += 1;
        e.1 += n(f[5]);
        e.2 += n(f[6]);
    }
    t
}

/// Whether our flows and theirs compare as `differ` says (None: the same).
fn agree(ours: &Totals, theirs: &Totals, differ: Option<Differ>) -> bool {
    let within = |part: &Totals, whole: &Totals| {
        part.iter().all(|(k, p)| whole.get(k).is_some_and(|w| p.0 <= w.0 && p.1 <= w.1 && p.2 <= w.2)) && part != whole
    };
    let without_addresses = |t: &Totals| {
        let mut out = Totals::new();
        for ((_, _, sp, dp, pr), v) in t {
            let e = out.entry(("-".into(), "-".into(), *sp, *dp, *pr)).or_default();
            (e.0, e.1, e.2) = (e.0 + v.0, e.1 + v.1, e.2 + v.2);
        }
        out
    };
    let map = |t: &Totals, f: &dyn Fn(&Counts) -> Counts| t.iter().map(|(k, v)| (k.clone(), f(v))).collect::<Totals>();
    match differ {
        None => ours == theirs,
        Some(Differ::TheirsPart) => within(theirs, ours),
        Some(Differ::OursPart) => within(ours, theirs),
        Some(Differ::OursScaled(n)) => map(ours, &|v| (v.0, v.1 / n, v.2 / n)) == *theirs && ours != theirs,
        Some(Differ::OursWithoutBytes) => ours.values().all(|v| v.2 == 0) && map(theirs, &|v| (v.0, v.1, 0)) == *ours && ours != theirs,
        Some(Differ::TheirsWithoutAddresses) => without_addresses(ours) == without_addresses(theirs) && ours != theirs,
    }
}

/// Compares one capture; returns its flows (ours) and what is wrong, if anything.
fn compare(capture: &Path) -> (u64, Option<String>) {
    let name = capture.strip_prefix(data_dir()).unwrap().display().to_string();
    let grams = udp_datagrams(capture);
    let dir = common::workdir(&format!("nfdump-{}", capture.file_stem().unwrap().to_string_lossy()));
    let (ours, theirs) = (ours(&grams), theirs(&grams, &dir));
    let differ = DIFFERENCES.iter().find(|(n, _, _)| *n == name).map(|(_, d, _)| *d);
    let flows = ours.values().map(|v| v.0).sum();
    if agree(&ours, &theirs, differ) {
        return (flows, None);
    }
    let keys: BTreeSet<&Key> = ours.keys().chain(theirs.keys()).collect();
    let lines: Vec<String> = keys.iter().filter(|k| ours.get(k) != theirs.get(k)).map(|k| format!("    {k:?}: ours {:?}, nfdump {:?}", ours.get(k), theirs.get(k))).collect();
    (flows, Some(format!("{name} (expected: {differ:?}):\n{}", lines.join("\n"))))
}

#[test]
fn every_capture_gives_the_flows_nfdump_gives() {
    let captures = common::netflow_captures();
    let results = common::in_two_threads(&captures, |c| compare(c));
    let wrong: Vec<&String> = results.iter().filter_map(|(_, w)| w.as_ref()).collect();
    assert!(wrong.is_empty(), "{} captures differ from nfdump:\n{}", wrong.len(), wrong.iter().map(|w| w.as_str()).collect::<Vec<_>>().join("\n"));
    assert_eq!(captures.len(), 61, "{captures:?}");
    let flows: u64 = results.iter().map(|(f, _)| f).sum();
    assert!(flows >= 700, "only {flows} flows compared");
    eprintln!("{} captures, {flows} flows compared", captures.len());
}
