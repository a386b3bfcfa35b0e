//! The directories the collector writes to (`export-dir`, `notifications-dir`, the templates
//! file's and a dump-flows file's directory), checked and made before the first flow.
//!
//! Without this, a directory that does not exist showed only as an error per export file
//! (retried while running, lost at the end of a replay) while `--check-config` said the
//! configuration was fine. Now a directory the configuration names is made at start when
//! missing (and logged), and one that cannot be made or written to stops the start with an
//! error naming the key, like any other configuration error; `--check-config` says the same
//! without making anything. A default directory (its key absent) is the installation's to
//! make: when it is missing or not writable, that is only a warning.

use super::ConfigError;
use std::path::{Path, PathBuf};

/// A directory the collector writes to, with the key that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputDir {
    /// Key path in xenoeye.conf (`export-dir`, `templates.db`...).
    pub key: &'static str,
    pub dir: PathBuf,
    /// Line and column of the key's value; `None` when the key is absent (its default).
    pub at: Option<(u32, u32)>,
}

/// What the check found: directories made (or, when checking only, to be made), errors (the
/// start stops) and warnings (about default directories).
#[derive(Debug, Default)]
pub struct Prepared {
    pub made: Vec<PathBuf>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

/// Checks the output directories of the configuration `file`; with `make`, missing ones that
/// the file names are made (with their parents). Without `make` (`--check-config`), nothing is
/// changed: a missing directory is listed in `made` when its nearest existing parent is
/// writable.
pub fn prepare(file: &Path, dirs: &[OutputDir], make: bool) -> Prepared {
    let mut out = Prepared::default();
    for d in dirs {
        if d.at.is_none() {
            let problem = match usable(&d.dir) {
                Ok(true) => continue,
                Ok(false) => format!("directory {} does not exist", d.dir.display()),
                Err(msg) => msg,
            };
            out.warnings.push(format!("{problem} (\"{}\" is not set: the default)", d.key));
            continue;
        }
        match check(&d.dir, make) {
            Ok(Some(made)) => out.made.push(made),
            Ok(None) => {}
            Err(msg) => out.errors.push(error(file, d, msg)),
        }
    }
    out.made.dedup();
    out
}

/// Ok(true): there and writable; Ok(false): not there; Err: there but not usable.
fn usable(dir: &Path) -> Result<bool, String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(_) if !writable(dir) => Err(format!("directory {} is not writable", dir.display())),
        Ok(_) => Ok(true),
        Err(_) => Ok(false),
    }
}

/// Ok(Some(dir)): made (or to be made); Ok(None): there and writable.
fn check(dir: &Path, make: bool) -> Result<Option<PathBuf>, String> {
    match usable(dir)? {
        true => Ok(None),
        false if make => match std::fs::create_dir_all(dir) {
            Ok(()) => Ok(Some(dir.to_path_buf())),
            Err(e) => Err(format!("directory {} does not exist and cannot be made: {e}", dir.display())),
        },
        false => match dir.ancestors().skip(1).find(|a| a.exists()) {
            Some(a) if a.is_dir() && writable(a) => Ok(Some(dir.to_path_buf())),
            Some(a) => Err(format!("directory {} does not exist and cannot be made ({} is not a writable directory)", dir.display(), a.display())),
            None => Err(format!("directory {} does not exist", dir.display())),
        },
    }
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    crate::fsutil::may_access(dir, libc::W_OK | libc::X_OK)
}

fn error(file: &Path, d: &OutputDir, msg: String) -> ConfigError {
    let (line, col) = d.at.unwrap_or((1, 1));
    ConfigError { file: file.to_path_buf(), line, col, key: d.key.to_string(), msg }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    fn tmpdir(tag: &str) -> TestDir {
        TestDir::new(&format!("dirs-{tag}"))
    }

    fn out(key: &'static str, dir: PathBuf, at: Option<(u32, u32)>) -> OutputDir {
        OutputDir { key, dir, at }
    }

    #[test]
    fn missing_directories_are_made_only_when_asked() {
        let d = tmpdir("make");
        let dirs = [out("export-dir", d.join("a/exp"), Some((3, 17))), out("notifications-dir", d.join("n"), Some((4, 1))), out("templates.db", d.to_path_buf(), Some((5, 1)))];
        let checked = prepare(&d.join("x.conf"), &dirs, false);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        assert_eq!(checked.made, vec![d.join("a/exp"), d.join("n")]);
        assert!(!d.join("a").exists() && !d.join("n").exists(), "a check makes nothing");
        let made = prepare(&d.join("x.conf"), &dirs, true);
        assert!(made.errors.is_empty(), "{:?}", made.errors);
        assert_eq!(made.made, vec![d.join("a/exp"), d.join("n")]);
        assert!(d.join("a/exp").is_dir() && d.join("n").is_dir());
        let again = prepare(&d.join("x.conf"), &dirs, true);
        assert!(again.made.is_empty() && again.errors.is_empty() && again.warnings.is_empty());
    }

    #[test]
    fn a_file_in_the_way_is_an_error_naming_the_key() {
        let d = tmpdir("file");
        std::fs::write(d.join("f"), "x").unwrap();
        let conf = d.join("x.conf");
        let dirs = [out("export-dir", d.join("f"), Some((3, 17))), out("notifications-dir", d.join("f/n"), Some((4, 2)))];
        for make in [false, true] {
            let p = prepare(&conf, &dirs, make);
            let text: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
            assert_eq!(text.len(), 2, "{text:?}");
            assert_eq!(text[0], format!("{}:3:17: 'export-dir': {} is not a directory", conf.display(), d.join("f").display()));
            let n = d.join("f/n");
            let why = if make {
                format!("directory {} does not exist and cannot be made: Not a directory (os error 20)", n.display())
            } else {
                format!("directory {} does not exist and cannot be made ({} is not a writable directory)", n.display(), d.join("f").display())
            };
            assert_eq!(text[1], format!("{}:4:2: 'notifications-dir': {why}", conf.display()));
            assert!(p.made.is_empty());
        }
    }

    #[test]
    fn default_directories_are_not_made_and_only_warned_about() {
        let d = tmpdir("default");
        std::fs::write(d.join("f"), "x").unwrap();
        let dirs = [out("export-dir", d.join("exp"), None), out("notifications-dir", d.join("f"), None), out("templates.db", d.to_path_buf(), None)];
        let p = prepare(&d.join("x.conf"), &dirs, true);
        assert!(p.errors.is_empty() && p.made.is_empty(), "{p:?}");
        assert_eq!(
            p.warnings,
            [
                format!("directory {} does not exist (\"export-dir\" is not set: the default)", d.join("exp").display()),
                format!("{} is not a directory (\"notifications-dir\" is not set: the default)", d.join("f").display()),
            ]
        );
        assert!(!d.join("exp").exists());
    }
}
