//! A limits file (key values then thresholds per line, as scripts often generate them), read
//! at start and at every SIGHUP: loads, or is an error naming the file and the line.
#![no_main]
use std::path::PathBuf;
use xenoeye::filter::iplist::IpLists;

/// An object whose moving average's limit reads `limits.csv`, keyed by a field of each kind.
fn mo_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let conf = r#"{"mavg": [{"name": "m", "fields": ["src host", "dst host6", "src mac", "proto", "octets", "packets"],
            "overlimit": [{"name": "l", "default": [1, 1], "limits": "limits.csv"}]}]}"#;
    DIR.get_or_init(|| xenoeye_fuzz::fuzz_dir("limits", &[("x/mo.conf", conf)]))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = mo_dir();
    let file = dir.join("x/limits.csv");
    std::fs::write(&file, data).unwrap();
    if let Err(errors) = xenoeye::objects::load(dir, &IpLists::new()) {
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, file, "{errors:?}");
        let lines = data.split(|&b| b == b'\n').count() as u32;
        // Line 0: the file as a whole (not UTF-8).
        assert!(errors[0].line <= lines, "{errors:?}");
    }
});
