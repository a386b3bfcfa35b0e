//! A monitoring object's mo.conf, as an operator writes it (and SIGHUP reloads it while the
//! collector runs): loads, or is a list of errors each naming the file (with a position in it).
#![no_main]
use std::path::PathBuf;
use xenoeye::filter::iplist::IpLists;

/// A directory of one object, `mo/x`, whose mo.conf each input replaces.
fn mo_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("xe-fuzz-mo-{}", std::process::id()));
        std::fs::create_dir_all(base.join("x")).unwrap();
        base
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = mo_dir();
    let file = dir.join("x/mo.conf");
    std::fs::write(&file, data).unwrap();
    if let Err(errors) = xenoeye::objects::load(dir, &IpLists::new()) {
        assert!(!errors.is_empty());
        for e in errors {
            // mo.conf, or a limits file it names.
            assert!(e.file.starts_with(dir), "{e:?}");
        }
    }
});
