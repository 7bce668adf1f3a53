//! ttrpc framing (containerd/ttrpc/connection.rs `decode_frames`, over the frame codec): arbitrary bytes from a client,
//! delivered in two reads split at a fuzzer-chosen point. Must never panic; a frame it
//! reports has a body no larger than the declared length, and the buffer only shrinks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::ttrpc::{decode_frames, ReadOutcome};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (a, b) = data.split_at(split);
    let mut buf = Vec::new();
    let mut out = ReadOutcome::default();
    for chunk in [a, b] {
        buf.extend_from_slice(chunk);
        let before = buf.len();
        if decode_frames(&mut buf, &mut out).is_err() {
            return;
        }
        assert!(buf.len() <= before);
    }
    for req in &out.requests {
        assert!(req.payload.len() <= data.len());
    }
});
