//! The hot path after the socket, in memory: decode -> filter -> aggregate into fixed windows,
//! on the standard load test's objects (benches/conf, a copy of ../shared/tools/bench/bench-conf)
//! and the load generator's packets (benches/data). The clock advances as at 66,667 datagrams per
//! second (2M flows/s), so windows close and restart as they do live. Also: IP-list lookups in a
//! list of 100,000 prefixes.

mod common;

use common::load;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::sync::mpsc::channel;
use std::sync::Arc;
use xenoeye::daemon::{load_objects, Pipeline};
use xenoeye::objects::LiveObjects;
use xenoeye::decode::{Datagram, Decoder};
use xenoeye::filter::iplist::{parse_network, IpList};
use xenoeye::filter::ranges::RangeSet;

fn pipeline(c: &mut Criterion) {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/conf/xenoeye.conf");
    let cfg = xenoeye::config::load(&conf).unwrap();
    let objects = Arc::new(load_objects(&cfg).unwrap());
    assert_eq!(objects.windows.len(), 8);
    let (tx, rx) = channel();
    let mut pipeline = Pipeline::new(&cfg, &LiveObjects::new(objects.clone()), 0, tx).unwrap();
    let mut decoder = Decoder::new(Arc::new(cfg.devices.clone()), None);
    let packets = load("nfgen-v9.bin");
    let exporter = "127.0.0.2".parse().unwrap();
    // 66,667 datagrams per second: 15 microseconds each, kept in microseconds.
    let mut now_us: u64 = 1_795_755_180_000_000;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(packets.len() as u64 * 30));
    g.bench_function("nfgen_v9_bench_conf", |b| {
        b.iter(|| {
            for p in &packets {
                now_us += 15;
                let t = now_us / 1000;
                pipeline.tick(t);
                decoder.decode(&Datagram { bytes: black_box(p), exporter, time_ms: t }, &mut pipeline);
            }
            // Closed windows would go to the export thread; here they are dropped.
            for m in rx.try_iter() {
                drop(black_box(m));
            }
        })
    });
    g.finish();
    assert_eq!(decoder.stats.total_errors(), 0);
}

fn iplist(c: &mut Criterion) {
    // 100,000 random /24../32 prefixes.
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ranges = Vec::new();
    for _ in 0..100_000 {
        let a = next() as u32;
        let len = 24 + next() % 9;
        let text = format!("{}/{len}", std::net::Ipv4Addr::from(a));
        let (_, lo, hi) = parse_network(&text).unwrap();
        ranges.push((lo, hi));
    }
    let list = IpList { v4: RangeSet::new(ranges), v6: RangeSet::default() };
    let probes: Vec<u128> = (0..4096).map(|_| (next() as u32) as u128).collect();
    let mut g = c.benchmark_group("iplist");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("contains_100k_prefixes", |b| {
        b.iter(|| probes.iter().filter(|&&p| list.v4.contains(black_box(p))).count())
    });
    g.finish();
}

criterion_group!(benches, pipeline, iplist);
criterion_main!(benches);
