//! A notification file read back at start (an alert active when the collector stopped), as
//! the hook thread wrote it, or as a crash, a full disk or a hand left it: it is taken up or
//! left with a reason, and an alert taken up ends once its traffic has been normal for
//! back2norm-time. An input is the file name's key part, a newline, then the file's content.
#![no_main]
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use xenoeye::filter::iplist::IpLists;
use xenoeye::objects::mavg::{take_up_alerts, Phase};

const T0: u64 = 1_700_000_000_000;

/// An object `x` whose moving average `m` has an overlimit `l`, keyed by a field of each kind.
fn base_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let conf = r#"{"mavg": [{"name": "m", "time": 1, "fields": ["src host", "dst host6", "src mac", "proto", "octets"],
            "overlimit": [{"name": "l", "default": [1000], "back2norm-time": 5}]}]}"#;
    DIR.get_or_init(|| xenoeye_fuzz::fuzz_dir("take-up", &[("mo/x/mo.conf", conf), ("n/.keep", "")]))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(nl) = data.iter().position(|&b| b == b'\n') else { return };
    let Ok(key_part) = std::str::from_utf8(&data[..nl]) else { return };
    if key_part.contains('/') || key_part.contains('\0') || key_part.len() > 200 {
        return; // not a file name
    }
    let base = base_dir();
    let notifications = base.join("n");
    let file = notifications.join(format!("x-m-l-{key_part}"));
    std::fs::write(&file, &data[nl + 1..]).unwrap();
    // A fresh table per input: objects loaded anew.
    let objects = xenoeye::objects::load(&base.join("mo"), &IpLists::new()).expect("the object loads");
    let m = &objects.mavgs[0];
    let (tx, rx) = sync_channel(1000);
    m.set_events(Some(tx));
    let done = take_up_alerts(&notifications, &objects.mavgs, T0);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(done.taken.len() + done.left.len(), 1, "{done:?}");
    // No traffic from now: a taken-up alert ends 5 s on, once.
    for s in 1..=7 {
        m.sweep(T0 + s * 1000);
    }
    let ends = rx.try_iter().filter(|e| e.phase == Phase::Back2Norm).count();
    assert_eq!(ends, done.taken.len(), "{done:?}");
});
