//! The protobuf wire reader (containerd/wire.rs): walk every field of arbitrary bytes and
//! read each as every scalar type. Must never panic nor loop; fields are bounded by input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_shim::containerd::wire::{Reader, Value};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut fields = 0usize;
    while let Ok(Some((field, v))) = r.next_field() {
        fields += 1;
        assert!(fields <= data.len(), "more fields than bytes");
        let _ = v.bool(field);
        let _ = v.uint32(field);
        let _ = v.int32(field);
        let _ = v.string(field);
        if let Ok(b) = v.bytes(field) {
            assert!(b.len() <= data.len());
            // Nested messages are read with the same reader.
            let mut inner = Reader::new(b);
            while let Ok(Some(_)) = inner.next_field() {}
        }
        if let Value::Bytes(b) = v {
            assert!(b.len() <= data.len());
        }
    }
});
