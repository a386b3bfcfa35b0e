//! Writes a seed corpus for the decode target from capture files: one input per capture
//! (its first datagrams, templates first as the exporter sent them) and one per datagram.
//! usage: seed OUT_DIR CAPTURE...

use xenoeye_fuzz::payloads;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, captures) = args.split_first().expect("usage: seed OUT_DIR CAPTURE...");
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out).unwrap();
    let mut written = 0;
    for capture in captures {
        let path = std::path::Path::new(capture);
        let name = path.file_stem().unwrap().to_string_lossy();
        let all = payloads(path);
        let first = all.iter().take(8).map(Vec::as_slice);
        std::fs::write(out.join(format!("{name}-first")), xenoeye_fuzz::frame(first)).unwrap();
        for (i, d) in all.iter().take(32).enumerate() {
            std::fs::write(out.join(format!("{name}-{i}")), xenoeye_fuzz::frame([d.as_slice()])).unwrap();
        }
        written += 1 + all.len().min(32);
    }
    println!("{written} inputs in {}", out.display());
}
