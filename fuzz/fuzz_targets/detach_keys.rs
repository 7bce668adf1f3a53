//! `--detach-keys` specs and the matcher over a keyboard stream
//! (standalone/detach_keys.rs). Input: spec, NUL, then the typed bytes fed in chunks.
//! The matcher never writes more than it promised (`max_output`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::standalone::detach_keys::{parse, Matcher};

fuzz_target!(|data: &[u8]| {
    let (spec, typed) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(spec) = std::str::from_utf8(spec) else {
        return;
    };
    let Ok(Some(keys)) = parse(spec) else {
        return;
    };
    assert!(!keys.bytes().is_empty());
    let mut m = Matcher::new(keys);
    let mut out = Vec::new();
    for chunk in typed.chunks(3) {
        let before = out.len();
        let bound = m.max_output(chunk.len());
        let _ = m.feed(chunk, &mut out);
        assert!(out.len() - before <= bound);
    }
    m.finish(&mut out);
    assert!(out.len() <= typed.len());
});
