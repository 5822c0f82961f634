//! Reading files named in the configuration (certificates, CA bundles, password, PIN
//! and token files): only regular files, and at most a bounded number of bytes, so a
//! path that names `/dev/zero`, a FIFO or a huge file fails at once with a message
//! instead of exhausting memory or blocking start-up. Lists and CRLs named inside
//! signed lists have their own, stricter rules (docs/credentials.md §6 rule 11,
//! `trust/fetch.rs`).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Certificates and CA bundles.
pub const MAX_PEM_BYTES: u64 = 256 * 1024;
/// Passwords, PINs and tokens.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Why a configured file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
}

/// The bytes of the regular file `path`, at most `max` of them. Opened with
/// `O_NONBLOCK` so that a FIFO cannot block the open, then checked with `fstat` on the
/// open file (no gap between check and read); symbolic links to regular files are
/// followed, as configuration often uses them.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let shown = || path.display().to_string();
    let io = |source| FileError::Io { path: shown(), source };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(o_nonblock()).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular { path: shown() });
    }
    if meta.len() > max {
        return Err(FileError::TooLarge { path: shown(), max });
    }
    let mut out = Vec::new();
    // The size may change after fstat: read one byte more than allowed to tell.
    file.take(max + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > max {
        return Err(FileError::TooLarge { path: shown(), max });
    }
    Ok(out)
}

/// As [`read_bounded`], as UTF-8 text.
pub fn read_bounded_string(path: &Path, max: u64) -> Result<String, FileError> {
    let bytes = read_bounded(path, max)?;
    String::from_utf8(bytes).map_err(|_| FileError::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })
}

fn o_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cert.pem");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_bounded(&p, 10).unwrap(), b"0123456789");
        assert!(matches!(read_bounded(&p, 9), Err(FileError::TooLarge { max: 9, .. })));
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read_bounded_string(&link, 10).unwrap(), "0123456789");
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert!(read_bounded_string(&p, 10).unwrap_err().to_string().contains("not UTF-8"));
    }

    #[test]
    fn devices_fifos_directories_and_missing_files_are_refused() {
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            assert!(matches!(read_bounded(Path::new(dev), MAX_PEM_BYTES), Err(FileError::NotRegular { .. })), "{dev}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_bounded(dir.path(), 10), Err(FileError::NotRegular { .. })));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // No writer: a blocking open would hang here for ever.
        let started = std::time::Instant::now();
        assert!(matches!(read_bounded(&fifo, 10), Err(FileError::NotRegular { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let err = read_bounded(&dir.path().join("absent"), 10).unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
    }
}
