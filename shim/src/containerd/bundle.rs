//! Reading an OCI bundle's `config.json` for the few facts the shim needs, with errors
//! that say what is wrong with it before runc gets a chance to say it less clearly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What is wrong with a bundle's `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// It cannot be read (missing, unreadable).
    #[error("bundle config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// It is not JSON (the error gives line and column).
    #[error("bundle config {} is not valid JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// It is JSON, but not an object.
    #[error("bundle config {} is not a JSON object", path.display())]
    NotAnObject { path: PathBuf },
}

/// What the shim takes from a bundle's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecFacts {
    /// The container gets a pid namespace of its own (its init's exit ends every process).
    pub own_pid_namespace: bool,
    pub annotations: HashMap<String, String>,
}

/// The annotations that put containers in one shim (a pod).
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Reads `<bundle>/config.json`. Errors name the file and the problem (missing,
/// unreadable, not JSON with line and column, not an object).
pub fn read_spec(bundle: &Path) -> Result<SpecFacts, BundleError> {
    let path = bundle.join("config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(source) => return Err(BundleError::Read { path, source }),
    };
    // Read as runc (Go) reads it: bytes that are not UTF-8 in strings are no error (args
    // and env are bytes on Linux); runc itself reads the file untouched.
    let text = crate::process_core::go_json::as_go_reads(&bytes);
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(source) => return Err(BundleError::NotJson { path, source }),
    };
    let Some(obj) = value.as_object() else {
        return Err(BundleError::NotAnObject { path });
    };
    let own_pid_namespace = obj
        .get("linux")
        .and_then(|l| l.get("namespaces"))
        .and_then(|n| n.as_array())
        .map(|ns| {
            ns.iter().any(|n| {
                n.get("type").and_then(|t| t.as_str()) == Some("pid")
                    && n.get("path")
                        .and_then(|p| p.as_str())
                        .unwrap_or("")
                        .is_empty()
            })
        })
        .unwrap_or(false);
    let annotations = obj
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(SpecFacts {
        own_pid_namespace,
        annotations,
    })
}

/// The id of the shim a container belongs to: its group (pod) or itself.
pub fn group_id(facts: &SpecFacts, id: &str) -> String {
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| facts.annotations.get(*k).filter(|v| !v.is_empty()).cloned())
        .unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("config.json"), text).unwrap();
    }

    #[test]
    fn reads_pid_namespace_and_group() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]},
               "annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        );
        let f = read_spec(d.path()).unwrap();
        assert!(f.own_pid_namespace);
        assert_eq!(group_id(&f, "c1"), "pod1");

        write(
            d.path(),
            r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#,
        );
        let f = read_spec(d.path()).unwrap();
        assert!(!f.own_pid_namespace);
        assert_eq!(group_id(&f, "c1"), "c1");
    }

    #[test]
    fn errors_name_the_file_and_problem() {
        let d = tempfile::tempdir().unwrap();
        let e = read_spec(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("No such file"),
            "{e}"
        );
        write(d.path(), "{ nope");
        let e = read_spec(d.path()).unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && e.contains("line 1"), "{e}");
        write(d.path(), "[1]");
        assert!(read_spec(d.path())
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
    }
}
