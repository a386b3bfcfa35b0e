//! The hot path (receive -> decode -> filter -> fixed windows and moving averages with
//! thresholds) allocates nothing per flow once its tables hold the keys: counted by this test
//! binary's allocator, on the load test's objects (benches/conf) with a second moving average
//! of its own key per object (and with many child objects), fed the load generator's
//! datagrams (benches/data), in memory, through a UDP socket and from a capture file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc::channel;
use std::sync::Arc;
use xenoeye::daemon::{load_objects, Pipeline};
use xenoeye::decode::{Datagram, Decoder};
use xenoeye::objects::LiveObjects;

#[path = "../benches/common/mod.rs"]
mod bench_data;
mod common;

thread_local! {
    /// Allocations made by this thread (other threads, such as the one faulting in tables
    /// ahead, are not the flow path).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only a
// thread-local Cell that needs no allocation and no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

/// A copy of benches/conf in `dir` whose objects have a second moving average with a
/// threshold, keyed by address and protocol (nested in the first's table), and `children` objects
/// under ingress, one per /26 of its network with a window each (from 8 on, found through
/// the index of siblings).
fn two_averages_conf(dir: &std::path::Path, children: usize) -> std::path::PathBuf {
    for i in 0..children {
        let child = dir.join(format!("mo/ingress/c{i}"));
        std::fs::create_dir_all(&child).unwrap();
        let filter = format!("dst net 10.11.{}.{}/26", i / 4, i % 4 * 64);
        std::fs::write(child.join("mo.conf"), format!(r#"{{ "filter": "{filter}", "fwm": [ {{ "name": "all", "fields": ["packets", "octets"] }} ] }}"#)).unwrap();
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/conf");
    for f in ["xenoeye.conf", "devices.conf", "iplists/my-nets"] {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    for (o, host) in [("ingress", "dst host"), ("egress", "src host")] {
        let text = std::fs::read_to_string(src.join("mo").join(o).join("mo.conf")).unwrap();
        let second = format!(
            r#"}} ] }}, {{ "name": "pps", "time": 5, "fields": ["{host}", "proto", "packets"],
              "overlimit": [ {{ "name": "level1", "default": [1000000000], "back2norm-time": 10 }} ] }}"#
        );
        let conf = text.replacen("} ] }", &second, 1);
        assert_ne!(conf, text);
        std::fs::create_dir_all(dir.join("mo").join(o)).unwrap();
        std::fs::write(dir.join("mo").join(o).join("mo.conf"), conf).unwrap();
    }
    dir.join("xenoeye.conf")
}

/// The load test's objects with two moving averages each, a worker's pipeline and decoder.
struct Worker {
    objects: Arc<xenoeye::objects::Objects>,
    pipeline: Pipeline,
    decoder: Decoder,
    /// Where closed windows would go to the export thread (none closes here).
    _exports: std::sync::mpsc::Receiver<xenoeye::export::Msg>,
}

impl Worker {
    fn new(cfg: &xenoeye::config::Config, children: usize) -> Worker {
        let objects = Arc::new(load_objects(cfg).unwrap());
        assert_eq!((objects.windows.len(), objects.mavgs.len()), (8 + children, 4));
        assert!(objects.mavgs.iter().all(|m| m.shares_table()), "each object's second average is nested in the first's table");
        let (tx, _exports) = channel();
        let pipeline = Pipeline::new(cfg, &LiveObjects::new(objects.clone()), 0, tx).unwrap();
        Worker { objects, pipeline, decoder: Decoder::new(Arc::new(cfg.devices.clone()), None), _exports }
    }

    /// Decodes and aggregates one datagram at `now_ms`.
    fn datagram(&mut self, bytes: &[u8], exporter: std::net::IpAddr, now_ms: u64) {
        let t = self.pipeline.tick(now_ms);
        self.decoder.decode(&Datagram { bytes, exporter, time_ms: t }, &mut self.pipeline);
    }

    /// What a worker does with a batch its source filled ([`xenoeye::daemon::process`]), the
    /// clock held at [`T0_MS`] (a live source stamps the wall clock).
    fn batch(&mut self, batch: &mut xenoeye::capture::Batch) {
        for m in batch.meta.iter_mut() {
            m.time_ms = T0_MS;
        }
        xenoeye::daemon::process(batch, &mut self.decoder, &mut self.pipeline);
    }

    fn keys(&self) -> usize {
        self.objects.mavgs.iter().map(|m| m.stats.keys.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }
}

/// A unix time in ms at the start of a second and of a 5 s window: the tests stay within
/// it, so no window closes and no sweep runs, only flows.
const T0_MS: u64 = 1_795_755_180_000;

/// The configuration of [`two_averages_conf`] in a test directory (removed when the test
/// passes).
fn two_averages(tag: &str, children: usize) -> (common::TestDir, xenoeye::config::Config) {
    let dir = common::workdir(tag);
    let cfg = xenoeye::config::load(&two_averages_conf(&dir, children)).unwrap();
    (dir, cfg)
}

#[test]
fn the_flow_path_allocates_nothing_per_flow_once_the_keys_are_known() {
    // NetFlow v9 and IPFIX, each with the template in every 64th datagram; and v9 again with
    // 64 customers under ingress, found through the index of siblings.
    for (capture, children) in [("nfgen-v9.bin", 0), ("nfgen-v10.bin", 0), ("nfgen-v9.bin", 64)] {
        let (_dir, cfg) = two_averages(&format!("hot-path-allocations-{children}-{}", capture.trim_end_matches(".bin")), children);
        let mut w = Worker::new(&cfg, children);
        let packets = bench_data::load(capture);
        let exporter = "127.0.0.2".parse().unwrap();
        // 15 us apart (66,667 datagrams per second).
        let mut now_us = T0_MS * 1000;
        let mut pass = |w: &mut Worker| {
            for p in &packets {
                now_us += 15;
                w.datagram(p, exporter, now_us / 1000);
            }
        };
        // The keys go into the tables (they grow), the template is learnt.
        pass(&mut w);
        pass(&mut w);
        let (keys, flows, before) = (w.keys(), w.decoder.stats.flows, allocations());
        pass(&mut w);
        let (flows, allocated) = (w.decoder.stats.flows - flows, allocations() - before);
        assert_eq!(flows, packets.len() as u64 * 30, "{capture}: every flow decoded");
        assert_eq!(w.decoder.stats.total_errors(), 0, "{capture}");
        assert_eq!(w.decoder.stats.templates_new, 1, "{capture}: the template, resent unchanged");
        assert!(keys > 10_000 && w.keys() == keys, "{capture}: the averages hold the keys");
        assert_eq!(allocated, 0, "{capture}: allocations for {flows} flows");

        // Data from an exporter whose template is not known (yet): counted, nothing allocated
        // (past the exporter's first datagram, which makes its counters).
        let stranger = "127.0.0.3".parse().unwrap();
        let data_only: Vec<&Vec<u8>> = packets.iter().enumerate().filter(|(i, _)| i % 64 != 0).map(|(_, p)| p).collect();
        w.datagram(data_only[0], stranger, T0_MS + 100);
        let before = allocations();
        for p in &data_only[1..] {
            w.datagram(p, stranger, T0_MS + 100);
        }
        let allocated = allocations() - before;
        assert_eq!(w.decoder.stats.error(xenoeye::decode::DecodeError::NoTemplate), data_only.len() as u64, "{capture}");
        assert_eq!(allocated, 0, "{capture}: allocations for {} datagrams without a template", data_only.len() - 1);
    }
}

#[test]
fn receiving_over_udp_allocates_nothing_per_datagram() {
    use xenoeye::capture::{udp, Batch, Source};
    let (_dir, cfg) = two_averages("hot-path-allocations-udp", 0);
    let mut w = Worker::new(&cfg, 0);
    let packets = bench_data::load("nfgen-v9.bin");
    let mut source = udp::bind(Some("127.0.0.1".parse().unwrap()), 0, Some(8), false).unwrap();
    let to = source.local_addr().unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = Batch::new(64);
    // Sends 32 datagrams at a time (not counted), then receives, decodes and aggregates them
    // (counted); returns the allocations counted.
    let mut pass = |w: &mut Worker| -> u64 {
        let mut counted = 0;
        for chunk in packets.chunks(32) {
            for p in chunk {
                sender.send_to(p, to).unwrap();
            }
            let (mut got, mut empty) = (0, 0);
            while got < chunk.len() {
                let before = allocations();
                source.fill(&mut batch).unwrap();
                w.batch(&mut batch);
                counted += allocations() - before;
                got += batch.meta.len();
                empty += batch.meta.is_empty() as u32;
                assert!(empty < 50, "datagrams lost on loopback: {got} of {}", chunk.len());
            }
        }
        counted
    };
    pass(&mut w);
    pass(&mut w);
    let (keys, flows) = (w.keys(), w.decoder.stats.flows);
    let allocated = pass(&mut w);
    let flows = w.decoder.stats.flows - flows;
    assert_eq!(flows, packets.len() as u64 * 30, "every flow received and decoded");
    assert!(keys > 10_000 && w.keys() == keys, "the averages hold the keys");
    assert_eq!(allocated, 0, "allocations for {} datagrams, {flows} flows", packets.len());
}

#[test]
fn reading_a_capture_file_allocates_nothing_per_datagram() {
    use xenoeye::capture::{pcap_source, Batch, Fill, Source};
    let (dir, cfg) = two_averages("hot-path-allocations-pcap", 0);
    let mut w = Worker::new(&cfg, 0);
    let packets = bench_data::load("nfgen-v9.bin");
    // The datagrams three times over, as Ethernet frames: two passes to learn the keys, the
    // third counted.
    let frames: Vec<common::Frame> = (0..3).flat_map(|_| packets.iter()).map(|p| common::Frame { sec: (T0_MS / 1000) as u32, usec: 0, data: common::udp_frame(p) }).collect();
    let pcap = dir.join("three-passes.pcap");
    common::write_pcap(&pcap, &frames);
    let mut source = pcap_source::open_file(&pcap).unwrap();
    let mut batch = Batch::new(64);
    let (mut seen, mut counted, mut flows) = (0, 0, 0);
    loop {
        let counting = seen >= 2 * packets.len();
        let before = (allocations(), w.decoder.stats.flows);
        if source.fill(&mut batch).unwrap() == Fill::End {
            break;
        }
        w.batch(&mut batch);
        seen += batch.meta.len();
        if counting {
            counted += allocations() - before.0;
            flows += w.decoder.stats.flows - before.1;
        }
    }
    assert_eq!(seen, 3 * packets.len());
    assert_eq!(flows, packets.len() as u64 * 30, "the third pass: every flow");
    assert_eq!(counted, 0, "allocations for {} datagrams read from a capture file", packets.len());
}
