//! A monitoring object's mo.conf, as an operator writes it (and SIGHUP reloads it while the
//! collector runs): loads, or is a list of errors each naming the file (with a position in it).
#![no_main]
use std::path::PathBuf;

/// A directory of one object, `mo/x`, whose mo.conf each input replaces.
fn mo_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| xenoeye_fuzz::fuzz_dir("mo", &[("x/mo.conf", "")]))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = mo_dir();
    let file = dir.join("x/mo.conf");
    std::fs::write(&file, data).unwrap();
    xenoeye_fuzz::load_objects_or_errors_in(dir);
});
