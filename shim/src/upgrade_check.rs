//! `containerd-shim-tether-v2 upgrade-check`: the dry run of a live upgrade, for both
//! faces. Reads the state a running shim or supervisor would hand over from stdin and says
//! whether this binary can take it over (`ok <version> takes over ...`, exit 0) or why
//! not (exit 1). Touches nothing.
//!
//! The two kinds of state are told apart by their `face`: a standalone supervisor's says
//! [`saved::FACE`]; a shim's has none (its format 1 predates the field, and stays readable
//! as it was).

use crate::containerd::upgrade::protocol::version_line;
use crate::containerd::upgrade::state as shim_state;
use crate::standalone::upgrade::saved;
use serde::Deserialize;
use std::io::Read;

/// Most bytes read (the larger of the two faces' own bounds: each checks its own).
const MAX_STATE: u64 = 64 << 20;

/// Why this binary does not take a state over.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Shim(#[from] shim_state::StateError),
    #[error(transparent)]
    Supervisor(#[from] saved::SavedError),
    #[error("a state of an unknown kind ({0:?})")]
    UnknownFace(String),
}

/// Says whether this binary takes over `bytes`: what to print on success, else why not.
pub fn check(bytes: &[u8]) -> Result<String, CheckError> {
    #[derive(Deserialize)]
    struct Face {
        #[serde(default)]
        face: Option<String>,
    }
    let face = serde_json::from_slice::<Face>(bytes)
        .map(|f| f.face)
        .unwrap_or(None);
    let (what, format, saved_by) = match face.as_deref() {
        None => {
            let s = shim_state::parse(bytes)?;
            ("shim", s.format, s.saved_by)
        }
        Some(saved::FACE) => {
            if bytes.len() as u64 > saved::MAX_STATE {
                return Err(saved::SavedError::TooLarge.into());
            }
            let s = saved::parse(bytes)?;
            ("standalone supervisor", s.format, s.saved_by)
        }
        Some(other) => return Err(CheckError::UnknownFace(other.to_string())),
    };
    Ok(format!(
        "ok {} takes over {what} format {format} from {saved_by}",
        version_line()
    ))
}

/// The subcommand: reads stdin (bounded), prints the verdict; returns the exit status.
pub fn main() -> u8 {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin()
        .lock()
        .take(MAX_STATE + 1)
        .read_to_end(&mut bytes)
    {
        println!("reading the state: {e}");
        return 1;
    }
    if bytes.len() as u64 > MAX_STATE {
        println!("the state is larger than {MAX_STATE} bytes");
        return 1;
    }
    match check(&bytes) {
        Ok(said) => {
            println!("{said}");
            0
        }
        Err(why) => {
            println!("{why}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_face_is_checked_by_its_own_rules() {
        // The shim's recorded state of format 1: no face, read as it always was.
        let shim = include_bytes!("../../tests/fixtures/upgrade-state-v1.json");
        let said = check(shim).unwrap();
        assert!(
            said.starts_with("ok ") && said.contains("takes over shim format 1"),
            "{said}"
        );
        let sup = include_bytes!("../../tests/fixtures/supervisor-state-v1.json");
        let said = check(sup).unwrap();
        assert!(
            said.contains("takes over standalone supervisor format 1"),
            "{said}"
        );
        // A supervisor's state of a newer format is refused by name, not as a shim's.
        let mut v: serde_json::Value = serde_json::from_slice(sup).unwrap();
        v["format"] = 99.into();
        let why = check(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(why.contains("state format 99 is not one"), "{why}");
        v["face"] = "pod-sandbox".into();
        let why = check(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(why.contains("unknown kind"), "{why}");
        assert!(check(b"{}").is_err());
    }
}
