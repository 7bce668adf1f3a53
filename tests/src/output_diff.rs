//! Comparing a process's output with what it should have been, for failure messages.

/// Where two outputs first differ, how long each is, and how each ends.
pub fn describe_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(24)..]).into_owned();
    format!(
        "{} bytes of {} (first difference at byte {at}); ends {:?}, expected end {:?}",
        got.len(),
        want.len(),
        tail(got),
        tail(want)
    )
}
