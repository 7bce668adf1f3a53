//! logrus text lines with Go `%q` quoting (logger.rs `format_line`/`push_key_value`):
//! whatever the message and field value, the line is one line ending in a newline.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (msg, value) = text.split_once('\0').unwrap_or((&text, ""));
    let mut suffix = String::new();
    suffix.push(' ');
    tether_shim::logger::push_key_value(&mut suffix, "id", value);
    let t = UNIX_EPOCH + Duration::from_secs(data.len() as u64 * 86_400 * 365);
    let line = tether_shim::logger::format_line(t, log::Level::Warn, msg, &suffix);
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    assert!(!line.contains('\r'));
});
