//! Go-style reading of JSON bytes (process_core/go_json.rs): invalid UTF-8 becomes U+FFFD
//! as Go does, lone surrogate escapes are replaced; valid JSON stays valid JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::process_core::go_json::{as_go_reads, lone_surrogates_replaced, lossy_utf8};

fuzz_target!(|data: &[u8]| {
    let lossy = lossy_utf8(data);
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(lossy, s);
    }
    let _ = lone_surrogates_replaced(&lossy);
    let _ = as_go_reads(data);
});
