//! The supervision core shared by both faces (containerd shim and standalone supervisor):
//! one epoll loop, a child-subreaper that reaps with `waitpid(-1)` without ever stealing a
//! runc invocation's status, pidfd-tracked processes, and non-blocking stdio pumps.

pub mod epoll;
pub mod kill_all;
pub mod logger_process;
pub mod pidfd;
pub mod pump;
pub mod reaper;
pub mod signals;
pub mod stdio;
pub mod tasks;
pub mod tty;
