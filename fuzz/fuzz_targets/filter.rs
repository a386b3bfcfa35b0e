//! Filter text, as mo.conf files and Lua-defined objects give it: compiles or is an error
//! naming a column within the text, and a compiled filter matches flows without failing.
#![no_main]
use xenoeye::filter::{compile, iplist::IpLists};
use xenoeye::flow::Flow;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match compile(text, &IpLists::new()) {
        Ok(f) => {
            std::hint::black_box(f.matches(&Flow::default()));
        }
        Err(e) => assert!(e.col >= 1 && e.col <= text.chars().count() + 1, "column {} of {:?}", e.col, text),
    }
});
