//! A monitoring object's mo.lua (code that returns the object's configuration, run at start
//! and at every SIGHUP): it loads, or is a list of errors naming mo.lua, within its
//! instruction and memory budget and the bounds on what it returns.
#![no_main]
use std::path::PathBuf;

/// A directory of one object, `x`, whose mo.lua each input replaces (`customers` beside it
/// for `xe.read_lines`).
fn mo_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| xenoeye_fuzz::fuzz_dir("mo-lua", &[("x/mo.lua", ""), ("x/customers", "alpha 10.1.0.0/16\nbeta 10.2.0.0/16\n")]))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = mo_dir();
    let file = dir.join("x/mo.lua");
    std::fs::write(&file, data).unwrap();
    xenoeye_fuzz::load_objects_or_errors_in(dir);
});
