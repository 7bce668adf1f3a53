//! The shim's command line, parsed with the semantics of Go's `flag` package.
//!
//! containerd (and the Go shims it was written against) invoke a shim as
//!
//! ```text
//! containerd-shim-tether-v2 -namespace NS -address /run/containerd/containerd.sock \
//!     -publish-binary /usr/bin/containerd -id ID [-debug] [-bundle PATH] start|delete
//! ```
//!
//! and the long-running server is started by our own `start` with the same flags and no
//! action. containerd 2.x also runs `containerd-shim-tether-v2 -info`, and `-v` prints the
//! version. Because containerd builds these argument lists for Go's `flag` package, we accept
//! exactly what that package accepts: `-name value`, `-name=value`, `--name value`,
//! `--name=value`, boolean flags without a value or with `=true`/`=false`, parsing stopping at
//! the first non-flag argument or after `--`. Hand-written on purpose: argument crates
//! such as clap and lexopt follow the GNU conventions, where `-namespace` is a bundle of
//! short flags, and Go's rules (a boolean takes no separate value, `--` and the first
//! non-flag end the flags) are few.

use std::path::PathBuf;

/// What the invocation asks the shim to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No action argument: run the long-running ttrpc server.
    Serve,
    /// `start`: spawn the server (if needed) and print its address on stdout.
    Start,
    /// `delete`: clean up after a container whose server is gone.
    Delete,
    /// `-v` / `-version`: print [`crate::containerd::info::version_text`] and exit.
    Version,
    /// `-info`: read runtime options on stdin, print a protobuf `RuntimeInfo` and exit.
    Info,
}

/// The values of the shim's flags. Every field holds what the command line said, or its
/// default (empty, `None`, `false`) when the flag was absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `-namespace`: the containerd namespace that owns the shim.
    pub namespace: String,
    /// `-id`: the id of the task (the container, or the sandbox when shims are grouped).
    pub id: String,
    /// `-address`: containerd's gRPC address (a plain path or a `unix://` URI).
    pub address: String,
    /// `-publish-binary`: the containerd binary used to publish events (may be empty).
    pub publish_binary: String,
    /// `-bundle`: the bundle directory when it is not the working directory (given on
    /// `delete`). An empty value counts as absent, as it does for the Go shim.
    pub bundle: Option<PathBuf>,
    /// `-socket`: an explicit address for the ttrpc socket to serve, instead of the one
    /// derived from address, namespace and id. An empty value counts as absent.
    pub socket: Option<String>,
    /// `-debug`: log at debug level.
    pub debug: bool,
}

/// Why a command line was refused. Messages follow Go's `flag` package where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    /// A flag that the shim does not define, e.g. `-x`. Holds the name without dashes.
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    /// A non-boolean flag at the end of the arguments with no value after it.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// Something that starts with a dash but cannot be a flag (`---x`, `-=x`).
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// A boolean flag given a value that Go's `strconv.ParseBool` refuses.
    #[error("invalid boolean value {value:?} for -{flag}: parse error")]
    InvalidBool {
        /// The flag's name.
        flag: String,
        /// The value that was given.
        value: String,
    },
    /// `-h` or `-help`. The message is [`USAGE`]; Go's flag package prints it and exits 2.
    #[error("flag: help requested\n{}", USAGE)]
    Help,
    /// The first non-flag argument is not an action the shim knows.
    #[error("unknown action {0:?}: expected \"start\", \"delete\" or no action")]
    UnknownAction(String),
    /// A flag that the action needs was absent or empty.
    #[error("missing required flag -{0}")]
    MissingFlag(&'static str),
}

/// A short usage text listing every flag and action, for `-h` and for errors.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 [flags] [start|delete]
  -namespace string       namespace that owns the shim
  -id string              id of the task
  -address string         grpc address back to main containerd
  -publish-binary string  path to the binary used to publish events
  -bundle string          path to the bundle if not workdir
  -socket string          socket path to serve
  -debug                  enable debug output in logs
  -v, -version            show the shim version and exit
  -info                   read the runtime options protobuf from stdin, print the runtime
                          info protobuf to stdout, and exit";

/// The flags the shim defines. Booleans take no separate value argument.
#[derive(Clone, Copy)]
enum Name {
    Namespace,
    Id,
    Address,
    PublishBinary,
    Bundle,
    Socket,
    Debug,
    Version,
    Info,
}

impl Name {
    fn lookup(name: &str) -> Option<Name> {
        Some(match name {
            "namespace" => Name::Namespace,
            "id" => Name::Id,
            "address" => Name::Address,
            "publish-binary" => Name::PublishBinary,
            "bundle" => Name::Bundle,
            "socket" => Name::Socket,
            "debug" => Name::Debug,
            // Go's shim defines both spellings for the same variable.
            "v" | "version" => Name::Version,
            "info" => Name::Info,
            _ => return None,
        })
    }

    fn is_bool(self) -> bool {
        matches!(self, Name::Debug | Name::Version | Name::Info)
    }
}

/// Go's `strconv.ParseBool`: the exact spellings it accepts, nothing else.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses the shim's arguments (without `argv[0]`).
///
/// Promises: Go `flag` syntax (see the module documentation); a repeated flag keeps its last
/// value; the first non-flag argument (or the one after `--`) is the action and anything after
/// it is ignored, as Go's shim ignores it. `-v`/`-version` wins over `-info`, which wins over
/// any action. `Serve`, `Start` and `Delete` need non-empty `-namespace` and `-id`
/// ([`FlagsError::MissingFlag`] names the first missing one); `Version` and `Info` need
/// nothing. Never panics.
pub fn parse(args: &[String]) -> Result<(Flags, Action), FlagsError> {
    let mut flags = Flags::default();
    let mut version = false;
    let mut info = false;
    let mut rest = args;

    while let Some((arg, tail)) = rest.split_first() {
        // Like Go: "-" alone, or anything not starting with '-', ends the flags.
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        rest = tail;
        let body = if let Some(b) = arg.strip_prefix("--") {
            if b.is_empty() {
                // "--" ends the flags and is consumed.
                break;
            }
            b
        } else {
            &arg[1..]
        };
        if body.starts_with('-') || body.starts_with('=') {
            return Err(FlagsError::BadSyntax(arg.clone()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(flag) = Name::lookup(name) else {
            if name == "h" || name == "help" {
                return Err(FlagsError::Help);
            }
            return Err(FlagsError::Undefined(name.to_owned()));
        };

        if flag.is_bool() {
            let on = match inline {
                None => true,
                Some(v) => parse_go_bool(v).ok_or_else(|| FlagsError::InvalidBool {
                    flag: name.to_owned(),
                    value: v.to_owned(),
                })?,
            };
            match flag {
                Name::Debug => flags.debug = on,
                Name::Version => version = on,
                _ => info = on,
            }
            continue;
        }

        // A string flag without "=value" takes the next argument, whatever it looks like
        // (Go does the same, so "-id -x" sets the id to "-x").
        let value = match inline {
            Some(v) => v.to_owned(),
            None => match rest.split_first() {
                Some((v, tail)) => {
                    rest = tail;
                    v.clone()
                }
                None => return Err(FlagsError::MissingValue(name.to_owned())),
            },
        };
        match flag {
            Name::Namespace => flags.namespace = value,
            Name::Id => flags.id = value,
            Name::Address => flags.address = value,
            Name::PublishBinary => flags.publish_binary = value,
            Name::Bundle => flags.bundle = (!value.is_empty()).then(|| PathBuf::from(value)),
            _ => flags.socket = (!value.is_empty()).then_some(value),
        }
    }

    if version {
        return Ok((flags, Action::Version));
    }
    if info {
        return Ok((flags, Action::Info));
    }
    let action = match rest.first().map(String::as_str) {
        None => Action::Serve,
        Some("start") => Action::Start,
        Some("delete") => Action::Delete,
        Some(other) => return Err(FlagsError::UnknownAction(other.to_owned())),
    };
    if flags.namespace.is_empty() {
        return Err(FlagsError::MissingFlag("namespace"));
    }
    if flags.id.is_empty() {
        return Err(FlagsError::MissingFlag("id"));
    }
    Ok((flags, action))
}

impl Flags {
    /// argv (without `argv[0]`) for re-executing ourselves as the long-running server: the
    /// same flags and no action, so that [`parse`] gives back these flags (an empty
    /// `publish_binary` is left out and parses back as empty) and [`Action::Serve`].
    /// Each value is a separate argument, which Go-style parsing takes verbatim even when it
    /// starts with a dash.
    pub fn to_server_args(&self) -> Vec<String> {
        let mut args = vec![
            "-namespace".to_owned(),
            self.namespace.clone(),
            "-id".to_owned(),
            self.id.clone(),
            "-address".to_owned(),
            self.address.clone(),
        ];
        if !self.publish_binary.is_empty() {
            args.push("-publish-binary".to_owned());
            args.push(self.publish_binary.clone());
        }
        if let Some(bundle) = &self.bundle {
            args.push("-bundle".to_owned());
            args.push(bundle.to_string_lossy().into_owned());
        }
        if let Some(socket) = &self.socket {
            args.push("-socket".to_owned());
            args.push(socket.clone());
        }
        if self.debug {
            args.push("-debug".to_owned());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    fn ok(s: &[&str]) -> (Flags, Action) {
        match parse(&argv(s)) {
            Ok(r) => r,
            Err(e) => panic!("parse({s:?}) failed: {e}"),
        }
    }

    fn err(s: &[&str]) -> FlagsError {
        match parse(&argv(s)) {
            Ok(r) => panic!("parse({s:?}) succeeded: {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn containerd_start_command_line() {
        let (f, a) = ok(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "-debug",
            "start",
        ]);
        assert_eq!(a, Action::Start);
        assert_eq!(
            f,
            Flags {
                namespace: "default".into(),
                id: "abc".into(),
                address: "/run/containerd/containerd.sock".into(),
                publish_binary: "/usr/bin/containerd".into(),
                bundle: None,
                socket: None,
                debug: true,
            }
        );
    }

    #[test]
    fn containerd_delete_command_line_with_bundle() {
        let (f, a) = ok(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "x",
            "-bundle",
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/x",
            "delete",
        ]);
        assert_eq!(a, Action::Delete);
        assert_eq!(
            f.bundle,
            Some(PathBuf::from(
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/x"
            ))
        );
        assert!(!f.debug);
    }

    #[test]
    fn all_value_syntaxes() {
        let (f, a) = ok(&[
            "--namespace",
            "ns",
            "-id=i",
            "--address=/a",
            "-socket",
            "unix:///s",
        ]);
        assert_eq!(a, Action::Serve);
        assert_eq!(f.namespace, "ns");
        assert_eq!(f.id, "i");
        assert_eq!(f.address, "/a");
        assert_eq!(f.socket.as_deref(), Some("unix:///s"));
        // "=" inside the value is kept; an empty inline value is allowed.
        let (f, _) = ok(&["-namespace=a=b", "-id", "i", "-address="]);
        assert_eq!(f.namespace, "a=b");
        assert_eq!(f.address, "");
    }

    #[test]
    fn value_may_start_with_a_dash() {
        let (f, _) = ok(&["-namespace", "-x", "-id", "--"]);
        assert_eq!(f.namespace, "-x");
        assert_eq!(f.id, "--");
    }

    #[test]
    fn boolean_forms() {
        for (arg, want) in [
            ("-debug", true),
            ("--debug", true),
            ("-debug=true", true),
            ("-debug=1", true),
            ("-debug=T", true),
            ("-debug=false", false),
            ("-debug=0", false),
            ("--debug=False", false),
        ] {
            let (f, _) = ok(&["-namespace", "n", "-id", "i", arg]);
            assert_eq!(f.debug, want, "{arg}");
        }
        // A boolean never consumes the next argument: "false" here is the action.
        assert_eq!(
            err(&["-namespace", "n", "-id", "i", "-debug", "false"]),
            FlagsError::UnknownAction("false".into())
        );
        assert_eq!(
            err(&["-debug=yes"]),
            FlagsError::InvalidBool {
                flag: "debug".into(),
                value: "yes".into()
            }
        );
    }

    #[test]
    fn version_and_info_need_nothing() {
        assert_eq!(ok(&["-v"]).1, Action::Version);
        assert_eq!(ok(&["--version"]).1, Action::Version);
        assert_eq!(ok(&["-info"]).1, Action::Info);
        assert_eq!(ok(&["-info", "-v"]).1, Action::Version);
        // Even an unknown action does not matter then (Go checks -v first too).
        assert_eq!(ok(&["-v", "frobnicate"]).1, Action::Version);
        // -info=false is as if it were absent.
        assert_eq!(err(&["-info=false"]), FlagsError::MissingFlag("namespace"));
    }

    #[test]
    fn parsing_stops_at_first_non_flag_or_double_dash() {
        let (f, a) = ok(&["-namespace", "n", "-id", "i", "start", "-debug", "extra"]);
        assert_eq!(a, Action::Start);
        assert!(!f.debug, "flags after the action are not parsed");
        let (_, a) = ok(&["-namespace", "n", "-id", "i", "--", "delete"]);
        assert_eq!(a, Action::Delete);
    }

    #[test]
    fn double_dash_then_dash_word_is_an_unknown_action() {
        // After "--" even a dash argument is positional: the action, which is not one we know.
        assert_eq!(
            err(&["-namespace", "n", "-id", "i", "--", "-debug"]),
            FlagsError::UnknownAction("-debug".into())
        );
        // A lone "-" is a positional argument in Go.
        assert_eq!(
            err(&["-namespace", "n", "-id", "i", "-"]),
            FlagsError::UnknownAction("-".into())
        );
    }

    #[test]
    fn errors() {
        assert_eq!(err(&["-x"]), FlagsError::Undefined("x".into()));
        assert_eq!(
            err(&["-x"]).to_string(),
            "flag provided but not defined: -x"
        );
        assert_eq!(err(&["--nope=1"]), FlagsError::Undefined("nope".into()));
        assert_eq!(err(&["-id"]), FlagsError::MissingValue("id".into()));
        assert_eq!(err(&["-id"]).to_string(), "flag needs an argument: -id");
        assert_eq!(err(&["---id"]), FlagsError::BadSyntax("---id".into()));
        assert_eq!(err(&["-=x"]), FlagsError::BadSyntax("-=x".into()));
        assert_eq!(err(&["-h"]), FlagsError::Help);
        assert_eq!(err(&["--help"]), FlagsError::Help);
        assert_eq!(
            err(&["-namespace", "n", "-id", "i", "frobnicate"]),
            FlagsError::UnknownAction("frobnicate".into())
        );
    }

    #[test]
    fn required_flags_per_action() {
        assert_eq!(err(&[]), FlagsError::MissingFlag("namespace"));
        assert_eq!(
            err(&["-id", "i", "start"]),
            FlagsError::MissingFlag("namespace")
        );
        assert_eq!(
            err(&["-namespace", "n", "delete"]),
            FlagsError::MissingFlag("id")
        );
        assert_eq!(
            err(&["-namespace", "", "-id", "i"]),
            FlagsError::MissingFlag("namespace")
        );
        assert!(err(&["-namespace", "n"]).to_string().contains("-id"));
    }

    #[test]
    fn last_value_wins_and_empty_optional_is_none() {
        let (f, _) = ok(&[
            "-namespace",
            "a",
            "-namespace",
            "b",
            "-id",
            "i",
            "-bundle",
            "/b",
            "-bundle",
            "",
            "-socket=",
        ]);
        assert_eq!(f.namespace, "b");
        assert_eq!(f.bundle, None);
        assert_eq!(f.socket, None);
    }

    #[test]
    fn server_args_round_trip() {
        let full = Flags {
            namespace: "default".into(),
            id: "-weird id".into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            bundle: Some(PathBuf::from("/b u n d l e")),
            socket: Some("unix:///run/containerd/s/x".into()),
            debug: true,
        };
        let minimal = Flags {
            namespace: "n".into(),
            id: "i".into(),
            ..Flags::default()
        };
        for f in [full, minimal] {
            let args = f.to_server_args();
            assert!(!args.iter().any(|a| a == "start" || a == "delete"));
            assert_eq!(parse(&args), Ok((f, Action::Serve)));
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "",
            "-",
            "--",
            "---",
            "-=",
            "--=",
            "=",
            "-é",
            "-debug=",
            "-\u{0}",
            "--id=\u{fffd}",
        ];
        for a in odd {
            for b in odd {
                let _ = parse(&argv(&[a, b]));
            }
        }
    }
}
