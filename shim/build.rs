//! Generates the protobuf messages of `proto/` that `containerd-shim-protos` does not have
//! (containerd's bootstrap protocol, the legacy runctypes options, CRI's runtimeoptions):
//! rust-protobuf's pure-Rust parser, no `protoc`, the lite runtime (no reflection tables:
//! they cost heap in every shim, see docs/design.md "Small resident memory").

fn main() {
    println!("cargo:rerun-if-changed=proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .inputs([
            "proto/bootstrap.proto",
            "proto/runctypes.proto",
            "proto/runtimeoptions.proto",
        ])
        .cargo_out_dir("protos")
        .customize(protobuf_codegen::Customize::default().lite_runtime(true))
        .run_from_script();
}
