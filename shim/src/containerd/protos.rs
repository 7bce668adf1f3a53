//! Protobuf messages containerd sends or reads that `containerd-shim-protos` does not
//! carry, generated at build time from the `.proto` files in `shim/proto/` (`shim/build.rs`:
//! rust-protobuf's pure-Rust codegen, lite runtime, no reflection tables):
//!
//! - `bootstrap`: containerd 2.3's `BootstrapParams` / `BootstrapResult`;
//! - `runctypes`: the legacy `containerd.linux.runc` options;
//! - `runtimeoptions`: CRI's `runtimeoptions.v1.Options`.
// Generated code: the workspace's lints (casts, docs) are not its author's.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
