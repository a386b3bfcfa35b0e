//! Shared by the benchmarks: the load generator's datagrams, captured into benches/data as
//! (16-bit big-endian length, payload) records.

pub fn load(name: &str) -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data").join(name);
    load_path(&path)
}

/// Datagrams from a capture in the same format anywhere.
#[allow(dead_code)]
pub fn load_path(path: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("bench data");
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 2 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        out.push(bytes[pos + 2..pos + 2 + len].to_vec());
        pos += 2 + len;
    }
    out
}

/// A xorshift64 generator from `seed`: the same random inputs on every run.
#[allow(dead_code)]
pub fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
