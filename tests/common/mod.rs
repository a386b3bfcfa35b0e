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
