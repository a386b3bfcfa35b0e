//! File helpers: reading the files an operator hands the collector (configurations, lists,
//! limits, Lua code, the templates file) without hanging or exhausting memory on the wrong
//! kind of file, and writing the files other programs read.

use std::io::{Read, Write};
use std::path::Path;

/// Most bytes of a file read as input: far above any configuration, list or limits file
/// (a full routing table as an IP list is some 20 MB), far below what would hurt the machine.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// Reads a file the collector takes as input, whole. Only regular files: a FIFO without a
/// writer or a device such as /dev/zero would hold the start or a reload for ever, so those
/// are refused (the FIFO is opened without waiting for a writer); so is a file over
/// [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    read_input_bounded(path, MAX_INPUT_BYTES)
}

/// [`read_input`] as UTF-8 text (an error otherwise, as `std::fs::read_to_string` gives).
pub fn read_input_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_input(path)?).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

fn read_input_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = f.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "this"
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("{what}, not a regular file")));
    }
    let too_big = || Err(Error::new(ErrorKind::InvalidData, format!("larger than {} MiB", max >> 20)));
    if meta.len() > max {
        return too_big();
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while read: no more than one byte past the bound is taken.
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return too_big();
    }
    Ok(bytes)
}

/// Whether this process may access `path` in `mode` (`libc::W_OK`, `libc::X_OK`...), as
/// access(2) says.
pub fn may_access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// Writes `bytes` to `path` so that a reader sees either nothing (or the old file) or the whole
/// new file: write a hidden temporary file in the same directory, fsync it, rename it over the
/// target, fsync the directory. A failure removes the temporary file and leaves the target as
/// it was.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; a directory that cannot be opened is not an error.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Rewrites a small file in place (created when missing): the whole text at offset 0 in one
/// write, then the length cut to it, with no fsync and no new file. For notification files,
/// rewritten every few seconds while an alert lasts and worthless after a restart: a temporary
/// file and a rename per write allocate and free an inode each time, which on ext4 held the
/// hook thread to a few thousand writes per second. A reader sees the old or the new text (at
/// worst, for an instant, the new text followed by the old one's tail); never an empty file
/// once it was first written.
pub fn rewrite_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    f.write_all_at(bytes, 0)?;
    f.set_len(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    #[test]
    fn input_is_a_bounded_regular_file() {
        let d = TestDir::new("fsutil-input");
        let p = d.join("list");
        std::fs::write(&p, "10.0.0.0/8\n").unwrap();
        assert_eq!(read_input_text(&p).unwrap(), "10.0.0.0/8\n");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Refused at once, though no writer will ever come.
        let refused = |p: &Path| read_input(p).unwrap_err().to_string();
        assert_eq!(refused(&fifo), "a FIFO, not a regular file");
        assert_eq!(refused(Path::new("/dev/zero")), "a device, not a regular file");
        assert_eq!(refused(&d), "a directory, not a regular file");
        assert_eq!(read_input(&d.join("missing")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        // Over the bound (sparse: nothing is written), and text that is not UTF-8.
        let big = d.join("big");
        std::fs::File::create(&big).unwrap().set_len(MAX_INPUT_BYTES + 1).unwrap();
        assert_eq!(refused(&big), "larger than 256 MiB");
        assert_eq!(read_input_bounded(&p, 10).unwrap_err().kind(), std::io::ErrorKind::InvalidData, "11 bytes over a bound of 10");
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert_eq!(read_input_text(&p).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn replaces_whole_file_and_reports_missing_directory() {
        let d = TestDir::new("fsutil");
        let p = d.join("a.sql");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temporary file left");
        assert!(write_atomically(&d.join("missing/a.sql"), b"x").is_err());
    }

    #[test]
    fn rewrites_in_place_longer_and_shorter() {
        let d = TestDir::new("fsutil-inplace");
        let p = d.join("n");
        rewrite_in_place(&p, b"10.0.0.1 1500 1000\n").unwrap();
        rewrite_in_place(&p, b"10.0.0.1 150000 1000\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"10.0.0.1 150000 1000\n");
        rewrite_in_place(&p, b"10.0.0.1 15 1000\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"10.0.0.1 15 1000\n", "no tail of the longer text");
        assert!(rewrite_in_place(&d.join("missing/n"), b"x").is_err());
    }
}
