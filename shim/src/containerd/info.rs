//! What the shim says about itself: `-v` (human-readable) and `-info` (containerd 2.x
//! introspection, protobuf on stdout).
//!
//! For `-info`, containerd writes the runtime's options (a protobuf `google.protobuf.Any`,
//! possibly nothing at all) on the shim's stdin and reads a protobuf
//! `containerd.types.RuntimeInfo` from its stdout. Its `TestRuntimeInfo` wants a non-empty
//! name and `features` holding the OCI runtime's `features` document, which it decodes by
//! type URL; so tether answers as containerd's runc shim does: its own runtime name, its
//! version, the options echoed, and `runc features` under the same type URL.
//!
//! containerd 2.3 and 2.4 still write the bare options `Any` here (never `BootstrapParams`,
//! which only `start` gets: `getRuntimeInfo` in core/runtime/v2/task_manager.go). They run
//! `-info` before the first task of a runtime not named `io.containerd.runc.v2` (to read the
//! `containerd.io/runtime-allow-mounts` annotation, which tether leaves out: the daemon's mount
//! manager then prepares every mount type it knows itself), and before a task with idmapped
//! mounts, whose creation fails unless `features` says `mountExtensions.idmap.enabled`.
//! Kubernetes likewise needs the features to allow user-namespaced pods on the runtime class.

use crate::containerd::options::{decode_options, OptionsError};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};

/// The type URL under which containerd registers the OCI runtime-spec `features.Features`
/// document (typeurl prefix `types.containerd.io`, spec major version 1). The value is the
/// document's JSON, as typeurl marshals non-protobuf types.
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The OCI runtime used when the options name none, as containerd's runc shim does.
const DEFAULT_RUNTIME_BINARY: &str = "runc";

/// The build's revision: `TETHER_REVISION` from the build environment (e.g. set to
/// `git describe` output by the release build), or `unknown`.
pub fn revision() -> &'static str {
    match option_env!("TETHER_REVISION") {
        Some(r) if !r.is_empty() => r,
        _ => "unknown",
    }
}

/// Why `-info` could not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// stdin was not empty and was not a protobuf `google.protobuf.Any`.
    #[error("cannot decode the runtime options on stdin as a protobuf google.protobuf.Any: {0}")]
    Decode(#[source] protobuf::Error),
    /// The options are of a runtime options type tether knows but did not decode (or, for
    /// CRI's options, their TOML config could not be read).
    #[error("cannot decode the runtime options of type {type_url:?}: {source}")]
    Options {
        /// The type URL the options were sent with.
        type_url: String,
        /// The decoding error.
        #[source]
        source: OptionsError,
    },
    /// The answer could not be encoded (should not happen for well-formed messages).
    #[error("cannot encode RuntimeInfo: {0}")]
    Encode(#[source] protobuf::Error),
}

/// The text `-v` prints: the binary's name, its version and revision, in the layout of
/// containerd's Go shims (`Version:`/`Revision:` lines), ending in a newline.
pub fn version_text() -> String {
    format!(
        "containerd-shim-tether-v2:\n  Version:  {}\n  Revision: {}\n  Rust runtime: tether\n",
        env!("CARGO_PKG_VERSION"),
        revision()
    )
}

/// The answer to `-info`: a protobuf-encoded `containerd.types.RuntimeInfo` with
/// `name` = `runtime_name`, `version` = this crate's version and [`version_text`]'s revision,
/// `options` = the `Any` read from `stdin` exactly as given (absent when `stdin` is empty),
/// and `features` = the output of `<binary> features` as an `Any` of type
/// [`FEATURES_TYPE_URL`], where `<binary>` is the `BinaryName` of the options when they are
/// of a runtime options type tether knows (runc `Options`, the legacy runc types, CRI's
/// `runtimeoptions.v1.Options` with its TOML) and name one, else `runc`. When the runtime
/// cannot report features (missing binary, no `features` verb, output that is not JSON) the
/// field is left out and the reason is logged at debug level, as containerd's runc shim does.
///
/// Errors: [`InfoError::Decode`] if `stdin` is not an `Any`, [`InfoError::Options`] if it is
/// runtime options of a known type that do not decode. Options of any other type are echoed
/// and otherwise ignored.
pub fn runtime_info(stdin: &[u8], runtime_name: &str) -> Result<Vec<u8>, InfoError> {
    runtime_info_with(stdin, runtime_name, |binary| {
        runc_wrapper::Runc::builder()
            .binary(binary)
            .build()
            .features()
            .map_err(|e| log::debug!("no runtime features from {binary:?}: {e}"))
            .ok()
    })
}

/// [`runtime_info`] with the way to run `<binary> features` supplied by the caller.
fn runtime_info_with(
    stdin: &[u8],
    runtime_name: &str,
    features: impl FnOnce(&str) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, InfoError> {
    let options = if stdin.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(stdin).map_err(InfoError::Decode)?)
    };
    let binary_name = match &options {
        Some(any) => match decode_options(&any.type_url, &any.value) {
            Ok(opts) => opts.binary_name,
            Err(OptionsError::UnknownType(_)) => String::new(),
            Err(source) => {
                return Err(InfoError::Options {
                    type_url: any.type_url.clone(),
                    source,
                })
            }
        },
        None => String::new(),
    };
    let binary = if binary_name.is_empty() {
        DEFAULT_RUNTIME_BINARY.to_owned()
    } else {
        binary_name
    };

    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").to_owned();
    version.revision = revision().to_owned();

    let mut info = RuntimeInfo::new();
    info.name = runtime_name.to_owned();
    info.version = MessageField::some(version);
    info.options = MessageField::from_option(options);
    info.features = MessageField::from_option(features(&binary).map(|json| {
        let mut any = Any::new();
        any.type_url = FEATURES_TYPE_URL.to_owned();
        any.value = json;
        any
    }));
    info.write_to_bytes().map_err(InfoError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::options::{CRI_RUNTIME_OPTIONS, LEGACY_RUNC_OPTIONS, RUNC_V1_OPTIONS};
    use containerd_shim_protos::shim::oci::Options;
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;

    const FEATURES_JSON: &[u8] = br#"{"ociVersionMin":"1.0.0","mountOptions":["rro"]}"#;

    fn runc_options_any(binary_name: &str, prefix: &str) -> Any {
        let mut opts = Options::new();
        opts.binary_name = binary_name.to_owned();
        opts.systemd_cgroup = true;
        let mut any = Any::new();
        any.type_url = format!("{prefix}{RUNC_V1_OPTIONS}");
        any.value = opts.write_to_bytes().unwrap();
        any
    }

    /// Runs runtime_info_with and returns the decoded answer and the binary asked for.
    fn run(stdin: &[u8], features: Option<&[u8]>) -> (RuntimeInfo, String) {
        let asked = RefCell::new(String::new());
        let out = runtime_info_with(stdin, "io.containerd.tether.v2", |b| {
            *asked.borrow_mut() = b.to_owned();
            features.map(<[u8]>::to_vec)
        })
        .unwrap();
        (
            RuntimeInfo::parse_from_bytes(&out).unwrap(),
            asked.into_inner(),
        )
    }

    #[test]
    fn version_text_layout() {
        let t = version_text();
        assert!(
            t.starts_with("containerd-shim-tether-v2:\n  Version:  "),
            "{t}"
        );
        assert!(t.contains(env!("CARGO_PKG_VERSION")));
        assert!(t.contains("\n  Revision: "));
        assert!(t.ends_with('\n'));
    }

    #[test]
    fn empty_stdin() {
        let (info, asked) = run(b"", Some(FEATURES_JSON));
        assert_eq!(asked, "runc");
        assert_eq!(info.name, "io.containerd.tether.v2");
        assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
        assert!(!info.version.revision.is_empty());
        assert!(info.options.is_none());
        assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
        assert_eq!(info.features.value, FEATURES_JSON);
        assert!(info.annotations.is_empty());
    }

    #[test]
    fn runc_options_pick_the_binary_and_are_echoed() {
        for prefix in ["", "type.googleapis.com/"] {
            let any = runc_options_any("/usr/local/bin/crun", prefix);
            let stdin = any.write_to_bytes().unwrap();
            let (info, asked) = run(&stdin, Some(FEATURES_JSON));
            assert_eq!(asked, "/usr/local/bin/crun");
            assert_eq!(info.options.as_ref(), Some(&any));
        }
        // Empty BinaryName means runc.
        let stdin = runc_options_any("", "").write_to_bytes().unwrap();
        assert_eq!(run(&stdin, None).1, "runc");
    }

    #[test]
    fn other_options_are_echoed_and_ignored() {
        let mut any = Any::new();
        any.type_url = "example.com/some.Other".into();
        any.value = vec![0x0a, 0x01, b'x'];
        let (info, asked) = run(&any.write_to_bytes().unwrap(), None);
        assert_eq!(asked, "runc");
        assert_eq!(info.options.as_ref(), Some(&any));
        // No features: the field is absent, not an empty Any.
        assert!(info.features.is_none());
    }

    #[test]
    fn binary_name_from_cri_and_legacy_options() {
        // CRI's runtimeoptions.v1.Options with the TOML inlined (field 3, config_body).
        let toml = b"BinaryName = \"/usr/bin/crun\"\nSystemdCgroup = true\n";
        let mut value = vec![0x1a, u8::try_from(toml.len()).unwrap()];
        value.extend_from_slice(toml);
        let mut any = Any::new();
        any.type_url = CRI_RUNTIME_OPTIONS.into();
        any.value = value;
        let (info, asked) = run(&any.write_to_bytes().unwrap(), None);
        assert_eq!(asked, "/usr/bin/crun");
        assert_eq!(info.options.as_ref(), Some(&any));
        // The legacy containerd.linux.runc.RuncOptions: runtime (1) names the binary.
        let mut any = Any::new();
        any.type_url = LEGACY_RUNC_OPTIONS.into();
        any.value = [&[0x0a, 0x04][..], b"crun"].concat();
        assert_eq!(run(&any.write_to_bytes().unwrap(), None).1, "crun");
    }

    #[test]
    fn a_runtime_without_features_gives_an_answer_without_them() {
        // Real binaries that are no OCI runtime with a `features` verb: one fails, one
        // succeeds with no output (not JSON).
        for binary in ["/bin/false", "/bin/true"] {
            let stdin = runc_options_any(binary, "").write_to_bytes().unwrap();
            let out = runtime_info(&stdin, "io.containerd.tether.v2").unwrap();
            let info = RuntimeInfo::parse_from_bytes(&out).unwrap();
            assert!(info.features.is_none(), "{binary}");
            assert!(info.options.is_some());
        }
    }

    #[test]
    fn garbage_stdin_is_an_error() {
        // Field 1 (type_url) claims 5 bytes and has 1.
        let e = runtime_info_with(&[0x0a, 0x05, b'a'], "n", |_| None).unwrap_err();
        assert!(matches!(e, InfoError::Decode(_)), "{e}");
        assert!(e.to_string().contains("stdin"), "{e}");
        let e = runtime_info(&[0xff, 0xff, 0xff], "n").unwrap_err();
        assert!(matches!(e, InfoError::Decode(_)), "{e}");
    }

    #[test]
    fn malformed_runc_options_are_an_error() {
        let mut any = Any::new();
        any.type_url = RUNC_V1_OPTIONS.into();
        any.value = vec![0x32, 0x09, b'x']; // binary_name (6) claims 9 bytes, has 1
        let e = runtime_info_with(&any.write_to_bytes().unwrap(), "n", |_| None).unwrap_err();
        assert!(matches!(e, InfoError::Options { .. }), "{e}");
        assert!(e.to_string().contains(RUNC_V1_OPTIONS), "{e}");
    }

    #[test]
    fn real_features_from_a_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("fake-runc");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\n[ \"$1\" = features ] || exit 3\nprintf '%s' '{}'\n",
                std::str::from_utf8(FEATURES_JSON).unwrap()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stdin = runc_options_any(fake.to_str().unwrap(), "")
            .write_to_bytes()
            .unwrap();
        let out = runtime_info(&stdin, "io.containerd.tether.v2").unwrap();
        let info = RuntimeInfo::parse_from_bytes(&out).unwrap();
        assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
        assert_eq!(info.features.value, FEATURES_JSON);

        // A binary that does not exist: no features, still an answer.
        let stdin = runc_options_any("/nonexistent/runc", "")
            .write_to_bytes()
            .unwrap();
        let out = runtime_info(&stdin, "io.containerd.tether.v2").unwrap();
        let info = RuntimeInfo::parse_from_bytes(&out).unwrap();
        assert!(info.features.is_none());
        assert_eq!(info.name, "io.containerd.tether.v2");
    }
}
