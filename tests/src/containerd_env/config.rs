//! containerd's `config.toml` for a test daemon: its root, state and sockets inside the
//! test's temp dir, debug logging, and the plugins that would be shared between parallel
//! daemons turned off. One file serves every containerd of the matrix: 2.x migrates a
//! `version = 2` config itself.

use std::fs;
use std::path::Path;

/// The plugins a test daemon does without: CRI in every form (1.x has one plugin
/// `io.containerd.grpc.v1.cri`; 2.x splits it into `io.containerd.cri.v1.images`,
/// `io.containerd.cri.v1.runtime`, the pod sandbox controller and the grpc service) and NRI
/// (whose socket, /var/run/nri/nri.sock, would be shared by the parallel daemons).
/// containerd filters the registered plugins by these ids: an id a version does not have
/// is ignored.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.nri.v1.nri",
];

/// Writes `config` for a daemon whose root and state are under `dir` and whose grpc socket
/// is `address` (its ttrpc socket `<address>.ttrpc`).
pub(super) fn write(config: &Path, dir: &Path, address: &Path) {
    let toml = format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         disabled_plugins = [{disabled}]\n\
         \n\
         [grpc]\n  address = \"{grpc}\"\n\
         \n\
         [ttrpc]\n  address = \"{grpc}.ttrpc\"\n\
         \n\
         [debug]\n  level = \"debug\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        grpc = address.display(),
        disabled = DISABLED_PLUGINS
            .iter()
            .map(|id| format!("\"{id}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    fs::write(config, toml).expect("write config.toml");
}
