//! Runtime and checkpoint options in each protobuf form containerd sends
//! (containerd/options/proto.rs via `decode_options`): the first byte picks the type URL,
//! the rest is the `Any` value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::options::{
    decode_checkpoint_options, decode_options, CRI_RUNTIME_OPTIONS, LEGACY_CHECKPOINT_OPTIONS,
    LEGACY_CREATE_OPTIONS, LEGACY_RUNC_OPTIONS, RUNC_V1_CHECKPOINT_OPTIONS, RUNC_V1_OPTIONS,
};

const TYPES: [&str; 4] = [
    RUNC_V1_OPTIONS,
    LEGACY_CREATE_OPTIONS,
    LEGACY_RUNC_OPTIONS,
    CRI_RUNTIME_OPTIONS,
];
const CHECKPOINT_TYPES: [&str; 2] = [RUNC_V1_CHECKPOINT_OPTIONS, LEGACY_CHECKPOINT_OPTIONS];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let type_url = TYPES[pick as usize % TYPES.len()];
    if type_url == CRI_RUNTIME_OPTIONS && value.windows(5).any(|w| w == b"/dev/") {
        // CRI options may name a TOML file to read: keep the fuzzer off device files.
        return;
    }
    let _ = decode_options(type_url, value);
    let _ = decode_options(&format!("type.googleapis.com/{type_url}"), value);
    let _ = decode_checkpoint_options(CHECKPOINT_TYPES[pick as usize % 2], value);
});
