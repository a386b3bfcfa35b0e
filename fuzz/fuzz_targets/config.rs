//! xenoeye.conf and the devices.conf it names, as an operator writes them (read at start):
//! they load, or are a list of errors each naming a file, with a line inside the file.
//! An input is xenoeye.conf, then a NUL byte and devices.conf (no NUL: no devices.conf).
#![no_main]
use std::path::PathBuf;

/// The directory holding both files.
fn conf_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| xenoeye_fuzz::fuzz_dir("config", &[("xenoeye.conf", "")]))
}

/// Lines of `text` (a position's line is at most this).
fn lines(text: &[u8]) -> u32 {
    text.split(|&b| b == b'\n').count() as u32
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = conf_dir();
    let (conf, devices) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let conf_file = dir.join("xenoeye.conf");
    let devices_file = dir.join("devices.conf");
    std::fs::write(&conf_file, conf).unwrap();
    match devices {
        Some(text) => std::fs::write(&devices_file, text).unwrap(),
        None => {
            let _ = std::fs::remove_file(&devices_file);
        }
    }
    if let Err(errors) = xenoeye::config::load(&conf_file) {
        assert!(!errors.is_empty());
        for e in errors {
            if e.file == conf_file {
                assert!(e.line <= lines(conf), "{e:?}");
            } else if e.file == devices_file {
                assert!(e.line <= lines(devices.unwrap_or_default()), "{e:?}");
            }
        }
    }
});
