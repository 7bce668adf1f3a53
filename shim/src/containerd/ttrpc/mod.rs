//! ttrpc, containerd's RPC protocol over unix sockets: the one frame codec ([`codec`]) and
//! the server's connections on the shim's event loop ([`connection`]). The event publisher's
//! client connection (`containerd/events/connection.rs`) frames with the same codec.
//!
//! Hand-written on purpose: the `ttrpc` crate's server spends threads per connection (a
//! shim is resident for every container, and must answer on its one loop), so tether
//! keeps the protocol's small part it needs (a 10-byte header, protobuf bodies through
//! the `protobuf` crate) under its own bounds: a read budget per turn, a frame size
//! limit, back-pressure per connection.

pub mod codec;
pub mod connection;

pub use codec::OversizedFrame;
pub use connection::{decode_frames, status, Connection, Incoming, ReadOutcome, Reply};
