//! Template cache per worker, and the template store that persists templates across restarts.
//!
//! Templates are keyed by (exporter address, v9 source id / IPFIX observation domain, template
//! id), as RFC 7011 §8 requires. Each worker owns its cache (no lock while decoding). When a
//! template is new or changed, the worker also hands its raw bytes to the shared
//! [`TemplateStore`] — a rare event, since exporters resend unchanged templates and those are
//! recognised by comparing bytes. The store writes `templates.db` atomically, and at start every
//! worker's cache is filled from it, so data decodes at once after a restart.

use super::template::{parse_template_record, Template, Wire};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Key of a template: exporter, observation domain (source id) and template id.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateKey {
    pub exporter: IpAddr,
    pub domain: u32,
    pub id: u16,
}

/// Raw template as received: enough to parse it again after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTemplate {
    pub wire: Wire,
    pub options: bool,
    pub bytes: Vec<u8>,
}

/// Bound on templates one worker keeps (a hostile exporter cannot grow memory without bound).
pub const MAX_TEMPLATES: usize = 65536;

/// A worker's templates.
#[derive(Default)]
pub struct TemplateCache {
    map: foldhash::HashMap<TemplateKey, (Template, RawTemplate)>,
}

/// What inserting a template did.
#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    Unchanged,
    New,
    Changed,
    /// The cache is full; the template was not kept.
    Full,
}

impl TemplateCache {
    #[inline]
    pub fn get(&self, key: &TemplateKey) -> Option<&Template> {
        self.map.get(key).map(|(t, _)| t)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inserts a parsed template unless the same bytes are already cached.
    pub fn insert(&mut self, key: TemplateKey, tpl: Template, raw: RawTemplate) -> Insert {
        let full = self.map.len() >= MAX_TEMPLATES;
        match self.map.get_mut(&key) {
            Some(entry) if entry.1 == raw => Insert::Unchanged,
            Some(entry) => {
                *entry = (tpl, raw);
                Insert::Changed
            }
            None if full => Insert::Full,
            None => {
                self.map.insert(key, (tpl, raw));
                Insert::New
            }
        }
    }

    /// True when these exact bytes are already cached under `key` (the common resend case).
    #[inline]
    pub fn is_same(&self, key: &TemplateKey, bytes: &[u8]) -> bool {
        self.map.get(key).is_some_and(|(_, raw)| raw.bytes == bytes)
    }

    pub fn remove(&mut self, key: &TemplateKey) -> bool {
        self.map.remove(key).is_some()
    }

    /// Withdraws every template of an exporter's domain (data or options ones); returns the
    /// removed keys.
    pub fn remove_all(&mut self, exporter: IpAddr, domain: u32, options: bool) -> Vec<TemplateKey> {
        let keys: Vec<TemplateKey> = self
            .map
            .iter()
            .filter(|(k, (_, raw))| k.exporter == exporter && k.domain == domain && raw.options == options)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.map.remove(k);
        }
        keys
    }

    /// Fills the cache from raw templates (the store's content at start).
    pub fn load(&mut self, raws: &[(TemplateKey, RawTemplate)]) {
        for (key, raw) in raws {
            if let Some(Ok(tpl)) = parse_template_record(raw.wire, raw.options, &raw.bytes).and_then(|r| r.template) {
                self.insert(*key, tpl, raw.clone());
            }
        }
    }
}

/// Shared, persisted copy of every worker's templates.
pub struct TemplateStore {
    path: Option<PathBuf>,
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    map: HashMap<TemplateKey, RawTemplate>,
    dirty: bool,
}

const MAGIC: &[u8; 8] = b"XETPL001";

impl TemplateStore {
    /// A store backed by `path` (None: memory only). Reads the file if it exists; a damaged file
    /// is reported and ignored (templates then arrive again from the exporters).
    pub fn open(path: Option<&Path>) -> (Self, Option<String>) {
        let mut warning = None;
        let mut map = HashMap::new();
        if let Some(p) = path {
            match crate::fsutil::read_input(p) {
                Ok(bytes) => match decode_file(&bytes) {
                    Some(m) => map = m,
                    None => warning = Some(format!("{}: not a template file or damaged; ignored", p.display())),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warning = Some(format!("{}: {e}", p.display())),
            }
        }
        let store = TemplateStore {
            path: path.map(Path::to_path_buf),
            inner: Mutex::new(StoreInner { map, dirty: false }),
        };
        (store, warning)
    }

    /// Every stored template, for filling a worker's cache.
    pub fn snapshot(&self) -> Vec<(TemplateKey, RawTemplate)> {
        let inner = self.inner.lock();
        let mut v: Vec<_> = inner.map.iter().map(|(k, r)| (*k, r.clone())).collect();
        v.sort_by_key(|a| a.0);
        v
    }

    pub fn put(&self, key: TemplateKey, raw: RawTemplate) {
        let mut inner = self.inner.lock();
        if inner.map.get(&key) != Some(&raw) && (inner.map.contains_key(&key) || inner.map.len() < MAX_TEMPLATES) {
            inner.map.insert(key, raw);
            inner.dirty = true;
        }
    }

    pub fn remove(&self, key: &TemplateKey) {
        let mut inner = self.inner.lock();
        if inner.map.remove(key).is_some() {
            inner.dirty = true;
        }
    }

    /// Writes the file if anything changed since the last save (temp file, fsync, rename).
    pub fn save_if_dirty(&self) -> std::io::Result<bool> {
        let Some(path) = &self.path else { return Ok(false) };
        let bytes = {
            let mut inner = self.inner.lock();
            if !inner.dirty {
                return Ok(false);
            }
            inner.dirty = false;
            encode_file(&inner.map)
        };
        let result = crate::fsutil::write_atomically(path, &bytes);
        if result.is_err() {
            self.inner.lock().dirty = true; // try again next time
        }
        result.map(|_| true)
    }
}

fn encode_file(map: &HashMap<TemplateKey, RawTemplate>) -> Vec<u8> {
    let mut keys: Vec<_> = map.keys().collect();
    keys.sort();
    let mut out = MAGIC.to_vec();
    for k in keys {
        let raw = &map[k];
        match k.exporter {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend(a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend(a.octets());
            }
        }
        out.extend(k.domain.to_be_bytes());
        out.extend(k.id.to_be_bytes());
        out.push(if raw.wire == Wire::V9 { 9 } else { 10 });
        out.push(raw.options as u8);
        out.extend((raw.bytes.len() as u16).to_be_bytes());
        out.extend(&raw.bytes);
    }
    out
}

fn decode_file(b: &[u8]) -> Option<HashMap<TemplateKey, RawTemplate>> {
    let mut rest = b.strip_prefix(MAGIC.as_slice())?;
    let mut map = HashMap::new();
    let take = |n: usize, rest: &mut &[u8]| -> Option<Vec<u8>> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head.to_vec())
    };
    while !rest.is_empty() {
        let fam = take(1, &mut rest)?[0];
        let exporter = match fam {
            4 => IpAddr::from(<[u8; 4]>::try_from(take(4, &mut rest)?).ok()?),
            6 => IpAddr::from(<[u8; 16]>::try_from(take(16, &mut rest)?).ok()?),
            _ => return None,
        };
        let domain = u32::from_be_bytes(take(4, &mut rest)?.try_into().ok()?);
        let id = u16::from_be_bytes(take(2, &mut rest)?.try_into().ok()?);
        let hdr = take(4, &mut rest)?;
        let wire = match hdr[0] {
            9 => Wire::V9,
            10 => Wire::Ipfix,
            _ => return None,
        };
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let bytes = take(len, &mut rest)?;
        map.insert(TemplateKey { exporter, domain, id }, RawTemplate { wire, options: hdr[1] != 0, bytes });
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_damage() {
        let mut m = HashMap::new();
        let k = TemplateKey { exporter: "10.0.0.1".parse().unwrap(), domain: 7, id: 256 };
        let k6 = TemplateKey { exporter: "2001:db8::1".parse().unwrap(), domain: 0, id: 300 };
        m.insert(k, RawTemplate { wire: Wire::V9, options: false, bytes: vec![1, 0, 0, 1, 0, 8, 0, 4] });
        m.insert(k6, RawTemplate { wire: Wire::Ipfix, options: true, bytes: vec![1, 44, 0, 1, 0, 1, 0, 8, 0, 4] });
        let enc = encode_file(&m);
        assert_eq!(decode_file(&enc), Some(m));
        assert_eq!(decode_file(&enc[..enc.len() - 1]), None);
        assert_eq!(decode_file(b"garbage"), None);
    }
}
