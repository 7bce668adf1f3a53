//! `containerd-shim-tether-v2`: placeholder until the shim lands.
fn main() {
    println!("containerd-shim-tether-v2 {}", env!("CARGO_PKG_VERSION"));
}
