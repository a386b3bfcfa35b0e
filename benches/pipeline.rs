//! The hot path after the socket, in memory: decode -> filter -> aggregate into fixed windows
//! and moving averages, on the standard load test's objects (benches/conf, a copy of
//! ../shared/tools/bench/bench-conf) and variants of their moving averages (see VARIANTS),
//! and the load generator's packets (benches/data). The clock advances as at 66,667 datagrams per
//! second (2M flows/s), so windows close and restart as they do live. Also: IP-list lookups in a
//! list of 100,000 prefixes, key packing, and the moving averages' sweep.

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

/// The bench-conf variants: as is, and with its `mavg` arrays rewritten.
const VARIANTS: [(&str, &str); 5] = [
    ("nfgen_v9_bench_conf", ""),
    // The fixed windows alone: what the moving averages cost.
    ("nfgen_v9_no_mavg", "none"),
    // Every object with a second moving average with a threshold (issue: at most -10%).
    ("nfgen_v9_two_mavgs", "two"),
    // The same, the second keyed like the first (by address): the two share a table.
    ("nfgen_v9_two_mavgs_same_key", "two-same"),
    // A threshold that busy hosts cross all the time: starts, updates and back-to-normals.
    ("nfgen_v9_threshold_flood", "flood"),
];

/// A copy of benches/conf in a temporary directory with every object's `mavg` rewritten.
fn variant_conf(how: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/conf");
    if how.is_empty() {
        return src.join("xenoeye.conf");
    }
    let dir = std::env::temp_dir().join(format!("xe-bench-conf-{how}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for f in ["xenoeye.conf", "devices.conf", "iplists/my-nets"] {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    for o in ["ingress", "egress"] {
        let text = std::fs::read_to_string(src.join("mo").join(o).join("mo.conf")).unwrap();
        let host = if o == "ingress" { "dst host" } else { "src host" };
        let (head, _) = text.split_once("\t\"mavg\"").unwrap();
        let old_mavg = &text[head.len()..text.rfind(']').unwrap() + 1];
        let second_keys = if how == "two-same" { format!(r#""{host}""#) } else { format!(r#""{host}", "proto""#) };
        let second = format!(
            r#"{{ "name": "pps", "time": 5, "fields": [{second_keys}, "packets"],
              "overlimit": [ {{ "name": "level1", "default": [1000000000], "back2norm-time": 10 }} ] }}"#
        );
        let mavg = match how {
            "none" => "\"mavg\": []".to_string(),
            "two" | "two-same" => old_mavg.replacen("} ] }", &format!("}} ] }},\n\t\t{second}"), 1),
            "flood" => old_mavg.replace("[1000000000000]", "[400000]"),
            _ => unreachable!(),
        };
        assert_ne!(mavg, old_mavg, "{how}: the mavg array was rewritten");
        let conf = text.replacen(old_mavg, &mavg, 1);
        std::fs::create_dir_all(dir.join("mo").join(o)).unwrap();
        std::fs::write(dir.join("mo").join(o).join("mo.conf"), conf).unwrap();
    }
    dir.join("xenoeye.conf")
}

fn pipeline(c: &mut Criterion) {
    // XE_PIPELINE_DATA: another capture in the same format (benches/capture-nfgen.sh), e.g.
    // 4096 distinct datagrams, whose key sets outgrow the caches as in the load test.
    let packets = match std::env::var_os("XE_PIPELINE_DATA") {
        Some(path) => common::load_path(std::path::Path::new(&path)),
        None => load("nfgen-v9.bin"),
    };
    let exporter = "127.0.0.2".parse().unwrap();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(packets.len() as u64 * 30));
    for (name, how) in VARIANTS {
        let conf = variant_conf(how);
        let cfg = xenoeye::config::load(&conf).unwrap();
        let objects = Arc::new(load_objects(&cfg).unwrap());
        assert_eq!(objects.windows.len(), 8);
        let mavgs = match how {
            "none" => 0,
            "two" | "two-same" => 4,
            _ => 2,
        };
        assert_eq!(objects.mavgs.len(), mavgs, "{name}");
        let shared = objects.mavgs.iter().filter(|m| m.shares_table()).count();
        // (By address and protocol, the second is nested in the first's table.)
        assert_eq!(shared, if how.starts_with("two") { 4 } else { 0 }, "{name}: averages sharing a table");
        let (tx, rx) = channel();
        let mut pipeline = Pipeline::new(&cfg, &LiveObjects::new(objects.clone()), 0, tx).unwrap();
        let mut decoder = Decoder::new(Arc::new(cfg.devices.clone()), None);
        if !how.is_empty() {
            // The rewritten copy is read at loading only.
            std::fs::remove_dir_all(conf.parent().unwrap()).unwrap();
        }
        // 66,667 datagrams per second: 15 microseconds each, kept in microseconds.
        let start_us: u64 = 1_795_755_180_000_000;
        let mut now_us = start_us;
        g.bench_function(name, |b| {
            b.iter(|| {
                for p in &packets {
                    now_us += 15;
                    let t = pipeline.tick(now_us / 1000);
                    decoder.decode(&Datagram { bytes: black_box(p), exporter, time_ms: t }, &mut pipeline);
                }
                // Closed windows would go to the export thread; here they are dropped.
                for m in rx.try_iter() {
                    drop(black_box(m));
                }
            })
        });
        assert_eq!(decoder.stats.total_errors(), 0);
        // (A quick `--test` run moves the clock too little for any average to build up.)
        if how == "flood" && now_us - start_us > 20_000_000 {
            let active: usize = objects.mavgs.iter().map(|m| m.stats.active.load(std::sync::atomic::Ordering::Relaxed)).sum();
            assert!(active > 1000, "the threshold is crossed: {active} active limits");
        }
    }
    g.finish();
}

fn iplist(c: &mut Criterion) {
    // 100,000 random /24../32 prefixes.
    let mut next = common::xorshift(0x2545F4914F6CDD1D);
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

/// Packing a flow's key, as every window and moving average does for every flow it takes: the
/// keys of the bundled configuration and the guide (one address, one number, an address and a
/// protocol, who talks to whom and how), their IPv6 versions, and a key of four fields (packed
/// place by place). Per flow, over 1,024 flows of random addresses and ports.
fn key_packing(c: &mut Criterion) {
    use xenoeye::fields::FieldId::{self, *};
    use xenoeye::flow::Flow;
    use xenoeye::objects::rows::{KeyLayout, MAX_WORDS};
    let mut next = common::xorshift(0x2545_f491_4f6c_dd1d);
    let flows: Vec<Flow> = (0..1024)
        .map(|_| {
            let mut f = Flow::default();
            for id in [SrcHost, DstHost] {
                f.set(id, next() as u32 as u128);
            }
            for id in [SrcHost6, DstHost6] {
                f.set(id, (next() as u128) << 64 | next() as u128);
            }
            f.set(Proto, [6, 17, 1][next() as usize % 3]);
            f.set(SrcPort, (next() % 65536) as u128);
            f.set(DstPort, (next() % 65536) as u128);
            f
        })
        .collect();
    let keys: [(&str, &[FieldId]); 7] = [
        ("dst_host", &[DstHost]),
        ("proto", &[Proto]),
        ("src_host_proto", &[SrcHost, Proto]),
        ("src_dst_host_proto", &[SrcHost, DstHost, Proto]),
        ("src_host6_proto", &[SrcHost6, Proto]),
        ("src_dst_host6", &[SrcHost6, DstHost6]),
        ("src_dst_host_ports", &[SrcHost, DstHost, SrcPort, DstPort]),
    ];
    let mut g = c.benchmark_group("key_packing");
    g.throughput(Throughput::Elements(flows.len() as u64));
    for (name, fields) in keys {
        let layout = KeyLayout::new(fields);
        let mut out = [0u64; MAX_WORDS];
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut x = 0;
                for f in &flows {
                    // As in a worker, nothing of the layout is known before the call.
                    black_box(&layout).pack(black_box(f), &mut out);
                    x ^= out[0] ^ out[layout.words - 1];
                }
                x
            })
        });
    }
    g.finish();
}

/// The once-per-second sweep of a moving average holding 1,000,000 keys (a flood from spoofed
/// sources), which a worker runs in its flow path: per key and sweep. All keys quiet (under
/// the threshold), or one in ten over it; or, with an underlimit instead (whose sweep looks at
/// every row: traffic that stopped shows nowhere else), every key long past its first flow
/// and none under, or one in ten new (its average still filling, which its state tells).
fn sweep(c: &mut Criterion) {
    use xenoeye::fields::FieldId;
    use xenoeye::flow::Flow;
    const KEYS: u32 = 1_000_000;
    const T0: u64 = 1_795_755_180_000;
    let dir = std::env::temp_dir().join(format!("xe-bench-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mo.conf");
    let mut g = c.benchmark_group("mavg_sweep");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.sample_size(20);
    let over = r#"{"name": "m", "time": 10, "fields": ["src host", "octets"],
        "overlimit": [{"name": "l", "default": [1000], "back2norm-time": 10}]}"#;
    // A threshold of 0: no average is ever under it.
    let under = r#"{"name": "m", "time": 10, "fields": ["src host", "octets"],
        "underlimit": [{"name": "l", "default": [0], "back2norm-time": 10}]}"#;
    // (name, configuration, one key in how many over, one in how many new, when the sweep runs)
    let cases = [
        ("quiet", over, 0, 0, T0 + 1000),
        ("one_in_ten_over", over, 10, 0, T0 + 1000),
        ("underlimit_steady", under, 0, 0, T0 + 200_000),
        ("underlimit_one_in_ten_filling", under, 0, 10, T0 + 200_000),
    ];
    for (name, conf, over_every, new_every, sweep_at) in cases {
        let node = xenoeye::config::json::parse(conf, &file).unwrap();
        // Filled when the benchmark runs (not when a filter leaves it out).
        let mut table = None;
        g.bench_function(name, |b| {
            let m = table.get_or_insert_with(|| {
                let m = Arc::new(xenoeye::objects::mavg::parse(&file, "obj", &dir, &node, 0).unwrap());
                let mut flow = Flow::default();
                let is_new = |k: &u32| new_every != 0 && k.is_multiple_of(new_every);
                let mut add = |k: u32, at: u64| {
                    flow.set(FieldId::SrcHost, k as u128);
                    let over = over_every != 0 && k.is_multiple_of(over_every);
                    flow.set(FieldId::Octets, if over { 100_000 } else { 100 });
                    m.update(&flow, at);
                };
                for k in (0..KEYS).filter(|k| !is_new(k)) {
                    add(k, T0);
                }
                if conf == under {
                    // The keys' averages have filled (a sweep notes it, as the collector's
                    // sweep every second would have); the new ones come a second before the
                    // measured sweeps.
                    m.sweep(sweep_at - 1000);
                    for k in (0..KEYS).filter(is_new) {
                        add(k, sweep_at - 1000);
                    }
                }
                assert_eq!(m.stats.keys.load(std::sync::atomic::Ordering::Relaxed), KEYS as usize);
                m
            });
            // Overlimit: within back2norm-time of the last update and far from forgetting.
            // Underlimit: keys are never forgotten; every sweep does the same work.
            b.iter(|| m.sweep(black_box(sweep_at)))
        });
    }
    g.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, pipeline, iplist, key_packing, sweep);
criterion_main!(benches);
