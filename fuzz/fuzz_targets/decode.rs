//! Datagrams as an exporter (or anyone who can reach the port) may send them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    xenoeye_fuzz::decode_all(data);
});
