//! The `winsz` FIFO stream of JSON window sizes (fifo/src/winsz.rs), pushed in chunks of
//! fuzzer-chosen sizes. The decoder's buffer must stay bounded whatever arrives.
#![no_main]
use fifo::winsz::{WinszDecoder, MAX_WINSZ_OBJECT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = (step as usize).max(1);
    let mut d = WinszDecoder::new();
    for chunk in rest.chunks(step) {
        let _ = d.push(chunk);
        assert!(d.buffered() <= MAX_WINSZ_OBJECT);
    }
});
