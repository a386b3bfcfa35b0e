//! The templates file (`templates.db`), read at start so that data decodes at once after a
//! restart: whatever it holds (a file damaged by a full disk, or another program's), the
//! collector starts and decodes what arrives. An input is framed as the decode target's: the
//! first piece is the file, the rest datagrams from the exporter the file's templates may name.
#![no_main]
use std::path::PathBuf;
use std::sync::Arc;
use xenoeye::decode::cache::TemplateStore;

fn store_file() -> &'static PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| xenoeye_fuzz::fuzz_dir("templates", &[]).join("templates.db"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut pieces = xenoeye_fuzz::datagrams(data);
    let Some(file_bytes) = pieces.next() else { return };
    let file = store_file();
    std::fs::write(file, file_bytes).unwrap();
    let (store, warning) = TemplateStore::open(Some(file));
    let stored = store.snapshot().len();
    assert!(warning.is_none() || stored == 0, "a damaged file is ignored as a whole");
    xenoeye_fuzz::decode_with(pieces, Some(Arc::new(store)));
});
