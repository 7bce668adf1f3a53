//! containerd's stdio URIs (containerd/stdio_uris.rs `parse_target`): plain and `fifo://` paths,
//! `file://`, and `binary://`/`binary-v2://` logger URIs with their query arguments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::stdio_uris::parse_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(uri) = std::str::from_utf8(data) {
        let _ = parse_target(uri);
    }
});
