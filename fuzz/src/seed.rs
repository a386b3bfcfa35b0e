//! Writes a seed corpus from capture files, for the decode target: one input per capture (its
//! first datagrams, templates first as the exporter sent them) and one per datagram; for the
//! templates target (`--templates`): per capture, the templates file a run over the whole
//! capture leaves, then its first datagrams.
//! usage: seed [--templates] OUT_DIR CAPTURE...

use std::sync::Arc;
use xenoeye::decode::cache::TemplateStore;
use xenoeye_fuzz::{decode_with, frame, payloads};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let templates = args.first().is_some_and(|a| a == "--templates");
    if templates {
        args.remove(0);
    }
    let (out, captures) = args.split_first().expect("usage: seed [--templates] OUT_DIR CAPTURE...");
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out).unwrap();
    let mut written = 0;
    for capture in captures {
        let path = std::path::Path::new(capture);
        let name = path.file_stem().unwrap().to_string_lossy();
        let all = payloads(path);
        let first = all.iter().take(8).map(Vec::as_slice);
        if templates {
            let Some(file) = templates_file(&all, out) else { continue };
            std::fs::write(out.join(&*name), frame(std::iter::once(file.as_slice()).chain(first))).unwrap();
            written += 1;
            continue;
        }
        std::fs::write(out.join(format!("{name}-first")), frame(first)).unwrap();
        for (i, d) in all.iter().take(32).enumerate() {
            std::fs::write(out.join(format!("{name}-{i}")), frame([d.as_slice()])).unwrap();
        }
        written += 1 + all.len().min(32);
    }
    println!("{written} inputs in {}", out.display());
}

/// The templates file after decoding `datagrams` (None: they hold no template).
fn templates_file(datagrams: &[Vec<u8>], scratch: &std::path::Path) -> Option<Vec<u8>> {
    let path = scratch.join("templates.db.tmp");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(TemplateStore::open(Some(&path)).0);
    decode_with(datagrams.iter().map(Vec::as_slice), Some(store.clone()));
    store.save_if_dirty().unwrap();
    let bytes = std::fs::read(&path).ok();
    let _ = std::fs::remove_file(&path);
    bytes
}
