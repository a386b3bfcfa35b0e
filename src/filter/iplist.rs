//! IP lists: files in `iplists-dir`, one network per line (IPv4 and IPv6 mixed, a bare address
//! is a host), `#` comments and blank lines allowed; the file name is the list name. Each list
//! becomes two range sets (IPv4, IPv6) usable by `net`/`host` and `net6`/`host6` filters.

use super::ranges::{prefix_range, RangeSet};
use crate::config::ConfigError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct IpList {
    pub v4: RangeSet,
    pub v6: RangeSet,
}

/// All lists by name.
pub type IpLists = HashMap<String, Arc<IpList>>;

/// Parses `addr` or `addr/len` into (is_v6, first, last).
pub fn parse_network(text: &str) -> Option<(bool, u128, u128)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (text, None),
    };
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            (len <= 32).then(|| {
                let (lo, hi) = prefix_range(u32::from(a) as u128, len, 32);
                (false, lo, hi)
            })
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            (len <= 128).then(|| {
                let (lo, hi) = prefix_range(u128::from(a), len, 128);
                (true, lo, hi)
            })
        }
    }
}

/// Reads one list file.
pub fn load_file(path: &Path) -> Result<IpList, ConfigError> {
    let err = |line: u32, col: u32, msg: String| ConfigError {
        file: path.to_path_buf(),
        line,
        col,
        key: String::new(),
        msg,
    };
    let text = crate::fsutil::read_input_text(path).map_err(|e| err(0, 0, format!("cannot read: {e}")))?;
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let col = raw.find(line).unwrap_or(0) as u32 + 1;
        match parse_network(line) {
            Some((false, lo, hi)) => v4.push((lo, hi)),
            Some((true, lo, hi)) => v6.push((lo, hi)),
            None => return Err(err(i as u32 + 1, col, format!("\"{line}\" is not a network or address"))),
        }
    }
    Ok(IpList { v4: RangeSet::new(v4), v6: RangeSet::new(v6) })
}

/// Reads every file of the directory (a missing directory means no lists).
pub fn load_dir(dir: &Path) -> Result<IpLists, Vec<ConfigError>> {
    let mut lists = IpLists::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(lists) };
    let mut errors = Vec::new();
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| !p.is_dir()).collect();
    paths.sort();
    for p in paths {
        let Some(name) = p.file_name().and_then(|n| n.to_str()).filter(|n| !n.starts_with('.')) else { continue };
        match load_file(&p) {
            Ok(l) => {
                lists.insert(name.to_string(), Arc::new(l));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(lists)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    #[test]
    fn mixed_list_with_comments_and_errors() {
        let d = TestDir::new("iplist");
        std::fs::write(d.join("bogon"), "# comment\n\n10.0.0.0/8\n 192.0.2.1 # host\n::1/128\nfc00::/7\n").unwrap();
        let l = load_file(&d.join("bogon")).unwrap();
        assert!(l.v4.contains(0x0A010203));
        assert!(l.v4.contains(0xC0000201));
        assert!(!l.v4.contains(0xC0000202));
        assert!(l.v6.contains(1));
        assert!(l.v6.contains(u128::from("fd00::5".parse::<std::net::Ipv6Addr>().unwrap())));
        std::fs::write(d.join("bad"), "10.0.0.0/8\n  10.0.0.0/33\n").unwrap();
        let e = load_file(&d.join("bad")).unwrap_err();
        assert_eq!((e.line, e.col), (2, 3));
        assert_eq!(load_dir(&d).unwrap_err().len(), 1);
        // A list that is not a regular file is an error naming it, not a list left out.
        assert!(std::process::Command::new("mkfifo").arg(d.join("fifo")).status().unwrap().success());
        let errors = load_dir(&d).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!((errors[1].file.clone(), errors[1].msg.as_str()), (d.join("fifo"), "cannot read: a FIFO, not a regular file"));
    }
}
