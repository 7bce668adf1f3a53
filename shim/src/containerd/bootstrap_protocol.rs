//! What containerd writes on `start`'s stdin, and what the shim answers on stdout.
//!
//! Two generations of the contract exist:
//!
//! * containerd 1.6 to 2.2 write the runtime options as a bare protobuf
//!   `google.protobuf.Any` (or nothing), pass everything else as flags and environment
//!   variables, and read back the socket address as plain text.
//! * containerd 2.3 and later write a protobuf `containerd.runtime.bootstrap.v1.BootstrapParams`
//!   (api/runtime/bootstrap/v1/bootstrap.proto): the runtime options travel in its
//!   `extensions`, beside the log level, containerd's addresses and the socket directory. The
//!   daemon reads back a protobuf `BootstrapResult` (and still accepts a plain address).
//!
//! A `BootstrapParams` is also a valid encoding of an `Any` (its field 1 `instance_id` lands in
//! `type_url`, field 2 `namespace` in `value`), and a legacy `Any` whose value is valid UTF-8 is
//! also a valid `BootstrapParams`. So the two are told apart as containerd's own shim library
//! does since 2.4: the bytes are `BootstrapParams` only when they decode as one *and* its
//! `instance_id` and `namespace` equal the `-id` and `-namespace` flags; anything else is the
//! legacy `Any`. (2.3's Go library skipped the identity check, so it took a 2.2 daemon's bare
//! options for parameters and lost them.)

use crate::containerd::protos::bootstrap as proto;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

/// The ttrpc task API version tether reports to a daemon that speaks the bootstrap protocol:
/// 3, `containerd.task.v3.Task` (served beside v2, see `task_services.rs`), as containerd's runc
/// shim does. containerd 2.3 takes 2 (its v2 client) or 3 (`CurrentShimVersion`) and refuses
/// anything higher; if a grouped shim that only serves v2 answers v3 calls with
/// "unimplemented", it downgrades its client to v2 and retries.
pub const TASK_API_VERSION: i32 = 3;

/// The protocol tether serves on its socket.
pub const PROTOCOL: &str = "ttrpc";

/// `LOG_LEVEL_DEBUG` of `containerd.runtime.bootstrap.v1.LogLevel`: levels at or below it
/// (debug, trace) mean the shim logs at debug level, as containerd's runc shim decides.
pub const LOG_LEVEL_DEBUG: i32 = -4;

/// A decoded `containerd.runtime.bootstrap.v1.BootstrapParams` (the generated message of
/// `shim/proto/bootstrap.proto`, in plain fields). Fields tether does not use are kept too,
/// for logging and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootstrapParams {
    /// 1 `instance_id`: the container (or sandbox) id, the same as `-id`.
    pub instance_id: String,
    /// 2 `namespace`, the same as `-namespace`.
    pub namespace: String,
    /// 3 `log_level`: 0 info, negative more verbose (-4 debug, -8 trace), positive less.
    pub log_level: i32,
    /// 4 `containerd_version`, e.g. `v2.3.7`.
    pub containerd_version: String,
    /// 5 `containerd_ttrpc_address`: where to publish events.
    pub containerd_ttrpc_address: String,
    /// 6 `containerd_grpc_address`: containerd's main socket (what `-address` says).
    pub containerd_grpc_address: String,
    /// 7 `containerd_binary` (`-publish-binary`).
    pub containerd_binary: String,
    /// 8 `extensions`, each an `Extension{google.protobuf.Any value = 1}`, in order.
    pub extensions: Vec<Any>,
    /// 9 `optional socket_dir`: where to put the socket; `None` when absent.
    pub socket_dir: Option<String>,
}

/// Why bytes are not a `BootstrapParams`: the message, an extension or its `Any` is
/// malformed, or a string is not UTF-8 (as Go's proto3 decoder refuses).
#[derive(Debug, thiserror::Error)]
#[error("not BootstrapParams: {0}")]
pub struct ParamsError(#[from] protobuf::Error);

impl BootstrapParams {
    /// Decodes the protobuf encoding of a `BootstrapParams`. Unknown fields are skipped (a
    /// newer containerd may add some), and so is a known field of another wire type (as Go's
    /// decoder does); a string that is not UTF-8 or a truncated message is an error.
    pub fn decode(buf: &[u8]) -> Result<Self, ParamsError> {
        let m = proto::BootstrapParams::parse_from_bytes(buf)?;
        Ok(BootstrapParams {
            instance_id: m.instance_id,
            namespace: m.namespace,
            log_level: m.log_level,
            containerd_version: m.containerd_version,
            containerd_ttrpc_address: m.containerd_ttrpc_address,
            containerd_grpc_address: m.containerd_grpc_address,
            containerd_binary: m.containerd_binary,
            // An extension without its value is an empty `Any`, as Go reads it.
            extensions: m
                .extensions
                .into_iter()
                .map(|e| e.value.into_option().unwrap_or_default())
                .collect(),
            socket_dir: m.socket_dir,
        })
    }

    /// Whether containerd asked for debug logs.
    pub fn debug(&self) -> bool {
        self.log_level <= LOG_LEVEL_DEBUG
    }
}

/// What `start` found on its stdin.
#[derive(Debug, Clone, PartialEq)]
pub enum StartInput {
    /// containerd 2.3+: bootstrap parameters for this very `-id` and `-namespace`.
    Bootstrap(BootstrapParams),
    /// containerd up to 2.2 (or any input that is not parameters for this shim): the bare
    /// runtime options, `None` when stdin was empty or held an empty `Any`.
    Legacy(Option<Any>),
}

/// Why `start`'s stdin could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum StartInputError {
    /// Neither bootstrap parameters for this shim nor a protobuf `Any`.
    #[error("stdin is neither BootstrapParams for this shim nor runtime options (google.protobuf.Any): {0}")]
    NotAnAny(#[source] protobuf::Error),
}

/// Tells containerd 2.3's `BootstrapParams` from the legacy options `Any` (see the module
/// documentation): `Bootstrap` only when `stdin` decodes as parameters whose `instance_id` is
/// `id` and whose `namespace` is `namespace`. Otherwise empty input or an empty `Any` is
/// `Legacy(None)`, an `Any` is `Legacy(Some(_))`, and anything else is an error. Never panics.
pub fn parse_start_input(
    stdin: &[u8],
    id: &str,
    namespace: &str,
) -> Result<StartInput, StartInputError> {
    if stdin.is_empty() {
        return Ok(StartInput::Legacy(None));
    }
    if let Ok(params) = BootstrapParams::decode(stdin) {
        if params.instance_id == id && params.namespace == namespace {
            return Ok(StartInput::Bootstrap(params));
        }
    }
    let any = Any::parse_from_bytes(stdin).map_err(StartInputError::NotAnAny)?;
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(StartInput::Legacy(None));
    }
    Ok(StartInput::Legacy(Some(any)))
}

/// The protobuf encoding of `BootstrapResult{version, address, protocol}` (fields 1, 2, 3;
/// no capabilities, no metadata), byte for byte what Go's `proto.Marshal` gives: fields in
/// number order, zero values left out.
pub fn encode_result(version: i32, address: &str, protocol: &str) -> Vec<u8> {
    let result = proto::BootstrapResult {
        version,
        address: address.to_string(),
        protocol: protocol.to_string(),
        ..Default::default()
    };
    // Encoding fails only for a message over 2 GiB; an address is a socket path.
    result.write_to_bytes().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod vectors {
    //! The vectors below are real encodings, made by a throwaway Go program with containerd's
    //! own generated types (module `github.com/containerd/containerd/api` v1.11.1, the one
    //! containerd 2.3.7 builds with; `proto.Marshal` of `bootstrap.BootstrapParams`,
    //! `bootstrap.BootstrapResult`, `options.Options` in an `anypb.Any` with the bare type
    //! URL `containerd.runc.v1.Options` as containerd's typeurl makes it, and
    //! `params.AddExtension(thatAny)` as `pkg/shim.Command` does). The program is not kept;
    //! its core, in a module requiring `github.com/containerd/containerd/api v1.11.1`:
    //!
    //! ```text
    //! o := &options.Options{BinaryName: "crun", Root: "/run/tether-test", SystemdCgroup: true}
    //! a := &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: must(proto.Marshal(o))}
    //! p := &bootapi.BootstrapParams{InstanceID: "ctr-1", Namespace: "default", ...}
    //! p.AddExtension(a)
    //! fmt.Println(hex.EncodeToString(must(proto.Marshal(p))))
    //! ```

    /// Bytes from a hex string.
    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// containerd 2.3.7 `start` with `-debug`: `BootstrapParams{InstanceID: "ctr-1",
    /// Namespace: "default", LogLevel: LOG_LEVEL_DEBUG, ContainerdVersion: "v2.3.7",
    /// ContainerdGrpcAddress: "/run/containerd/containerd.sock", ContainerdTtrpcAddress:
    /// "/run/containerd/containerd.sock.ttrpc", ContainerdBinary: "/usr/bin/containerd",
    /// SocketDir: "/tmp/tether-s"}` plus the extension `options.Options{BinaryName: "crun",
    /// Root: "/run/tether-test", SystemdCgroup: true}`.
    pub(crate) const PARAMS_FULL: &str = "0a056374722d31120764656661756c7418fcffffffffffffffff01220676322e332e372a252f72756e2f636f6e7461696e6572642f636f6e7461696e6572642e736f636b2e7474727063321f2f72756e2f636f6e7461696e6572642f636f6e7461696e6572642e736f636b3a132f7573722f62696e2f636f6e7461696e657264423a0a380a1a636f6e7461696e6572642e72756e632e76312e4f7074696f6e73121a32046372756e3a102f72756e2f7465746865722d7465737448014a0d2f746d702f7465746865722d73";

    /// `BootstrapParams{InstanceID: "ctr-2", Namespace: "k8s.io", ContainerdGrpcAddress:
    /// "/run/containerd/containerd.sock", ContainerdTtrpcAddress:
    /// "/run/containerd/containerd.sock.ttrpc"}`: no options, info level, no socket dir.
    pub(crate) const PARAMS_MIN: &str = "0a056374722d3212066b38732e696f2a252f72756e2f636f6e7461696e6572642f636f6e7461696e6572642e736f636b2e7474727063321f2f72756e2f636f6e7461696e6572642f636f6e7461696e6572642e736f636b";

    /// What containerd 2.2 and older write on `start`: the bare `Any` of
    /// `options.Options{BinaryName: "runc", Root: "/run/r"}`. Go decodes these bytes as a
    /// `BootstrapParams` too (instance_id "containerd.runc.v1.Options").
    pub(crate) const LEGACY_ANY: &str =
        "0a1a636f6e7461696e6572642e72756e632e76312e4f7074696f6e73120e320472756e633a062f72756e2f72";

    /// `BootstrapResult{Version: 3, Address:
    /// "unix:///run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59",
    /// Protocol: "ttrpc"}`, as containerd 2.3.7's runc shim answers.
    pub(crate) const RESULT_V3: &str = "08031259756e69783a2f2f2f72756e2f636f6e7461696e6572642f732f386362323434613731393630336665303038373064356365316438653166316462343361363534636239393364313037646631663161653233646466666135391a057474727063";
}

#[cfg(test)]
mod tests {
    use super::vectors::*;
    use super::*;
    use crate::containerd::options::{decode_options, RUNC_V1_OPTIONS};

    #[test]
    fn containerd_2_3_params_are_recognised_though_they_also_parse_as_an_any() {
        let bytes = unhex(PARAMS_FULL);
        // The trap: the same bytes are a valid Any with the id as its type URL.
        let as_any = Any::parse_from_bytes(&bytes).unwrap();
        assert_eq!(as_any.type_url, "ctr-1");
        assert_eq!(as_any.value, b"default");

        let StartInput::Bootstrap(p) = parse_start_input(&bytes, "ctr-1", "default").unwrap()
        else {
            panic!("not recognised as BootstrapParams");
        };
        assert_eq!(p.instance_id, "ctr-1");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.log_level, -4);
        assert!(p.debug());
        assert_eq!(p.containerd_version, "v2.3.7");
        assert_eq!(p.containerd_grpc_address, "/run/containerd/containerd.sock");
        assert_eq!(
            p.containerd_ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        assert_eq!(p.containerd_binary, "/usr/bin/containerd");
        assert_eq!(p.socket_dir.as_deref(), Some("/tmp/tether-s"));
        assert_eq!(p.extensions.len(), 1);
        assert_eq!(p.extensions[0].type_url, RUNC_V1_OPTIONS);
        let opts = decode_options(&p.extensions[0].type_url, &p.extensions[0].value).unwrap();
        assert_eq!(opts.binary_name, "crun");
        assert_eq!(opts.root, "/run/tether-test");
        assert!(opts.systemd_cgroup);
    }

    #[test]
    fn minimal_params_have_no_socket_dir_and_info_level() {
        let bytes = unhex(PARAMS_MIN);
        let StartInput::Bootstrap(p) = parse_start_input(&bytes, "ctr-2", "k8s.io").unwrap() else {
            panic!("not recognised as BootstrapParams");
        };
        assert_eq!(p.socket_dir, None);
        assert_eq!(p.log_level, 0);
        assert!(!p.debug());
        assert!(p.extensions.is_empty());
        assert!(p.containerd_binary.is_empty());
    }

    #[test]
    fn empty_stdin_is_legacy_without_options() {
        assert_eq!(
            parse_start_input(b"", "ctr-1", "default").unwrap(),
            StartInput::Legacy(None)
        );
        // An Any with nothing in it, as a client may marshal a nil options message.
        let empty_any = Any::new().write_to_bytes().unwrap();
        assert_eq!(
            parse_start_input(&empty_any, "ctr-1", "default").unwrap(),
            StartInput::Legacy(None)
        );
    }

    #[test]
    fn containerd_2_2_start_is_the_legacy_any() {
        let bytes = unhex(LEGACY_ANY);
        // The other trap: the legacy Any decodes as BootstrapParams, for another id.
        let p = BootstrapParams::decode(&bytes).unwrap();
        assert_eq!(p.instance_id, RUNC_V1_OPTIONS);
        // A 2.2-style start: -id ctr-1 -namespace default, options on stdin.
        let StartInput::Legacy(Some(any)) = parse_start_input(&bytes, "ctr-1", "default").unwrap()
        else {
            panic!("not taken for the legacy Any");
        };
        assert_eq!(any.type_url, RUNC_V1_OPTIONS);
        let opts = decode_options(&any.type_url, &any.value).unwrap();
        assert_eq!(opts.binary_name, "runc");
        assert_eq!(opts.root, "/run/r");
    }

    #[test]
    fn params_for_another_id_or_namespace_fall_back_to_legacy() {
        let bytes = unhex(PARAMS_FULL);
        for (id, ns) in [("ctr-2", "default"), ("ctr-1", "k8s.io"), ("", "")] {
            match parse_start_input(&bytes, id, ns).unwrap() {
                StartInput::Legacy(Some(any)) => assert_eq!(any.type_url, "ctr-1"),
                other => panic!("-id {id:?} -namespace {ns:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[0x0a, 0x05, b'a'][..],
            &[0xff],
            &[0x0f, 0x00],
            &[0x42, 0x02, 0x0a],
        ] {
            assert!(parse_start_input(bad, "x", "y").is_err(), "{bad:?}");
            let _ = BootstrapParams::decode(bad);
        }
        // An extension whose Any does not decode makes the whole message not parameters.
        assert!(BootstrapParams::decode(&[0x42, 0x03, 0x0a, 0x01, 0x0f]).is_err());
    }

    #[test]
    fn result_matches_go_bytes() {
        let addr =
            "unix:///run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59";
        assert_eq!(encode_result(3, addr, PROTOCOL), unhex(RESULT_V3));
    }
}
