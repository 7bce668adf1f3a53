//! What `start` was asked: the flags, the runtime options, the socket's place and the form
//! of the answer, read from the command line and stdin in either of containerd's bootstrap
//! protocols. Pure interpretation, no I/O, so every protocol case is unit-tested here.

use crate::containerd::address::{self, AddressError};
use crate::containerd::bootstrap_protocol::{
    encode_result, parse_start_input, StartInput, PROTOCOL, TASK_API_VERSION,
};
use crate::containerd::flags::Flags;
use crate::containerd::options::{decode_options, OptionsError, RuncOptions};
use protobuf::well_known_types::any::Any;
use std::path::{Path, PathBuf};

use super::BootstrapError;

/// How `start` was asked to start: the flags as the server will get them, the runtime
/// options, where the socket goes and how to answer. Built from the command line and stdin by
/// [`StartConfig::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct StartConfig {
    /// The flags to hand the server: `-debug` also when the bootstrap log level asks for it,
    /// `-address` and `-publish-binary` from the parameters when they carry them.
    pub flags: Flags,
    /// The runtime options: the bootstrap parameters' runtime-options extension, or the legacy
    /// bare `Any`, or the defaults.
    pub options: RuncOptions,
    /// `socket_dir` from the bootstrap parameters, if any.
    pub socket_dir: Option<PathBuf>,
    /// containerd's ttrpc address from the bootstrap parameters, for publishing events (else
    /// the server reads `TTRPC_ADDRESS`, which every containerd sets).
    pub ttrpc_address: Option<String>,
    /// A containerd 2.3+ daemon started us with `BootstrapParams`: answer with a
    /// `BootstrapResult` and serve task API v3. Older daemons get the plain address.
    pub bootstrap: bool,
}

impl StartConfig {
    /// Interprets `stdin` (see [`parse_start_input`]) against `flags`.
    ///
    /// Errors: stdin that is neither bootstrap parameters for this shim nor an `Any`, and
    /// runtime options that do not decode (an options type tether does not know is an error in
    /// the legacy form, where the `Any` can only be runtime options, and skipped among the
    /// bootstrap extensions, which may carry other configuration).
    pub fn new(flags: &Flags, stdin: &[u8]) -> Result<StartConfig, BootstrapError> {
        let input = parse_start_input(stdin, &flags.id, &flags.namespace)?;
        let mut flags = flags.clone();
        match input {
            StartInput::Legacy(None) => Ok(StartConfig {
                flags,
                options: RuncOptions::default(),
                socket_dir: None,
                ttrpc_address: None,
                bootstrap: false,
            }),
            StartInput::Legacy(Some(any)) => Ok(StartConfig {
                flags,
                options: decode_options(&any.type_url, &any.value)
                    .map_err(BootstrapError::Options)?,
                socket_dir: None,
                ttrpc_address: None,
                bootstrap: false,
            }),
            StartInput::Bootstrap(params) => {
                flags.debug |= params.debug();
                if !params.containerd_grpc_address.is_empty() {
                    flags.address = params.containerd_grpc_address.clone();
                }
                if !params.containerd_binary.is_empty() {
                    flags.publish_binary = params.containerd_binary.clone();
                }
                Ok(StartConfig {
                    flags,
                    options: options_from_extensions(&params.extensions)?,
                    socket_dir: params
                        .socket_dir
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from),
                    ttrpc_address: Some(params.containerd_ttrpc_address).filter(|a| !a.is_empty()),
                    bootstrap: true,
                })
            }
        }
    }

    /// Where the group's socket is: `-socket` if given, else the name containerd's shims
    /// compute, under `socket_dir` or the default directory.
    pub fn socket(&self, group: &str) -> Result<PathBuf, AddressError> {
        if let Some(s) = &self.flags.socket {
            return address::parse_uri(s);
        }
        let dir = self
            .socket_dir
            .as_deref()
            .unwrap_or(Path::new(address::SOCKET_DIR));
        Ok(address::socket_path_in(
            dir,
            &self.flags.address,
            &self.flags.namespace,
            group,
        ))
    }

    /// What to print on stdout for the socket at `uri`.
    pub fn reply(&self, uri: &str) -> Vec<u8> {
        if self.bootstrap {
            encode_result(TASK_API_VERSION, uri, PROTOCOL)
        } else {
            uri.as_bytes().to_vec()
        }
    }
}

/// The runtime options among the bootstrap extensions: the first extension of a runtime
/// options type tether knows (runc `Options`, legacy `CreateOptions`/`RuncOptions`, CRI's
/// `runtimeoptions.v1.Options`); extensions of other types are skipped. Defaults when none.
pub(super) fn options_from_extensions(extensions: &[Any]) -> Result<RuncOptions, BootstrapError> {
    for ext in extensions {
        match decode_options(&ext.type_url, &ext.value) {
            Ok(o) => return Ok(o),
            Err(OptionsError::UnknownType(_)) => continue,
            Err(e) => return Err(BootstrapError::Options(e)),
        }
    }
    Ok(RuncOptions::default())
}
