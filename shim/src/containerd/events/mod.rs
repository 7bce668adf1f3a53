//! Task events to containerd: what each event says ([`task_events`], built from the process
//! table's facts; topics and type names in [`types`]), how it is wrapped ([`envelope`]),
//! and how it travels: a bounded queue ([`queue`]) drained in order by one thread
//! ([`publisher`]) over one ttrpc client connection ([`connection`]) to the address
//! containerd gave ([`endpoint`]).

pub mod connection;
pub mod endpoint;
pub mod envelope;
pub mod publisher;
pub mod queue;
pub mod task_events;
pub mod types;

pub use envelope::timestamp;
pub use publisher::{CarriedEvent, PublishError, Publisher};
pub use task_events::Events;
pub use types::{topics, EventMessage};
