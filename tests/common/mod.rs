//! Helpers shared by the integration tests: replaying captures into a recording sink.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use xenoeye::decode::template::FieldSpec;
use xenoeye::decode::{Decoder, FlowSink, RecordView};
use xenoeye::devices::Devices;
use xenoeye::flow::Flow;
pub use xenoeye::testdir::TestDir;

/// A decoded record: data (with its flow) or options, and its elements.
pub struct Rec {
    pub version: u16,
    pub flow: Option<Flow>,
    pub elements: Vec<(FieldSpec, Vec<u8>)>,
}

impl Rec {
    /// Value bytes of a standard element.
    pub fn element(&self, ie: u16) -> Option<&[u8]> {
        self.elements.iter().find(|(s, _)| s.pen == 0 && s.ie == ie).map(|(_, v)| v.as_slice())
    }
}

#[derive(Default)]
pub struct Record {
    pub recs: Vec<Rec>,
}

fn rec(r: &RecordView<'_>, flow: Option<Flow>) -> Rec {
    Rec { version: r.version, flow, elements: r.elements().map(|(s, v)| (s.clone(), v.to_vec())).collect() }
}

impl xenoeye::daemon::ClockedSink for Record {
    fn tick(&mut self, now_ms: u64) -> u64 {
        now_ms
    }
}

impl FlowSink for Record {
    fn flow(&mut self, flow: &Flow, r: &RecordView<'_>) {
        self.recs.push(rec(r, Some(flow.clone())));
    }
    fn options_record(&mut self, r: &RecordView<'_>) {
        self.recs.push(rec(r, None));
    }
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A UDP datagram of a capture: the number of the frame that held it (from 1), its source,
/// destination port, payload and time (ms, to the second as the replays take it).
pub struct CapturedDatagram {
    pub frame: usize,
    pub src: std::net::IpAddr,
    pub dst_port: u16,
    pub payload: Vec<u8>,
    pub time_ms: u64,
}

/// The UDP datagrams of the capture `path` (frames without one are skipped).
pub fn udp_datagrams(path: &Path) -> Vec<CapturedDatagram> {
    let mut cap = pcap::Capture::from_file(path).unwrap();
    let linktype = cap.get_datalink().0;
    let mut out = Vec::new();
    let mut frame = 0;
    while let Ok(p) = cap.next_packet() {
        frame += 1;
        if let Some(udp) = xenoeye::capture::link::udp_payload(linktype, p.data) {
            let time_ms = p.header.ts.tv_sec as u64 * 1000;
            out.push(CapturedDatagram { frame, src: udp.src, dst_port: udp.dst_port, payload: udp.payload.to_vec(), time_ms });
        }
    }
    out
}

/// A UDP port free on 127.0.0.1 just now.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Captures under tests/data that hold no NetFlow or IPFIX, by the start of their names: sFlow,
/// and the traffic softflowd metered.
const NOT_NETFLOW: &[&str] = &["sflow", "traffic.pcap"];

/// Every capture of NetFlow or IPFIX under tests/data, in order of path.
pub fn netflow_captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "pcap") && !NOT_NETFLOW.iter().any(|n| path.file_name().unwrap().to_string_lossy().starts_with(n)) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir(), &mut out);
    out.sort();
    out
}

/// `f` of each item, in order, two threads each taking half the items (for tests that wait
/// on other programs).
pub fn in_two_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let halves: Vec<_> = items.chunks(items.len().div_ceil(2).max(1)).map(|half| s.spawn(move || half.iter().map(f).collect::<Vec<R>>())).collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// Replays captures through a fresh decoder (default devices, no template file).
pub fn replay(files: &[PathBuf]) -> (Record, Decoder) {
    let mut d = Decoder::new(Arc::new(Devices::default()), None);
    let mut sink = Record::default();
    xenoeye::daemon::replay_into(files, &mut d, &mut sink, |_, _| {}).expect("capture readable");
    (sink, d)
}

/// A captured frame: timestamp (seconds, microseconds) and bytes (Ethernet).
pub struct Frame {
    pub sec: u32,
    pub usec: u32,
    pub data: Vec<u8>,
}

impl Frame {
    /// The UDP payload of the frame.
    pub fn payload(&self) -> &[u8] {
        xenoeye::capture::link::udp_payload(1, &self.data).expect("a UDP frame").payload
    }
}

/// Every frame of a capture.
pub fn read_frames(path: &Path) -> Vec<Frame> {
    let mut cap = pcap::Capture::from_file(path).unwrap();
    let mut out = Vec::new();
    while let Ok(p) = cap.next_packet() {
        out.push(Frame { sec: p.header.ts.tv_sec as u32, usec: p.header.ts.tv_usec as u32, data: p.data.to_vec() });
    }
    out
}

/// Writes Ethernet frames as a classic pcap file.
pub fn write_pcap(path: &Path, frames: &[Frame]) {
    use std::io::Write;
    let mut out = std::fs::File::create(path).unwrap();
    out.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0]).unwrap();
    for f in frames {
        let len = f.data.len() as u32;
        for v in [f.sec, f.usec, len, len] {
            out.write_all(&v.to_le_bytes()).unwrap();
        }
        out.write_all(&f.data).unwrap();
    }
}

/// A fresh empty directory under the system temp directory, removed when the test passes.
pub fn workdir(tag: &str) -> TestDir {
    TestDir::new(tag)
}

/// A flow for crafted NetFlow v9 datagrams.
#[derive(Clone, Copy)]
pub struct CraftedFlow {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub dport: u16,
    pub octets: u32,
    pub packets: u32,
}

/// A NetFlow v9 datagram (source id 1) with the template and the given flows, wrapped in an
/// Ethernet/IPv4/UDP frame from 192.0.2.1 to port 2055, at `ms` milliseconds of unix time.
/// The source AS of a flow is 64500 + (last byte of the source address) % 8.
pub fn v9_frame(ms: u64, flows: &[CraftedFlow]) -> Frame {
    let be16 = |v: &mut Vec<u8>, x: u16| v.extend(x.to_be_bytes());
    let be32 = |v: &mut Vec<u8>, x: u32| v.extend(x.to_be_bytes());
    let mut p = Vec::new();
    be16(&mut p, 9);
    be16(&mut p, 1 + flows.len() as u16);
    be32(&mut p, 1000);
    be32(&mut p, (ms / 1000) as u32);
    be32(&mut p, 1);
    be32(&mut p, 1);
    // Template 256: src, dst, proto, dst port, octets, packets, src AS.
    let fields: [(u16, u16); 7] = [(8, 4), (12, 4), (4, 1), (11, 2), (1, 4), (2, 4), (16, 2)];
    be16(&mut p, 0);
    be16(&mut p, 4 + 4 + 4 * fields.len() as u16);
    be16(&mut p, 256);
    be16(&mut p, fields.len() as u16);
    for (ie, len) in fields {
        be16(&mut p, ie);
        be16(&mut p, len);
    }
    if !flows.is_empty() {
        be16(&mut p, 256);
        be16(&mut p, 4 + 21 * flows.len() as u16);
        for f in flows {
            p.extend(f.src);
            p.extend(f.dst);
            p.push(f.proto);
            be16(&mut p, f.dport);
            be32(&mut p, f.octets);
            be32(&mut p, f.packets);
            be16(&mut p, 64500 + (f.src[3] % 8) as u16);
        }
    }
    Frame { sec: (ms / 1000) as u32, usec: (ms % 1000 * 1000) as u32, data: udp_frame(&p) }
}

/// A process of the test's (the collector, a peer) killed and reaped when the test ends
/// without waiting for it, as a failing assertion does: left running, it would hold its
/// ports, and the output pipe of whatever runs the tests, long after the test failed.
pub struct Running(Option<std::process::Child>);

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        Running::from(cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}")))
    }

    /// Waits for the process to end (it is not killed then), with its piped output.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0.take().expect("running").wait_with_output()
    }
}

impl From<std::process::Child> for Running {
    fn from(child: std::process::Child) -> Running {
        Running(Some(child))
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("running")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ethernet + IPv4 + UDP (192.0.2.1:9995 -> 127.0.0.1:2055) around a payload.
pub fn udp_frame(payload: &[u8]) -> Vec<u8> {
    udp_frame_between(([192, 0, 2, 1], 9995), ([127, 0, 0, 1], 2055), payload)
}

/// Ethernet + IPv4 + UDP from `src` to `dst` (address, port) around a payload.
pub fn udp_frame_between(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 0, 0, 0, 64, 17, 0, 0]);
    f.extend(src.0);
    f.extend(dst.0);
    f.extend(src.1.to_be_bytes());
    f.extend(dst.1.to_be_bytes());
    f.extend(((8 + payload.len()) as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

/// Ethernet + IPv6 + UDP from `src` to `dst` (address, port) around a payload (the UDP
/// checksum computed, as IPv6 requires).
pub fn udp6_frame_between(src: ([u8; 16], u16), dst: ([u8; 16], u16), payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::with_capacity(udp_len as usize);
    udp.extend(src.1.to_be_bytes());
    udp.extend(dst.1.to_be_bytes());
    udp.extend(udp_len.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    // The checksum over the pseudo-header (addresses, length, next header) and the datagram.
    let mut pseudo = [&src.0[..], &dst.0[..], &(udp_len as u32).to_be_bytes(), &[0, 0, 0, 17]].concat();
    pseudo.extend(&udp);
    let mut sum = pseudo.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum::<u32>();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut f = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend([0x60, 0, 0, 0]);
    f.extend(udp_len.to_be_bytes());
    f.extend([17, 64]);
    f.extend(src.0);
    f.extend(dst.0);
    f.extend(udp);
    f
}

/// A fresh database on the test PostgreSQL (scripts/test.sh starts it; URL in XE_TEST_PG_URL),
/// dropped at the end.
pub struct Db {
    pub url: String,
    admin: String,
    name: String,
}

impl Db {
    pub fn create(tag: &str) -> Db {
        let admin = std::env::var("XE_TEST_PG_URL")
            .expect("XE_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
        let name = format!("xe_{tag}_{}", std::process::id());
        let db = Db { url: admin.replace("/postgres", &format!("/{name}")), admin, name };
        psql(&db.admin, &format!("drop database if exists {}", db.name));
        psql(&db.admin, &format!("create database {}", db.name));
        db
    }

    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        psql(&self.url, sql).lines().filter(|l| !l.is_empty()).map(|l| l.split('|').map(String::from).collect()).collect()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql").args(["-X", "-q", &self.admin, "-c", &format!("drop database if exists {}", self.name)]).output();
    }
}

/// Runs one SQL command; returns its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// GET a path from a local HTTP server.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

/// A metric's value on a /metrics page: the first line starting with `name`.
pub fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
