//! Helpers shared by the integration tests: replaying captures into a recording sink.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use xenoeye::decode::template::FieldSpec;
use xenoeye::decode::{Decoder, FlowSink, RecordView};
use xenoeye::devices::Devices;
use xenoeye::flow::Flow;

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
    fn tick(&mut self, _now_ms: u64) {}
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

/// Replays captures through a fresh decoder (default devices, no template file).
pub fn replay(files: &[PathBuf]) -> (Record, Decoder) {
    let mut d = Decoder::new(Arc::new(Devices::default()), None);
    let mut sink = Record::default();
    xenoeye::daemon::replay_into(files, &mut d, &mut sink).expect("capture readable");
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

/// A fresh empty directory under the system temp directory.
pub fn workdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
