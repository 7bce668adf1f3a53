//! containerd 2.3's `BootstrapParams` on the shim's stdin at `start`
//! (containerd/bootstrap_protocol.rs), and the legacy-`Any` fallback that reads the same
//! bytes. Seeds: the Go-made vectors of the unit tests (fuzz/seeds/bootstrap_params).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::bootstrap_protocol::{parse_start_input, BootstrapParams};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = BootstrapParams::decode(data) {
        let _ = p.debug();
        // What decoded is what `parse_start_input` must take as this shim's parameters.
        let _ = parse_start_input(data, &p.instance_id, &p.namespace);
    }
    let _ = parse_start_input(data, "ctr-1", "default");
});
