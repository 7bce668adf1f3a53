//! What the standalone-face tests need to play a manager that reads a process's output and
//! dies mid-stream: a numbered-line writer, the output it must produce, and a reader that
//! is SIGKILLed after a number of lines.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// A shell loop printing `line1` .. `lineN`, one every `delay` seconds, then exiting with
/// `code`.
pub fn counter(n: u32, delay: &str, code: i32) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo line$i; sleep {delay}; done; exit {code}"
    )
}

/// Everything [`counter`] with `n` lines prints.
pub fn expected(n: u32) -> String {
    (1..=n).map(|i| format!("line{i}\n")).collect()
}

/// Spawns `attach` (an attach command, its stdout piped here), reads `lines` lines, then
/// SIGKILLs it mid-stream and returns all it had passed on, including what was still in
/// its pipe: the output a manager that died had already received. Fails the test on an
/// early EOF.
pub fn read_then_kill(mut attach: Command, lines: usize) -> String {
    let mut child = attach
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn attach");
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut got = String::new();
    for _ in 0..lines {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "early EOF");
        got.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.read_to_string(&mut got).unwrap();
    got
}
