//! The fuzzers' harness (fuzz/src/lib.rs) built and run with the test suite, on every real
//! capture the tests hold: it must decode each as `--read-pcap` does (so a fuzz run starts
//! from inputs that reach deep into the decoder), and it stays compiled as the code changes.

mod common;
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)] // what only the fuzz targets use (fuzz_dir)
mod fuzz;

use common::{data_dir, replay};

fn captures(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            captures(&p, out);
        } else if p.extension().is_some_and(|x| x == "pcap") {
            out.push(p);
        }
    }
}

#[test]
fn the_fuzz_harness_decodes_every_real_capture_as_a_replay_does() {
    let mut files = Vec::new();
    captures(&data_dir(), &mut files);
    files.sort();
    assert!(files.len() >= 50, "{} captures", files.len());
    let mut flows = 0;
    for f in &files {
        let payloads = fuzz::payloads(f);
        let framed = fuzz::frame(payloads.iter().map(Vec::as_slice));
        assert_eq!(fuzz::datagrams(&framed).collect::<Vec<_>>(), payloads, "{}: framing round trip", f.display());
        let (_, reference) = replay(std::slice::from_ref(f));
        let got = fuzz::decode_all(&framed);
        assert_eq!(got, reference.stats.flows, "{}", f.display());
        flows += got;
    }
    assert!(flows >= 700, "{flows} flows in all");
}
