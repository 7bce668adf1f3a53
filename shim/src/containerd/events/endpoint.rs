//! Where containerd's ttrpc service listens, as containerd hands it to a shim in
//! `TTRPC_ADDRESS`: a filesystem socket or, as Go's net package spells it, an abstract one.

use std::io;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::PathBuf;

/// Why an address cannot be dialled.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The address was empty (containerd sets `TTRPC_ADDRESS` for every shim).
    #[error("ttrpc address is empty: containerd passes it to the shim in TTRPC_ADDRESS")]
    Empty,
    /// The address is not a unix socket this client can dial.
    #[error("invalid ttrpc address {address:?}: {reason}")]
    Invalid {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A unix socket to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket in the filesystem.
    Path(PathBuf),
    /// A socket in the abstract namespace (the name without its leading `@`).
    Abstract(Vec<u8>),
}

impl Endpoint {
    /// Accepts `/path`, `unix:///path`, a relative path, or `@name` (abstract
    /// namespace). Checks now what would make every later dial fail (a NUL byte, a path
    /// too long for `sun_path`, another scheme).
    pub fn parse(address: &str) -> Result<Endpoint, EndpointError> {
        let invalid = |reason: &str| EndpointError::Invalid {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = address.trim();
        if trimmed.is_empty() {
            return Err(EndpointError::Empty);
        }
        let rest = trimmed.strip_prefix("unix://").unwrap_or(trimmed);
        if rest.is_empty() {
            return Err(invalid("no socket path after unix://"));
        }
        if rest.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if let Some(name) = rest.strip_prefix('@') {
            // Validate now so a bad name fails start, not every later attempt.
            if let Err(e) = abstract_addr(name.as_bytes()) {
                return Err(invalid(&e.to_string()));
            }
            return Ok(Endpoint::Abstract(name.as_bytes().to_vec()));
        }
        if !rest.starts_with('/') && rest.contains("://") {
            return Err(invalid(
                "only unix sockets are supported (\"/path\", \"unix:///path\" or \"@name\")",
            ));
        }
        let path = PathBuf::from(rest);
        // sun_path holds 107 bytes; fail at start rather than on every attempt.
        if let Err(e) = SocketAddr::from_pathname(&path) {
            return Err(invalid(&e.to_string()));
        }
        Ok(Endpoint::Path(path))
    }

    /// Connects a blocking stream to it.
    pub fn connect(&self) -> io::Result<UnixStream> {
        match self {
            Endpoint::Path(p) => UnixStream::connect(p),
            Endpoint::Abstract(name) => UnixStream::connect_addr(&abstract_addr(name)?),
        }
    }
}

/// The socket address of an abstract socket named `name`.
pub fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_containerd_uses() {
        assert_eq!(
            Endpoint::parse("unix:///run/c.sock").unwrap(),
            Endpoint::Path("/run/c.sock".into())
        );
        assert_eq!(
            Endpoint::parse(" /run/c.sock ").unwrap(),
            Endpoint::Path("/run/c.sock".into())
        );
        assert_eq!(
            Endpoint::parse("@name").unwrap(),
            Endpoint::Abstract(b"name".to_vec())
        );
        assert_eq!(
            Endpoint::parse("unix://@name").unwrap(),
            Endpoint::Abstract(b"name".to_vec())
        );
    }

    #[test]
    fn refuses_what_cannot_be_dialled() {
        assert!(matches!(Endpoint::parse(""), Err(EndpointError::Empty)));
        assert!(matches!(Endpoint::parse("  "), Err(EndpointError::Empty)));
        for bad in ["unix://", "vsock://3:1024", "/run/a\0b"] {
            assert!(
                matches!(Endpoint::parse(bad), Err(EndpointError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "x".repeat(200));
        let err = Endpoint::parse(&long).unwrap_err();
        assert!(err.to_string().contains("invalid ttrpc address"), "{err}");
    }
}
