//! File helpers shared by the stages that write files other programs read.

use std::io::Write;
use std::path::Path;

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
