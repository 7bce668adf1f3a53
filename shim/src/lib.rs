//! The library behind `containerd-shim-tether-v2`: the process core both faces share
//! (`process_core`: launching with runc, reaping, pumps and spools, the event loop's base),
//! the containerd shim face (`containerd`, with what only it needs: stdio URIs and
//! loggers, cgroups, rootfs mounts), the standalone supervisor face (`standalone`), the
//! operator's live upgrade of either (`upgrade_command`, and its dry run `upgrade_check`),
//! and logging. The binary is a thin entry point over it; the fuzz targets (`fuzz/`) drive
//! its parsers directly.
#![deny(unsafe_code)]

pub mod containerd;
pub mod logger;
pub mod malloc_arenas;
pub mod process_core;
pub mod standalone;
pub mod upgrade_check;
pub mod upgrade_command;
