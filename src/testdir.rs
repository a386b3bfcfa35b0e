//! A test's own directory under the system temp directory, removed when the test ends well.
//!
//! Unit tests and the integration suite make their files in one. The suite runs again and
//! again on the same machines (CI, each developer's), so a passed test leaves nothing behind;
//! a failed one keeps its files for a look and says where they are. Not for the collector
//! itself, which writes only where its configuration says.

use std::path::{Path, PathBuf};

/// A fresh empty directory, `xe-TAG-PID` under the system temp directory.
pub struct TestDir(PathBuf);

impl TestDir {
    /// Made empty (what an earlier run of the same process id left there is removed first).
    pub fn new(tag: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("xe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the failed test's files are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Checks that the processes whose ids a test's script wrote in `file` (one a line, as
/// `echo $! >> FILE` after starting one in the background) have all ended: gone, or zombies
/// left to a parent that does not reap them (PID 1 of some containers). Asked by id, so that
/// no other process on the machine (a `sleep` of its own) is taken for one of them. A process
/// just sent SIGKILL may run on for a moment (the signal is delivered when it is next
/// scheduled, which takes a while on a loaded machine): each is given up to 2 s to end.
pub fn processes_ended(file: &Path) -> Result<(), String> {
    let ids = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for id in ids.split_whitespace() {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{id}/stat")).ok();
            // The state follows the command's name in parentheses (which may hold spaces).
            let state = stat.as_deref().and_then(|s| s.rsplit(") ").next()).and_then(|rest| rest.chars().next());
            match state {
                None | Some('Z') => break,
                _ if std::time::Instant::now() >= deadline => return Err(format!("process {id} still runs (state {state:?})")),
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestDir;

    #[test]
    fn removed_when_the_test_ends_well_kept_when_it_fails() {
        let kept = std::thread::spawn(|| {
            let d = TestDir::new("testdir-failed");
            std::fs::write(d.join("f"), "x").unwrap();
            let path = d.to_path_buf();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _d = d;
                panic!("a failing test");
            }))
            .unwrap_err();
            path
        })
        .join()
        .unwrap();
        assert!(kept.join("f").exists());
        std::fs::remove_dir_all(&kept).unwrap();
        let d = TestDir::new("testdir-passed");
        std::fs::write(d.join("f"), "x").unwrap();
        let path = d.to_path_buf();
        drop(d);
        assert!(!path.exists());
    }
}
