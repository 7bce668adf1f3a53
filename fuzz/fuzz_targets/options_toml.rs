//! The TOML subset parser for CRI's runtime options (containerd/options/toml.rs, reached
//! through `options_from_toml`). Seeds: fuzz/seeds/options_toml.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::options::options_from_toml;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = options_from_toml("fuzz.toml", text);
    }
});
