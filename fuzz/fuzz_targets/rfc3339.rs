//! RFC 3339 times (fifo/src/rfc3339.rs), as the exitcode file and logs carry them: what
//! parses formats to text that parses to the same instant.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = fifo::rfc3339::parse(text) {
        let formatted = fifo::rfc3339::format(t);
        let again = fifo::rfc3339::parse(&formatted).expect("format's output parses");
        assert_eq!(fifo::rfc3339::format(again), formatted);
    }
});
