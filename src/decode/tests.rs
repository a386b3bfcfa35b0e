//! Decoder tests on crafted datagrams: the cases real captures rarely show on demand.

use super::*;
use crate::testdir::TestDir;
use crate::testrand::XorShift;
use crate::devices::Device;

/// Collects decoded flows (and options records) for assertions.
#[derive(Default)]
pub(crate) struct Collect {
    pub flows: Vec<Flow>,
    pub options: usize,
}

impl FlowSink for Collect {
    fn flow(&mut self, flow: &Flow, _r: &RecordView<'_>) {
        self.flows.push(flow.clone());
    }
    fn options_record(&mut self, _r: &RecordView<'_>) {
        self.options += 1;
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend(x.to_be_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend(x.to_be_bytes());
}

/// A set: id, then body padded to a multiple of 4.
fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    put16(&mut v, id);
    put16(&mut v, (body.len() + 4) as u16);
    v.extend(body);
    v
}

fn template_body(id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    put16(&mut v, id);
    put16(&mut v, fields.len() as u16);
    for &(ie, len) in fields {
        put16(&mut v, ie);
        put16(&mut v, len);
    }
    v
}

fn ipfix(domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = sets.concat();
    let mut v = Vec::new();
    put16(&mut v, 10);
    put16(&mut v, (16 + body.len()) as u16);
    put32(&mut v, 1_700_000_000);
    put32(&mut v, 1);
    put32(&mut v, domain);
    v.extend(body);
    v
}

fn v9(source_id: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    put16(&mut v, 9);
    put16(&mut v, sets.len() as u16);
    put32(&mut v, 1000);
    put32(&mut v, 1_700_000_000);
    put32(&mut v, 1);
    put32(&mut v, source_id);
    v.extend(sets.concat());
    v
}

const TPL: &[(u16, u16)] = &[(8, 4), (12, 4), (4, 1), (1, 4), (2, 4)];

fn record(src: [u8; 4], dst: [u8; 4], proto: u8, octets: u32, packets: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(src);
    v.extend(dst);
    v.push(proto);
    put32(&mut v, octets);
    put32(&mut v, packets);
    v
}

fn exporter() -> IpAddr {
    "192.0.2.1".parse().unwrap()
}

fn run(d: &mut Decoder, bytes: &[u8]) -> Collect {
    let mut c = Collect::default();
    d.decode(&Datagram { bytes, exporter: exporter(), time_ms: 5000 }, &mut c);
    c
}

fn decoder() -> Decoder {
    Decoder::new(Arc::new(Devices::default()), None)
}

#[test]
fn data_before_template_is_dropped_and_counted() {
    let mut d = decoder();
    let data = set(256, &record([1, 1, 1, 1], [2, 2, 2, 2], 6, 100, 1));
    let c = run(&mut d, &ipfix(1, std::slice::from_ref(&data)));
    assert!(c.flows.is_empty());
    assert_eq!(d.stats.error(DecodeError::NoTemplate), 1);
    let c = run(&mut d, &ipfix(1, &[set(2, &template_body(256, TPL)), data]));
    assert_eq!(c.flows.len(), 1);
    let f = &c.flows[0];
    assert_eq!(f.get(FieldId::SrcHost), Some(0x01010101));
    assert_eq!(f.get(FieldId::Octets), Some(100));
    assert_eq!(f.get(FieldId::DevId), Some(1));
    assert_eq!(f.get(FieldId::Rate), Some(1));
    assert_eq!(f.addr(FieldId::DevIp), Some(exporter()));
    assert_eq!(f.time_ms, 5000);
    assert_eq!(d.stats.templates_new, 1);
    assert_eq!(d.exporters[&exporter()].flows, 1);
}

#[test]
fn templates_are_per_domain() {
    let mut d = decoder();
    run(&mut d, &ipfix(1, &[set(2, &template_body(256, TPL))]));
    let c = run(&mut d, &ipfix(2, &[set(256, &record([1, 1, 1, 1], [2, 2, 2, 2], 6, 1, 1))]));
    assert!(c.flows.is_empty());
    assert_eq!(d.stats.error(DecodeError::NoTemplate), 1);
}

#[test]
fn two_messages_in_one_datagram() {
    let mut d = decoder();
    let mut dg = ipfix(1, &[set(2, &template_body(256, TPL))]);
    let recs = [record([1, 1, 1, 1], [2, 2, 2, 2], 6, 10, 1), record([3, 3, 3, 3], [4, 4, 4, 4], 17, 20, 2)].concat();
    dg.extend(ipfix(1, &[set(256, &recs)]));
    let c = run(&mut d, &dg);
    assert_eq!(c.flows.len(), 2);
    assert_eq!(c.flows[1].get(FieldId::Proto), Some(17));
    assert_eq!(d.stats.total_errors(), 0);
}

#[test]
fn withdrawal_and_redefinition() {
    let mut d = decoder();
    run(&mut d, &ipfix(1, &[set(2, &template_body(256, TPL))]));
    // Redefinition: same id, other layout.
    run(&mut d, &ipfix(1, &[set(2, &template_body(256, &[(7, 2), (11, 2)]))]));
    assert_eq!(d.stats.templates_changed, 1);
    let c = run(&mut d, &ipfix(1, &[set(256, &[0, 80, 1, 187])]));
    assert_eq!(c.flows[0].get(FieldId::SrcPort), Some(80));
    assert_eq!(c.flows[0].get(FieldId::DstPort), Some(443));
    // Withdrawal: field count 0.
    run(&mut d, &ipfix(1, &[set(2, &[1, 0, 0, 0])]));
    assert_eq!(d.stats.templates_withdrawn, 1);
    let c = run(&mut d, &ipfix(1, &[set(256, &[0, 80, 1, 187])]));
    assert!(c.flows.is_empty());
    // Withdraw all (template id 2).
    run(&mut d, &ipfix(1, &[set(2, &template_body(300, TPL)), set(2, &template_body(301, TPL))]));
    run(&mut d, &ipfix(1, &[set(2, &[0, 2, 0, 0])]));
    assert_eq!(d.template_count(), 0);
}

#[test]
fn resent_template_is_not_a_change() {
    let mut d = decoder();
    for _ in 0..3 {
        run(&mut d, &v9(7, &[set(0, &template_body(256, TPL))]));
    }
    assert_eq!((d.stats.templates_new, d.stats.templates_changed), (1, 0));
}

#[test]
fn v9_options_sampling_rate_and_devices_override() {
    // Options template 257: scope system (1, 4 bytes), samplingInterval (34, 4 bytes).
    let mut opt = Vec::new();
    put16(&mut opt, 257);
    put16(&mut opt, 4);
    put16(&mut opt, 4);
    for (ie, len) in [(1u16, 4u16), (34, 4)] {
        put16(&mut opt, ie);
        put16(&mut opt, len);
    }
    opt.extend([0, 0]); // padding
    let mut opt_data = Vec::new();
    put32(&mut opt_data, 0);
    put32(&mut opt_data, 100);
    let data = set(256, &record([1, 1, 1, 1], [2, 2, 2, 2], 6, 50, 2));
    let dg = v9(7, &[set(0, &template_body(256, TPL)), set(1, &opt), set(257, &opt_data), data]);

    let mut d = decoder();
    let c = run(&mut d, &dg);
    assert_eq!(c.options, 1);
    assert_eq!(c.flows[0].get(FieldId::Octets), Some(5000));
    assert_eq!(c.flows[0].get(FieldId::Packets), Some(200));
    assert_eq!(c.flows[0].get(FieldId::Rate), Some(100));
    assert_eq!(d.stats.total_errors(), 0, "{:?}", d.stats);

    let devices = Devices::new(vec![Device { ip: exporter(), id: Some(7), sampling_rate: 10 }]);
    let mut d = Decoder::new(Arc::new(devices), None);
    let c = run(&mut d, &dg);
    assert_eq!(c.flows[0].get(FieldId::Octets), Some(500));
    assert_eq!(c.flows[0].get(FieldId::Rate), Some(10));
}

#[test]
fn netflow5_header_sampling() {
    let mut dg = vec![0, 5, 0, 1];
    dg.extend([0; 16]);
    dg.extend([1, 2]); // engine type, id
    dg.extend((0x4000u16 | 64).to_be_bytes()); // mode 1, interval 64
    let mut rec = vec![0u8; 48];
    rec[0..4].copy_from_slice(&[10, 0, 0, 1]);
    rec[16..20].copy_from_slice(&2u32.to_be_bytes());
    rec[20..24].copy_from_slice(&300u32.to_be_bytes());
    rec[38] = 17;
    dg.extend(rec);
    let mut d = decoder();
    let c = run(&mut d, &dg);
    assert_eq!(c.flows.len(), 1);
    let f = &c.flows[0];
    assert_eq!(f.get(FieldId::Octets), Some(300 * 64));
    assert_eq!(f.get(FieldId::Packets), Some(2 * 64));
    assert_eq!(f.get(FieldId::Proto), Some(17));
    assert_eq!(f.get(FieldId::DevId), Some(0x0102));
    // Count larger than the datagram.
    let c = run(&mut d, &dg[..dg.len() - 1]);
    assert!(c.flows.is_empty());
    assert_eq!(d.stats.error(DecodeError::BadLength), 1);
}

#[test]
fn templates_survive_a_restart() {
    let dir = TestDir::new("tpl");
    let path = dir.join("templates.db");
    let _ = std::fs::remove_file(&path);
    {
        let (store, warn) = TemplateStore::open(Some(&path));
        assert!(warn.is_none());
        let store = Arc::new(store);
        let mut d = Decoder::new(Arc::new(Devices::default()), Some(store.clone()));
        run(&mut d, &v9(7, &[set(0, &template_body(256, TPL))]));
        run(&mut d, &ipfix(3, &[set(2, &template_body(400, &[(7, 2), (11, 2)]))]));
        assert!(store.save_if_dirty().unwrap());
        assert!(!store.save_if_dirty().unwrap(), "nothing changed since");
    }
    let (store, _) = TemplateStore::open(Some(&path));
    let mut d = Decoder::new(Arc::new(Devices::default()), Some(Arc::new(store)));
    assert_eq!(d.template_count(), 2);
    let c = run(&mut d, &v9(7, &[set(256, &record([9, 9, 9, 9], [8, 8, 8, 8], 1, 7, 1))]));
    assert_eq!(c.flows.len(), 1);
    assert_eq!(c.flows[0].get(FieldId::SrcHost), Some(0x09090909));
    let c = run(&mut d, &ipfix(3, &[set(400, &[0, 1, 0, 2])]));
    assert_eq!(c.flows[0].get(FieldId::DstPort), Some(2));
}


#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = XorShift(0x9E3779B97F4A7C15);
    let mut d = decoder();
    for i in 0..200_000u32 {
        let len = (rng.next() % 300) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if b.len() >= 2 {
            // Mostly valid versions, so the parsers behind the version check are exercised.
            let v = [5u16, 9, 10, 10, 9][i as usize % 5];
            b[..2].copy_from_slice(&v.to_be_bytes());
        }
        let mut c = Collect::default();
        d.decode(&Datagram { bytes: &b, exporter: exporter(), time_ms: 0 }, &mut c);
    }
    assert_eq!(d.stats.datagrams, 200_000);
    assert!(d.template_count() <= cache::MAX_TEMPLATES);
}

#[test]
fn mutated_valid_datagrams_never_panic() {
    let recs = [record([1, 1, 1, 1], [2, 2, 2, 2], 6, 10, 1), record([3, 3, 3, 3], [4, 4, 4, 4], 17, 20, 2)].concat();
    let var_tpl = template_body(260, &[(4, 1), (82, 0xFFFF), (7, 2)]);
    let seeds = [
        ipfix(1, &[set(2, &template_body(256, TPL)), set(256, &recs)]),
        ipfix(1, &[set(2, &var_tpl), set(260, &[6, 3, b'a', b'b', b'c', 0, 80, 17, 255, 0, 2, 1, 2, 0, 53])]),
        v9(7, &[set(0, &template_body(256, TPL)), set(256, &recs)]),
    ];
    let mut rng = XorShift(42);
    let mut d = decoder();
    for i in 0..100_000usize {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..1 + rng.next() % 4 {
            let pos = (rng.next() as usize) % b.len();
            b[pos] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            b.truncate((rng.next() as usize) % b.len());
        }
        let mut c = Collect::default();
        d.decode(&Datagram { bytes: &b, exporter: exporter(), time_ms: 0 }, &mut c);
    }
    assert!(d.stats.flows > 0, "some mutations keep records decodable");
    assert!(d.stats.total_errors() > 0, "and some are counted as errors");
}

#[test]
fn both_wires_walk_sets_alike_skipping_reserved_ones_and_stopping_at_zero_fill() {
    type Message = fn(u32, &[Vec<u8>]) -> Vec<u8>;
    for (wire, template_set, message) in [(Wire::V9, 0, v9 as Message), (Wire::Ipfix, 2, ipfix)] {
        let reserved = set(if wire == Wire::V9 { 2 } else { 1 }, &[0xff; 8]);
        let data = set(256, &record([1, 1, 1, 1], [2, 2, 2, 2], 6, 100, 1));
        let fill = vec![0u8; 8];
        let mut d = decoder();
        let c = run(&mut d, &message(7, &[set(template_set, &template_body(256, TPL)), reserved, data.clone(), fill]));
        assert_eq!(c.flows.len(), 1, "{wire:?}");
        assert_eq!(d.stats.total_errors(), 0, "{wire:?}");
        // A set running past the end: counted; the sets before it decoded.
        let mut cut = set(256, &record([3, 3, 3, 3], [4, 4, 4, 4], 17, 5, 1));
        cut[3] += 4;
        let c = run(&mut d, &message(7, &[data, cut]));
        assert_eq!(c.flows.len(), 1, "{wire:?}");
        assert_eq!(d.stats.error(DecodeError::BadSet), 1, "{wire:?}");
    }
}
