//! ttrpc, containerd's RPC protocol over unix sockets: the one frame codec ([`codec`]) and
//! the server's connections on the shim's event loop ([`connection`]). The event publisher's
//! client connection (`containerd/events/connection.rs`) frames with the same codec.

pub mod codec;
pub mod connection;

pub use codec::OversizedFrame;
pub use connection::{decode_frames, status, Connection, Incoming, ReadOutcome, Reply};
