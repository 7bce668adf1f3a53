//! A `log` crate backend that writes logrus text lines, for containerd's `log` FIFO.
//!
//! containerd creates a FIFO named `log` in the bundle directory (the shim's working
//! directory), opens its read end before it starts the shim, and copies whatever arrives into
//! its own log. Its Go shims write logrus `TextFormatter` lines there, so tether writes the
//! same format and a containerd log reads the same whichever shim wrote it:
//!
//! ```text
//! time="2026-11-23T03:24:45.123456789Z" level=info msg="starting" id=abc namespace=default runtime=io.containerd.tether.v2
//! ```
//!
//! The sink is non-blocking: while containerd is away (restarting) or slow, lines are dropped
//! rather than stalling the shim, which must keep reaping and serving its container.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Logs records at or above a level as logrus text lines to one sink.
pub struct Logger {
    level: LevelFilter,
    /// The fields, pre-rendered once as ` key=value ...` (sorted, quoted) for every line.
    suffix: String,
    sink: Mutex<Sink>,
}

struct Sink {
    out: Box<dyn Write + Send>,
    /// The previous line was only partly written (a non-blocking pipe filled up mid-line), so
    /// the next one starts with a newline to keep the reader's lines whole.
    cut: bool,
}

impl Logger {
    /// Writes to `sink` (the opened `log` FIFO, or stderr). `debug` -> level Debug else Info.
    /// Fields appended to every line, e.g.
    /// `[("runtime","io.containerd.tether.v2"),("namespace",ns),("id",id)]`.
    ///
    /// As logrus does, fields are written sorted by key (stably, so with duplicate keys the
    /// order given is kept), and a field named `time`, `level` or `msg` is renamed
    /// `fields.time` (etc.) so it cannot be mistaken for the line's own.
    pub fn new(sink: Box<dyn Write + Send>, debug: bool, fields: Vec<(String, String)>) -> Self {
        let mut fields = fields;
        for (key, _) in fields.iter_mut() {
            if matches!(key.as_str(), "time" | "level" | "msg") {
                key.insert_str(0, "fields.");
            }
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut suffix = String::new();
        for (key, value) in &fields {
            suffix.push(' ');
            push_key_value(&mut suffix, key, value);
        }
        Logger {
            level: if debug {
                LevelFilter::Debug
            } else {
                LevelFilter::Info
            },
            suffix,
            sink: Mutex::new(Sink {
                out: sink,
                cut: false,
            }),
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut msg = String::new();
        // write! rather than format!: a Display impl that fails must not panic the shim.
        let _ = write!(msg, "{}", record.args());
        let line = format_line(SystemTime::now(), record.level(), &msg, &self.suffix);
        // A poisoned lock only means another thread panicked mid-write; the sink is still
        // usable, and losing logging for the rest of the shim's life would be worse.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.write_line(line);
    }

    fn flush(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sink.out.flush();
    }
}

impl Sink {
    /// Writes `line` with as few write(2) calls as the sink allows (one, unless a pipe takes
    /// only part of a line longer than PIPE_BUF). Any error other than EINTR drops the rest
    /// of the line: EAGAIN (containerd is not reading fast enough), EPIPE (containerd is gone;
    /// the shim ignores SIGPIPE) or anything else. The descriptor is kept: a restarted
    /// containerd reopens the FIFO and later lines reach it again.
    fn write_line(&mut self, line: String) {
        let mut bytes = line.into_bytes();
        if self.cut {
            bytes.insert(0, b'\n');
        }
        let mut rest = &bytes[..];
        let mut wrote_some = false;
        while !rest.is_empty() {
            match self.out.write(rest) {
                Ok(0) => break,
                Ok(n) => {
                    wrote_some = true;
                    rest = rest.get(n..).unwrap_or_default();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if rest.is_empty() {
            self.cut = false;
        } else if wrote_some {
            self.cut = true;
        }
    }
}

/// logrus' name for a level.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One logrus text line, newline included. `suffix` is the pre-rendered fields.
pub fn format_line(time: SystemTime, level: Level, msg: &str, suffix: &str) -> String {
    let mut line = String::with_capacity(64 + msg.len() + suffix.len());
    push_key_value(&mut line, "time", &fifo::rfc3339::format(time));
    line.push(' ');
    push_key_value(&mut line, "level", level_name(level));
    // logrus leaves msg out when it is empty.
    if !msg.is_empty() {
        line.push(' ');
        push_key_value(&mut line, "msg", msg);
    }
    line.push_str(suffix);
    line.push('\n');
    line
}

/// Appends `key=value`, quoting `value` when logrus would.
pub fn push_key_value(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    if needs_quoting(value) {
        go_quote(out, value);
    } else {
        out.push_str(value);
    }
}

/// logrus' `needsQuoting`: anything outside `[A-Za-z0-9-._/@^+]`. An empty value is not
/// quoted (logrus' `QuoteEmptyFields` is off in containerd).
fn needs_quoting(s: &str) -> bool {
    !s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+'))
}

/// Go's `%q` (`strconv.Quote`): double quotes; `\` and `"` escaped; `\a \b \f \n \r \t \v`;
/// other non-printable characters as `\xNN` (below U+0020 and U+007F), `\uNNNN` or
/// `\UNNNNNNNN`; printable characters, non-ASCII included, as they are.
fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// An approximation of Go's `unicode.IsPrint` without Unicode tables (the shim stays small):
/// not printable are controls, every space except U+0020, the common format characters
/// (soft hyphen, zero-width and bidi controls, BOM, ...), private-use characters and the
/// non-characters U+FFFE/U+FFFF. Unassigned code points, which Go also escapes, are written
/// as they are.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xE000..=0xF8FF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xFFFE
            | 0xFFFF
            | 0xF0000..=0x10FFFF
    )
}

/// Installs `logger` as the process-wide `log` backend and sets the maximum level to its
/// level (Debug or Info). Err if a logger is installed already; the refused logger is never
/// used (its one small allocation stays leaked, as any `'static` logger is).
pub fn install(logger: Logger) -> Result<(), log::SetLoggerError> {
    let level = logger.level;
    // log's set_boxed_logger needs its "std" feature, which nothing here enables; leaking
    // the one logger the process ever has is the same thing.
    let logger: &'static Logger = Box::leak(Box::new(logger));
    log::set_logger(logger)?;
    log::set_max_level(level);
    Ok(())
}

/// Opens the `log` FIFO in `dir` for writing without blocking (fifo::open_write(path, true):
/// non-blocking so a slow or absent containerd never stalls the shim), falling back to stderr
/// when there is none (no such file, not a FIFO, or no reader: containerd opens its end
/// before it starts the shim, so a missing reader means it is not waiting for our logs).
pub fn open_sink(dir: &Path) -> Box<dyn Write + Send> {
    open_fifo_sink(dir).unwrap_or_else(|| Box::new(io::stderr()))
}

/// The `log` FIFO in `dir` opened as [`open_sink`] opens it, or `None` where that falls back
/// to stderr.
pub fn open_fifo_sink(dir: &Path) -> Option<Box<dyn Write + Send>> {
    fifo::open_write(&dir.join("log"), true)
        .ok()
        .map(|file| Box::new(file) as Box<dyn Write + Send>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Memory {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn fields() -> Vec<(String, String)> {
        vec![
            ("runtime".into(), "io.containerd.tether.v2".into()),
            ("namespace".into(), "default".into()),
            ("id".into(), "abc".into()),
        ]
    }

    fn emit(logger: &Logger, level: Level, msg: &str) {
        logger.log(
            &Record::builder()
                .level(level)
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn line_format_matches_logrus() {
        let t = UNIX_EPOCH + Duration::new(1_795_404_285, 123_456_789);
        let logger = Logger::new(Box::new(io::sink()), false, fields());
        assert_eq!(
            format_line(t, Level::Info, "starting", &logger.suffix),
            "time=\"2026-11-23T03:24:45.123456789Z\" level=info msg=starting \
             id=abc namespace=default runtime=io.containerd.tether.v2\n"
        );
        assert_eq!(
            format_line(t, Level::Warn, "two words", ""),
            "time=\"2026-11-23T03:24:45.123456789Z\" level=warning msg=\"two words\"\n"
        );
        // Empty msg is left out, as logrus does.
        assert_eq!(
            format_line(t, Level::Error, "", " a=b"),
            "time=\"2026-11-23T03:24:45.123456789Z\" level=error a=b\n"
        );
    }

    #[test]
    fn quoting_follows_go() {
        let q = |s: &str| {
            let mut out = String::new();
            push_key_value(&mut out, "k", s);
            out
        };
        assert_eq!(q("a-b.c_d/e@f^g+h9"), "k=a-b.c_d/e@f^g+h9");
        assert_eq!(q(""), "k=");
        assert_eq!(q("a b"), "k=\"a b\"");
        assert_eq!(q("x=y"), "k=\"x=y\"");
        assert_eq!(q(r#"say "hi"\"#), r#"k="say \"hi\"\\""#);
        assert_eq!(q("l1\nl2\tt\r"), r#"k="l1\nl2\tt\r""#);
        assert_eq!(q("\u{7}\u{8}\u{b}\u{c}"), r#"k="\a\b\v\f""#);
        assert_eq!(q("\u{0}\u{1b}\u{7f}"), r#"k="\x00\x1b\x7f""#);
        assert_eq!(q("\u{85}\u{a0}\u{2028}"), r#"k="\u0085\u00a0\u2028""#);
        assert_eq!(q("\u{feff}\u{200b}"), r#"k="\ufeff\u200b""#);
        assert_eq!(q("\u{10ffff}"), r#"k="\U0010ffff""#);
        // Printable non-ASCII is written as is, but still forces quotes.
        assert_eq!(q("héllo 世界 🙂"), "k=\"héllo 世界 🙂\"");
    }

    #[test]
    fn field_order_and_clashes() {
        let logger = Logger::new(
            Box::new(io::sink()),
            false,
            vec![
                ("zeta".into(), "1".into()),
                ("msg".into(), "m".into()),
                ("alpha".into(), "x y".into()),
            ],
        );
        assert_eq!(logger.suffix, " alpha=\"x y\" fields.msg=m zeta=1");
    }

    #[test]
    fn levels_and_one_write_per_line() {
        let mem = Memory::default();
        let info = Logger::new(Box::new(mem.clone()), false, fields());
        assert_eq!(info.level, LevelFilter::Info);
        emit(&info, Level::Debug, "hidden");
        emit(&info, Level::Trace, "hidden");
        emit(&info, Level::Info, "shown");
        emit(&info, Level::Error, "bad");
        let text = mem.text();
        assert!(!text.contains("hidden"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains(" level=info msg=shown id=abc"), "{text}");
        assert!(lines[1].contains(" level=error msg=bad "), "{text}");

        let mem = Memory::default();
        let debug = Logger::new(Box::new(mem.clone()), true, vec![]);
        emit(&debug, Level::Debug, "d");
        emit(&debug, Level::Trace, "t");
        assert!(
            mem.text().ends_with(" level=debug msg=d\n"),
            "{}",
            mem.text()
        );
        assert_eq!(mem.text().lines().count(), 1);
    }

    /// A sink that counts write calls and can fail or take part of a buffer.
    struct Scripted {
        calls: Arc<Mutex<Vec<Vec<u8>>>>,
        script: Vec<io::Result<usize>>,
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls.lock().unwrap().push(buf.to_vec());
            if self.script.is_empty() {
                Ok(buf.len())
            } else {
                self.script.remove(0).map(|n| n.min(buf.len()))
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn errors_drop_the_line_and_cut_lines_are_resynced() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            calls: calls.clone(),
            script: vec![
                Err(io::ErrorKind::WouldBlock.into()),
                Err(io::Error::from_raw_os_error(libc::EPIPE)),
                Err(io::ErrorKind::Interrupted.into()),
                Ok(usize::MAX),
                Ok(5),
                Err(io::ErrorKind::WouldBlock.into()),
            ],
        };
        let logger = Logger::new(Box::new(sink), false, vec![]);
        emit(&logger, Level::Info, "eagain"); // dropped
        emit(&logger, Level::Info, "epipe"); // dropped
        emit(&logger, Level::Info, "eintr"); // retried, then whole
        emit(&logger, Level::Info, "partial"); // 5 bytes, then dropped
        emit(&logger, Level::Info, "next"); // starts with a newline
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 7);
        assert_eq!(calls[2], calls[3], "EINTR retries the same bytes");
        assert_eq!(
            calls[5],
            calls[4][5..],
            "the rest of the partly written line"
        );
        assert_eq!(calls[6][0], b'\n');
        assert!(calls[6].ends_with(b"msg=next\n"));
        drop(calls);
        logger.flush();
    }

    #[test]
    fn install_once() {
        let mem = Memory::default();
        install(Logger::new(Box::new(mem.clone()), false, vec![])).unwrap();
        assert!(install(Logger::new(Box::new(io::sink()), false, vec![])).is_err());
        log::info!(target: "install_once_test", "global {}", 42);
        assert!(log::log_enabled!(Level::Info));
        assert!(!log::log_enabled!(Level::Debug));
        assert!(mem.text().contains("msg=\"global 42\""), "{}", mem.text());
    }

    #[test]
    fn open_sink_falls_back_to_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log");
        // No FIFO at all: stderr.
        assert!(open_fifo_sink(tmp.path()).is_none());
        // A FIFO without a reader (containerd is not there): stderr.
        fifo::create(&path, 0o600, None).unwrap();
        assert!(open_fifo_sink(tmp.path()).is_none());
        // Not a FIFO: stderr, and the file is left alone.
        let plain = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join("log"), "x").unwrap();
        assert!(open_fifo_sink(plain.path()).is_none());
        assert_eq!(std::fs::read(plain.path().join("log")).unwrap(), b"x");
        // With a reader: the FIFO, and what is written reaches it.
        let mut reader = fifo::open_read(&path, true).unwrap();
        let mut w = open_sink(tmp.path());
        w.write_all(b"line\n").unwrap();
        let mut buf = [0u8; 16];
        let n = reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"line\n");
    }

    #[test]
    fn real_fifo_never_blocks_and_survives_reader_loss() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log");
        fifo::create(&path, 0o600, None).unwrap();
        let mut reader = fifo::open_read(&path, true).unwrap();
        let logger = Logger::new(open_sink(tmp.path()), false, fields());

        emit(&logger, Level::Info, "hello");
        let mut buf = vec![0u8; 1 << 16];
        let n = reader.read(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(first.starts_with("time=\""), "{first}");
        assert!(first.ends_with(
            " level=info msg=hello id=abc namespace=default runtime=io.containerd.tether.v2\n"
        ));

        // Fill the pipe without reading: every call returns at once, lines longer than
        // PIPE_BUF get cut, and what was written reads back as whole lines.
        let long = "x".repeat(10_000);
        for _ in 0..64 {
            emit(&logger, Level::Info, &long);
        }
        let mut got = Vec::new();
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        emit(&logger, Level::Info, "after");
        let n = reader.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8(got).unwrap();
        assert!(
            text.ends_with("msg=after id=abc namespace=default runtime=io.containerd.tether.v2\n")
        );
        let (mut whole, mut cut) = (0, 0);
        for line in text.lines() {
            if line.starts_with("time=") && line.ends_with("runtime=io.containerd.tether.v2") {
                whole += 1;
            } else {
                // Only the remains of the one cut line, ended by the resync newline.
                assert!(!line.contains("msg=after"), "{line}");
                cut += 1;
            }
        }
        assert!(whole >= 2, "{text}");
        assert!(cut <= 1, "{text}");
        assert!(text.contains("msg=after"), "{text}");

        // The reader goes away (containerd died): EPIPE, silently dropped, no SIGPIPE death.
        drop(reader);
        emit(&logger, Level::Info, "nobody listens");
        emit(&logger, Level::Error, "still nobody");
        logger.flush();
    }
}
