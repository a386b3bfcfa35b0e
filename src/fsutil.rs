//! File helpers shared by the stages that write files other programs read.

use std::io::Write;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_reports_missing_directory() {
        let d = std::env::temp_dir().join(format!("xe-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("a.sql");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temporary file left");
        assert!(write_atomically(&d.join("missing/a.sql"), b"x").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
