//! Reading small files whose content may be garbage of any size.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads at most `limit + 1` bytes of `path`, so that an over-long file is detectable
/// (the result is then longer than `limit`) without reading it whole.
/// `Ok(None)` if the file does not exist; `Error::Io` ("read") on any other failure.
pub fn read(path: &Path, limit: usize) -> Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(read(&path, 4).unwrap(), None);
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read(&path, 4).unwrap().unwrap(), b"01234");
        assert_eq!(read(&path, 100).unwrap().unwrap(), b"0123456789");
        assert!(matches!(
            read(dir.path(), 4),
            Err(Error::Io { op: "read", .. })
        ));
    }
}
