//! The `exitcode` file of a process directory (fifo/src/exit.rs): what decodes encodes to
//! text that decodes to the same record.
#![no_main]
use fifo::exit::ExitRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = ExitRecord::decode(text) {
        let encoded = rec.encode();
        let again = ExitRecord::decode(&encoded).expect("encode's output decodes");
        assert_eq!(again.encode(), encoded);
    }
});
