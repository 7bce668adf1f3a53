//! `attach --detach-keys`: the key sequence that detaches `attach` from a process, and
//! the matcher that finds it in what `attach` reads from its stdin.
//!
//! The format is docker's and podman's: comma-separated keys, each `ctrl-<a..z, @, [, \,
//! ], ^, _>` (case-insensitive) or one printable ASCII character; the empty string
//! disables detaching. The matcher holds back the bytes of a partial match (they may be
//! the start of the sequence) and passes them on, unchanged and in order, as soon as the
//! match fails; a match may be split across any number of reads. It never allocates:
//! the caller's output buffer needs room for at most [`Matcher::max_output`] bytes.

use std::fmt;

/// The sequence used without `--detach-keys`: docker's and podman's default.
pub const DEFAULT: &str = "ctrl-p,ctrl-q";

/// A `--detach-keys` value that is not a key sequence: the messages quote the spec and
/// the offending key, and say what a key may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetachKeysError {
    /// Two commas in a row, or one at either end.
    #[error("--detach-keys {spec:?}: an empty key; a key is ctrl-<a..z, @, [, \\, ], ^, _> or one printable character")]
    EmptyKey { spec: String },
    /// A key that is neither `ctrl-<c>` nor one printable character.
    #[error("--detach-keys {spec:?}: unknown key {key:?}; a key is ctrl-<a..z, @, [, \\, ], ^, _> or one printable character")]
    UnknownKey { spec: String, key: String },
}

/// A non-empty sequence of bytes that detaches when typed.
#[derive(Clone, PartialEq, Eq)]
pub struct DetachKeys(Box<[u8]>);

impl fmt::Debug for DetachKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DetachKeys({:?})", self.0)
    }
}

impl DetachKeys {
    /// The bytes of the sequence.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Parses a `--detach-keys` value: `Ok(None)` for the empty string (detaching disabled),
/// `Ok(Some(keys))` for a valid sequence, and otherwise a [`DetachKeysError`].
pub fn parse(spec: &str) -> Result<Option<DetachKeys>, DetachKeysError> {
    if spec.is_empty() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    for key in spec.split(',') {
        let byte = parse_key(key).ok_or_else(|| {
            let spec = spec.to_string();
            if key.is_empty() {
                DetachKeysError::EmptyKey { spec }
            } else {
                DetachKeysError::UnknownKey {
                    spec,
                    key: key.to_string(),
                }
            }
        })?;
        bytes.push(byte);
    }
    Ok(Some(DetachKeys(bytes.into_boxed_slice())))
}

/// The byte a terminal sends for one key of the format, if it is one.
fn parse_key(key: &str) -> Option<u8> {
    match key.as_bytes() {
        // One printable ASCII character, space included (a comma cannot get here).
        [c] if (b' '..=b'~').contains(c) => Some(*c),
        [prefix @ .., c] if prefix.len() == 5 && prefix.eq_ignore_ascii_case(b"ctrl-") => {
            // Ctrl clears bits 0x60 of '@'..'_' (letters taken as upper case): ctrl-@ is
            // NUL, ctrl-a 0x01, ctrl-[ ESC, ctrl-_ 0x1f.
            let c = c.to_ascii_uppercase();
            (b'@'..=b'_').contains(&c).then_some(c & 0x1f)
        }
        _ => None,
    }
}

/// What [`Matcher::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// No complete sequence: everything that cannot be part of one was passed on.
    Continue,
    /// The sequence is complete. What came before it was passed on; it and everything
    /// after it in the input were not.
    Detach,
}

/// Finds a [`DetachKeys`] sequence in a stream of reads.
#[derive(Debug)]
pub struct Matcher {
    keys: DetachKeys,
    /// How many bytes of the sequence the input has matched so far (held back): the held
    /// bytes are always `keys[..matched]`, so they need no buffer of their own.
    matched: usize,
}

impl Matcher {
    /// A matcher that has seen nothing yet.
    pub fn new(keys: DetachKeys) -> Self {
        Matcher { keys, matched: 0 }
    }

    /// The most bytes one [`Matcher::feed`] of `input_len` bytes (or [`Matcher::finish`],
    /// with 0) appends: the input plus the bytes held back from earlier reads.
    pub fn max_output(&self, input_len: usize) -> usize {
        input_len + self.keys.0.len()
    }

    /// Scans `input`, appending to `out`, in order, every byte that is now known not to
    /// belong to the sequence (bytes held back by earlier calls included). Bytes that may
    /// still begin the sequence are held back until a later call decides. Appends at most
    /// [`Matcher::max_output`] bytes, so an `out` with that much spare capacity never
    /// reallocates.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let keys = self.keys.bytes();
        for &b in input {
            let m = self.matched;
            if keys[m] == b {
                self.matched += 1;
                if self.matched == keys.len() {
                    self.matched = 0;
                    return Fed::Detach;
                }
                continue;
            }
            // A mismatch: the held bytes plus `b` may still end in the start of the
            // sequence (ctrl-p,ctrl-p,ctrl-q typed as P P P Q). Find the longest such
            // tail, as KMP's failure function would; sequences are a few keys long.
            let next = (0..m)
                .rev()
                .find(|&k| keys[k] == b && keys[m - k..m] == keys[..k])
                .map_or(0, |k| k + 1);
            if next == 0 {
                out.extend_from_slice(&keys[..m]);
                out.push(b);
            } else {
                // The new match keeps `b`: only held bytes leave the window.
                out.extend_from_slice(&keys[..m + 1 - next]);
            }
            self.matched = next;
        }
        Fed::Continue
    }

    /// The input has ended: appends the bytes still held back (a partial match that can
    /// no longer complete) to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.keys.bytes()[..self.matched]);
        self.matched = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u8 = 0x10;
    const Q: u8 = 0x11;

    fn matcher(spec: &str) -> Matcher {
        Matcher::new(parse(spec).unwrap().unwrap())
    }

    /// Feeds each chunk in turn; returns what was passed on and whether it detached.
    fn feed_all(m: &mut Matcher, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for chunk in chunks {
            let cap = out.len() + m.max_output(chunk.len());
            out.reserve_exact(cap - out.len());
            let before = out.capacity();
            let fed = m.feed(chunk, &mut out);
            assert_eq!(out.capacity(), before, "no reallocation");
            if fed == Fed::Detach {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn parses_docker_format() {
        let keys = |s: &str| parse(s).unwrap().unwrap().bytes().to_vec();
        assert_eq!(keys(DEFAULT), [P, Q]);
        assert_eq!(keys("CTRL-P,Ctrl-q"), [P, Q]);
        assert_eq!(keys("ctrl-@,ctrl-a,ctrl-z"), [0, 1, 26]);
        assert_eq!(
            keys("ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_"),
            [27, 28, 29, 30, 31]
        );
        assert_eq!(keys("a,Z,~, "), b"aZ~ ");
    }

    #[test]
    fn an_empty_spec_disables_detaching() {
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn parse_errors_name_the_key() {
        for (spec, bad) in [
            ("ctrl-p,foo", "\"foo\""),
            ("ctrl-1", "\"ctrl-1\""),
            ("ctrl-", "\"ctrl-\""),
            ("\u{e9}", "\"\u{e9}\""),
            ("\t", "\"\\t\""),
        ] {
            let err = parse(spec).unwrap_err().to_string();
            assert!(
                err.contains(&format!("unknown key {bad}")),
                "{spec:?}: {err}"
            );
            assert!(err.contains("ctrl-<a..z"), "{err}");
        }
        let err = parse("ctrl-p,").unwrap_err();
        assert_eq!(
            err,
            DetachKeysError::EmptyKey {
                spec: "ctrl-p,".into()
            }
        );
        assert!(err.to_string().contains("an empty key"), "{err}");
    }

    #[test]
    fn a_full_match_detaches_and_passes_on_what_came_before() {
        let mut m = matcher(DEFAULT);
        let (out, detached) = feed_all(&mut m, &[&[b'a', b'b', P, Q, b'z']]);
        assert!(detached);
        assert_eq!(
            out, b"ab",
            "the sequence and what follows it are not passed on"
        );
    }

    #[test]
    fn a_partial_match_then_a_mismatch_passes_both_on_in_order() {
        let mut m = matcher(DEFAULT);
        let (out, detached) = feed_all(&mut m, &[&[P, b'x', b'y']]);
        assert!(!detached);
        assert_eq!(out, [P, b'x', b'y']);
        // ctrl-p ctrl-p ctrl-q: the second ctrl-p starts the match that completes.
        let (out, detached) = feed_all(&mut m, &[&[P, P, Q]]);
        assert!(detached);
        assert_eq!(out, [P]);
    }

    #[test]
    fn a_match_split_across_reads_detaches() {
        let mut m = matcher(DEFAULT);
        let (out, detached) = feed_all(&mut m, &[b"ab", &[P], &[], &[Q]]);
        assert!(detached);
        assert_eq!(out, b"ab", "the held ctrl-p is not passed on");
        // Split, then broken across reads: the held byte comes out before the next.
        let (out, detached) = feed_all(&mut m, &[&[P], b"x"]);
        assert!(!detached);
        assert_eq!(out, [P, b'x']);
    }

    #[test]
    fn overlapping_sequences_are_found() {
        // a,a,b in "aaab"; a,b,a,c in "ababac".
        let (out, detached) = feed_all(&mut matcher("a,a,b"), &[b"xa", b"a", b"ab"]);
        assert!(detached);
        assert_eq!(out, b"xa");
        let (out, detached) = feed_all(&mut matcher("a,b,a,c"), &[b"ab", b"a", b"bac"]);
        assert!(detached);
        assert_eq!(out, b"ab");
    }

    #[test]
    fn the_end_of_input_passes_on_a_held_partial_match() {
        let mut m = matcher(DEFAULT);
        let (mut out, detached) = feed_all(&mut m, &[b"hi", &[P]]);
        assert!(!detached);
        assert_eq!(out, b"hi");
        m.finish(&mut out);
        assert_eq!(out, [b'h', b'i', P]);
        m.finish(&mut out);
        assert_eq!(out.len(), 3, "nothing held twice");
    }
}
