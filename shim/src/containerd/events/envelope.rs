//! An event as containerd's events service takes it: a ttrpc `Request` for
//! `containerd.services.events.ttrpc.v1.Events/Forward` carrying a `ForwardRequest` with
//! the event in an `Envelope` (namespace, topic, time, the event as an `Any`).

use std::time::{Duration, SystemTime};

use crate::containerd::ttrpc::codec::MAX_MESSAGE;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::{Message, MessageField};
use ttrpc::proto::{KeyValue, Request};

/// ttrpc service containerd serves events on.
pub const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
/// Method of [`EVENTS_SERVICE`] that accepts an envelope from a shim.
pub const FORWARD_METHOD: &str = "Forward";
/// Metadata key the Go ttrpc client uses to carry the namespace; containerd's
/// Forward handler reads the envelope, but sending it keeps us wire-identical
/// with the Go shim for any interceptor that looks at it.
pub const NAMESPACE_METADATA_KEY: &str = "containerd-namespace-ttrpc";

/// Why an event could not be made into a request.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// protobuf refused to encode the `ForwardRequest`.
    #[error("cannot encode ForwardRequest: {0}")]
    Forward(#[source] protobuf::Error),
    /// protobuf refused to encode the ttrpc `Request`.
    #[error("cannot encode ttrpc request: {0}")]
    Request(#[source] protobuf::Error),
    /// The request would not fit in a ttrpc frame.
    #[error("encoded request is {len} bytes, over the ttrpc limit of {MAX_MESSAGE}")]
    TooLarge {
        /// The encoded request's length.
        len: usize,
    },
}

/// Encodes the ttrpc `Request` carrying `ForwardRequest { Envelope }` for one event,
/// stamped with the current time; `timeout` goes out as the request's deadline.
/// `type_url` is the event's full protobuf name (e.g. `containerd.events.TaskExit`, what
/// the Go shim sends, without a `type.googleapis.com/` prefix), `value` the encoded event.
pub fn encode_request(
    namespace: &str,
    topic: &str,
    type_url: &str,
    value: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value;
    let mut envelope = Envelope::new();
    envelope.timestamp = timestamp(SystemTime::now());
    envelope.namespace = namespace.to_string();
    envelope.topic = topic.to_string();
    envelope.event = MessageField::some(any);
    let mut forward = ForwardRequest::new();
    forward.envelope = MessageField::some(envelope);
    let payload = forward.write_to_bytes().map_err(EnvelopeError::Forward)?;

    let mut request = Request::new();
    request.service = EVENTS_SERVICE.to_string();
    request.method = FORWARD_METHOD.to_string();
    request.payload = payload;
    request.timeout_nano = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    let mut kv = KeyValue::new();
    kv.key = NAMESPACE_METADATA_KEY.to_string();
    kv.value = namespace.to_string();
    request.metadata.push(kv);
    let bytes = request.write_to_bytes().map_err(EnvelopeError::Request)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(EnvelopeError::TooLarge { len: bytes.len() });
    }
    Ok(bytes)
}

/// `t` as a protobuf Timestamp (the Unix epoch for a time before it, the largest
/// Timestamp for one past `i64` seconds). Done by hand because protobuf's
/// `From<SystemTime>` panics outside the Timestamp range.
pub fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let mut ts = Timestamp::new();
    if let Ok(d) = t.duration_since(SystemTime::UNIX_EPOCH) {
        ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        // subsec_nanos() < 1e9 always fits.
        ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    }
    MessageField::some(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_the_envelope() {
        let bytes = encode_request(
            "k8s.io",
            "/tasks/exit",
            "containerd.events.TaskExit",
            vec![8, 1],
            Duration::from_secs(5),
        )
        .unwrap();
        let req = Request::parse_from_bytes(&bytes).unwrap();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            (EVENTS_SERVICE, FORWARD_METHOD)
        );
        assert_eq!(req.timeout_nano, 5_000_000_000);
        assert_eq!(req.metadata[0].key, NAMESPACE_METADATA_KEY);
        assert_eq!(req.metadata[0].value, "k8s.io");
        let env = ForwardRequest::parse_from_bytes(&req.payload)
            .unwrap()
            .envelope
            .unwrap();
        assert_eq!(
            (env.namespace.as_str(), env.topic.as_str()),
            ("k8s.io", "/tasks/exit")
        );
        assert!(env.timestamp.seconds > 0);
        assert_eq!(env.event.type_url, "containerd.events.TaskExit");
        assert_eq!(env.event.value, [8, 1]);
    }

    #[test]
    fn too_large_events_are_refused() {
        let err =
            encode_request("ns", "/t", "x.E", vec![0; MAX_MESSAGE], Duration::ZERO).unwrap_err();
        assert!(matches!(err, EnvelopeError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("over the ttrpc limit"), "{err}");
    }

    #[test]
    fn timestamps_outside_the_range_do_not_panic() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(timestamp(before).seconds, 0);
        let t = SystemTime::UNIX_EPOCH + Duration::new(12, 345);
        assert_eq!((timestamp(t).seconds, timestamp(t).nanos), (12, 345));
    }
}
