//! The library behind `containerd-shim-tether-v2`: the supervision core both faces share
//! (`supervisor`), the containerd shim face (`containerd`), the standalone supervisor face
//! (`standalone`), the operator's live upgrade of either (`upgrade_command`, and its dry run
//! `upgrade_check`), and what they need (cgroups, rootfs mounts, logging). The binary is a
//! thin entry point over it; the fuzz targets (`fuzz/`) drive its parsers directly.
#![deny(unsafe_code)]

pub mod cgroups;
pub mod containerd;
pub mod idmap;
pub mod logger;
pub mod malloc_arenas;
pub mod mount;
pub mod standalone;
pub mod supervisor;
pub mod upgrade_check;
pub mod upgrade_command;
