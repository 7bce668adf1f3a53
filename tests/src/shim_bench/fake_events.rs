//! A stand-in for containerd's ttrpc events service (`TTRPC_ADDRESS`): it accepts any
//! number of connections and answers every request with an empty, successful response, as
//! containerd answers `Forward` and `Publish`. It counts the requests, so a bench can say
//! how many events each shim sent.

use super::framing::{empty_response, Header, HEADER, MAX_FRAME, REQUEST};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The listening service; its threads live as long as the process (a bench binary).
#[derive(Debug)]
pub struct FakeEvents {
    path: PathBuf,
    requests: Arc<AtomicU64>,
}

impl FakeEvents {
    /// Listens on `path` and serves in background threads (one per connection).
    pub fn serve(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        std::thread::Builder::new()
            .name("fake-events".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let counter = counter.clone();
                    let _ = std::thread::Builder::new()
                        .name("fake-events-conn".into())
                        .spawn(move || answer_all(conn, &counter));
                }
            })?;
        Ok(FakeEvents {
            path: path.to_path_buf(),
            requests,
        })
    }

    /// The address to hand a shim as `TTRPC_ADDRESS`.
    pub fn address(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Answers each request frame of `conn` with an empty response until it closes.
fn answer_all(mut conn: UnixStream, counter: &AtomicU64) {
    let mut header = [0u8; HEADER];
    let mut body = Vec::new();
    while conn.read_exact(&mut header).is_ok() {
        // A frame longer than ttrpc's largest ends the connection.
        let h = Header::parse(&header);
        if h.len > MAX_FRAME {
            return;
        }
        body.resize(h.len, 0);
        if conn.read_exact(&mut body).is_err() {
            return;
        }
        if h.kind != REQUEST {
            continue;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        if conn.write_all(&empty_response(h.stream)).is_err() {
            return;
        }
    }
}
