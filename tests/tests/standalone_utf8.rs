//! Standalone supervisor: args and env that are not valid UTF-8 (bytes, on Linux) in a
//! bundle's `config.json` or an exec's process spec reach the process as runc itself
//! would pass them, instead of being refused (issue 12, point 8).
//!
//! runc (Go's encoding/json) reads each byte of a JSON string that is not valid UTF-8 as
//! U+FFFD, and so a `\uXXXX` escape of a lone UTF-16 surrogate; the exec case compares
//! with `runc exec` run directly on the same raw spec.

use std::process::{Command, Stdio};
use tether_tests::StandaloneEnv;

/// Prints its first argument, $X and $Y as hex bytes.
const SCRIPT: &str = "for v in \"$1\" \"$X\" \"$Y\"; do printf %s \"$v\" | od -An -tx1; done";

/// `json` with the placeholders `@ARG@` and `@ENV@` replaced by raw bytes, `@SUR@` by the
/// escape of a lone surrogate.
fn with_raw_bytes(json: &[u8]) -> Vec<u8> {
    let s = json.to_vec();
    let replace = |s: Vec<u8>, from: &[u8], to: &[u8]| -> Vec<u8> {
        let at = s
            .windows(from.len())
            .position(|w| w == from)
            .expect("placeholder");
        [&s[..at], to, &s[at + from.len()..]].concat()
    };
    let s = replace(s, b"@ARG@", b"a\xffb");
    let s = replace(s, b"@SUR@", br"\ud800x");
    replace(s, b"@ENV@", b"\xfe\xe2\x82")
}

fn hex_words(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What Go's decoder makes of them: one U+FFFD (ef bf bd) per invalid byte, and one for
/// the lone surrogate.
const EXPECTED: &str = "61 ef bf bd 62 ef bf bd ef bf bd ef bf bd ef bf bd 78";

#[test]
fn run_passes_raw_bytes_in_config_json_on_as_runc_reads_them() {
    let env = StandaloneEnv::new();
    let id = env.id("utf8r");
    let mut bundle = env.bundle("b", &["sh", "-c", SCRIPT, "sh", "@ARG@"]);
    bundle.config_mut()["process"]["env"]
        .as_array_mut()
        .unwrap()
        .extend(["X=@ENV@".into(), "Y=@SUR@".into()]);
    bundle.save().unwrap();
    let config = bundle.path().join("config.json");
    let raw = with_raw_bytes(&std::fs::read(&config).unwrap());
    assert!(std::str::from_utf8(&raw).is_err());
    std::fs::write(&config, &raw).unwrap();

    env.run(&id, &bundle);
    let out = env.output("attach", &[&id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hex_words(&out.stdout), EXPECTED);
    assert_eq!(
        std::fs::read(&config).unwrap(),
        raw,
        "config.json untouched"
    );
}

#[test]
fn exec_passes_raw_bytes_in_the_process_spec_on_as_runc_exec_does() {
    let env = StandaloneEnv::new();
    let id = env.id("utf8e");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let mut process = bundle.exec_process(&["sh", "-c", SCRIPT, "sh", "@ARG@"], false);
    process["env"]
        .as_array_mut()
        .unwrap()
        .extend(["X=@ENV@".into(), "Y=@SUR@".into()]);
    let raw = with_raw_bytes(&serde_json::to_vec(&process).unwrap());
    let file = env.runc_env().dir().join("raw.json");
    std::fs::write(&file, &raw).unwrap();

    // runc itself, on the same file.
    let direct = Command::new(env.runc_env().runc_binary())
        .arg("--root")
        .arg(env.runc_root())
        .args(["exec", "--process", file.to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(direct.status.success(), "runc exec: {direct:?}");
    assert_eq!(hex_words(&direct.stdout), EXPECTED);

    let out = env.output("exec", &["--process", file.to_str().unwrap(), &id, "p"]);
    assert!(
        out.status.success(),
        "exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.output("attach", &[&id, "p"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(hex_words(&out.stdout), hex_words(&direct.stdout));
}
