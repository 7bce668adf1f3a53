//! A reader slower than the writer, at a set rate: for the tests of what waits for a
//! reader that is taking output (a delete while the spool drains).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Reads `src` to EOF (or a read error) on a thread of its own, at most `bytes_per_sec`,
/// and returns once it has read something (or ended). The handle gives everything read;
/// the counter says how much so far.
pub fn start(
    src: impl Read + Send + 'static,
    bytes_per_sec: u64,
) -> (JoinHandle<Vec<u8>>, Arc<AtomicU64>) {
    let got = Arc::new(AtomicU64::new(0));
    let (first, started) = std::sync::mpsc::channel();
    let counter = got.clone();
    let handle = thread::spawn(move || {
        let mut src = src;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let began = Instant::now();
        loop {
            let n = src.read(&mut buf).unwrap_or(0);
            if n == 0 {
                let _ = first.send(());
                return out;
            }
            out.extend_from_slice(&buf[..n]);
            counter.store(out.len() as u64, Ordering::SeqCst);
            let _ = first.send(());
            let due = Duration::from_secs_f64(out.len() as f64 / bytes_per_sec as f64);
            if let Some(ahead) = due.checked_sub(began.elapsed()) {
                thread::sleep(ahead);
            }
        }
    });
    let _ = started.recv_timeout(Duration::from_secs(30));
    (handle, got)
}
