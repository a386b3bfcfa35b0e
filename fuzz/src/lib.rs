//! What the fuzz targets share: the framing of several datagrams in one fuzz input (so that a
//! template and the data that uses it can arrive in one run), and the path a datagram takes
//! through the collector short of the tables: decoding, the dump line, filters.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use xenoeye::decode::cache::TemplateStore;
use xenoeye::decode::{Datagram, Decoder, FlowSink, RecordView};
use xenoeye::devices::Devices;
use xenoeye::filter::{self, iplist::IpLists, Filter};
use xenoeye::flow::Flow;

/// The datagrams of a fuzz input: each is a 2-byte little-endian length and that many bytes
/// (the last one may be short).
pub fn datagrams(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let n = (u16::from_le_bytes(*len) as usize).min(rest.len());
        let (one, rest) = rest.split_at(n);
        data = rest;
        Some(one)
    })
}

/// Several datagrams as one fuzz input (the inverse of [`datagrams`]).
pub fn frame<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        let d = &d[..d.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(d.len() as u16).to_le_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Filters touching every kind of field test (addresses and networks, ports, ranges,
/// protocols, negation), as objects' filters would.
fn filters() -> Vec<Filter> {
    let texts = [
        "src net 10.0.0.0/8 or dst net6 2001:db8::/32",
        "proto tcp and dst port 1-1023 and not src port 443",
        "(tcp-flags 0x12 or proto 17) and not (src host 192.0.2.1)",
        "src ifidx 1-10 or dst ifidx 3 or net6 fc00::/7 or mac 00:0c:29:70:86:09 or dst as 64512",
    ];
    texts.iter().map(|t| filter::compile(t, &IpLists::new()).expect("the fuzz filters compile")).collect()
}

/// Takes every flow and options record through what the collector does with them before the
/// tables: the dump line and the filters.
struct Consume {
    filters: &'static [Filter],
    line: String,
    flows: u64,
    matched: u64,
}

impl FlowSink for Consume {
    fn flow(&mut self, flow: &Flow, record: &RecordView<'_>) {
        self.flows += 1;
        self.line.clear();
        xenoeye::dump::format_flow(flow, record, &mut self.line);
        self.matched += self.filters.iter().filter(|f| f.matches(flow)).count() as u64;
    }

    fn options_record(&mut self, record: &RecordView<'_>) {
        for e in record.elements() {
            std::hint::black_box(e);
        }
    }
}

/// The exporter every fuzz datagram comes from.
pub const EXPORTER: [u8; 4] = [192, 0, 2, 7];

/// Decodes each datagram of a fuzz input in turn with one decoder (as from one exporter),
/// checking the decoder's own counts against what reached the sink; returns the flows.
pub fn decode_all(data: &[u8]) -> u64 {
    decode_with(datagrams(data), None)
}

/// [`decode_all`] for datagrams already split, by a decoder whose templates come from `store`
/// (as after a restart).
pub fn decode_with<'a>(datagrams: impl Iterator<Item = &'a [u8]>, store: Option<Arc<TemplateStore>>) -> u64 {
    let mut decoder = Decoder::new(Arc::new(Devices::default()), store);
    static FILTERS: std::sync::OnceLock<Vec<Filter>> = std::sync::OnceLock::new();
    let mut sink = Consume { filters: FILTERS.get_or_init(filters), line: String::new(), flows: 0, matched: 0 };
    let exporter: IpAddr = EXPORTER.into();
    let mut sent = 0;
    for (i, bytes) in datagrams.enumerate() {
        decoder.decode(&Datagram { bytes, exporter, time_ms: 1_700_000_000_000 + i as u64 * 10 }, &mut sink);
        sent += 1;
    }
    assert_eq!(decoder.stats.datagrams, sent, "every datagram counted");
    assert_eq!(decoder.stats.flows, sink.flows, "every flow counted reached the sink");
    sink.flows
}

/// The UDP payloads of a capture file, in order (as `--read-pcap` takes them).
pub fn payloads(path: &std::path::Path) -> Vec<Vec<u8>> {
    use xenoeye::capture::{pcap_source, Batch, Fill, Source};
    let mut source = pcap_source::open_file(path).unwrap_or_else(|e| panic!("{e}"));
    let mut batch = Batch::new(64);
    let mut out = Vec::new();
    while let Ok(Fill::Ready) = source.fill(&mut batch) {
        out.extend((0..batch.meta.len()).map(|i| batch.payload(i).to_vec()));
    }
    out
}

/// A directory of this fuzz run's own, `xe-fuzz-TAG-PID` under the system temp directory, made
/// with these files (path relative to it, content) in it. A target makes it once and has each
/// input replace one of its files. Logging is switched off from then on.
pub fn fuzz_dir(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    // Every input's warnings (unknown keys, scripts that do not exist) would go to syslog.
    xenoeye::log::set_quiet(true);
    let dir = std::env::temp_dir().join(format!("xe-fuzz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("a file in the directory")).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Loads the objects under `dir` as at start or a reload: they load, or the errors (at least
/// one) each name a file under `dir`.
pub fn load_objects_or_errors_in(dir: &std::path::Path) {
    if let Err(errors) = xenoeye::objects::load(dir, &IpLists::new()) {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(e.file.starts_with(dir), "{e:?}");
        }
    }
}
