//! Decode speed on the packets of the standard load generator (../shared/tools/bench/nfgen.c,
//! captured into benches/data: 256 datagrams of 30 flows, v9 and IPFIX). Measures receive-side
//! work after the socket: decode into the flow record, virtual fields, sampling, sink call.

mod common;

use common::load;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use xenoeye::decode::{Datagram, Decoder, FlowSink, RecordView};
use xenoeye::devices::Devices;
use xenoeye::fields::FieldId;
use xenoeye::flow::Flow;

/// Touches every flow so the work cannot be optimised away.
struct Sum(u128);
impl FlowSink for Sum {
    #[inline]
    fn flow(&mut self, flow: &Flow, _r: &RecordView<'_>) {
        self.0 += flow.get_or_zero(FieldId::Octets) + flow.get_or_zero(FieldId::DstHost);
    }
}

fn bench_version(c: &mut Criterion, name: &str, file: &str) {
    let packets = load(file);
    let mut decoder = Decoder::new(Arc::new(Devices::default()), None);
    let exporter = "127.0.0.2".parse().unwrap();
    let mut sum = Sum(0);
    for p in &packets {
        decoder.decode(&Datagram { bytes: p, exporter, time_ms: 0 }, &mut sum);
    }
    let flows_per_round = decoder.stats.flows;
    assert_eq!(flows_per_round, packets.len() as u64 * 30);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(flows_per_round));
    g.bench_function(name, |b| {
        b.iter(|| {
            for p in &packets {
                decoder.decode(&Datagram { bytes: black_box(p), exporter, time_ms: 0 }, &mut sum);
            }
        })
    });
    g.finish();
    black_box(sum.0);
}

fn decode(c: &mut Criterion) {
    bench_version(c, "nfgen_v9", "nfgen-v9.bin");
    bench_version(c, "nfgen_ipfix", "nfgen-v10.bin");
}

criterion_group!(benches, decode);
criterion_main!(benches);
