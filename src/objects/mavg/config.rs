//! A `mavg` element of `mo.conf` and its limits files, read into a [`Mavg`]: field lists,
//! windows, memory bounds, overlimit/underlimit elements with their scripts and extended
//! windows, and per-key thresholds. Every error names the file, line, column and key.

use super::*;
use crate::config::keys;

/// `back2norm-time` when a limit does not give it (or gives 0): the original's 30 s, so an
/// alert does not end (and start again) with every dip of a rate around its threshold.
pub const DEFAULT_BACK2NORM_S: u64 = 30;

/// A key value as text.
pub fn format_value(id: FieldId, v: u128) -> String {
    match id.def().kind {
        Kind::Ipv4 => Ipv4Addr::from(v as u32).to_string(),
        Kind::Ipv6 => Ipv6Addr::from(v).to_string(),
        Kind::Addr => addr_from_u128(v).to_string(),
        Kind::Mac => {
            let b = (v as u64).to_be_bytes();
            format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[2], b[3], b[4], b[5], b[6], b[7])
        }
        Kind::Uint | Kind::Counter => v.to_string(),
    }
}

/// Parses a key value as written in a limits file (and by [`format_value`]).
pub(super) fn parse_value(id: FieldId, text: &str) -> Option<u128> {
    let text = text.trim();
    match id.def().kind {
        Kind::Ipv4 => text.parse::<Ipv4Addr>().ok().map(|a| u32::from(a) as u128),
        Kind::Ipv6 => text.parse::<Ipv6Addr>().ok().map(u128::from),
        Kind::Addr => text.parse().ok().map(crate::flow::addr_to_u128),
        Kind::Mac => crate::flow::parse_mac(text),
        Kind::Uint | Kind::Counter => text.parse().ok(),
    }
}

/// Reads a limits file: key fields then thresholds, comma-separated, `#` comments.
pub fn load_limits(path: &Path, keys: &[FieldId], layout: &KeyLayout, n_aggs: usize) -> Result<HashMap<PackedKey, Vec<f64>, WordsBuild>, ConfigError> {
    let err = |line: usize, msg: String| ConfigError { file: path.to_path_buf(), line: line as u32, col: 1, key: String::new(), msg };
    let text = crate::fsutil::read_input_text(path).map_err(|e| err(0, format!("cannot read limits file: {e}")))?;
    let mut map = HashMap::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(',').map(str::trim).collect();
        if parts.len() != keys.len() + n_aggs {
            return Err(err(i + 1, format!("expected {} key values and {} thresholds, found {} values", keys.len(), n_aggs, parts.len())));
        }
        let mut vals = Vec::new();
        for (k, p) in keys.iter().zip(&parts) {
            vals.push(Some(parse_value(*k, p).ok_or_else(|| err(i + 1, format!("\"{p}\" is not a valid {}", k.def().names.first().unwrap_or(&"value"))))?));
        }
        let mut thr = Vec::new();
        for p in &parts[keys.len()..] {
            // NaN would never compare (the limit silently off for the key), a negative one
            // always: a generated file's mistake. "inf" is a key's overlimit never crossed.
            match p.parse::<f64>() {
                Ok(t) if t >= 0.0 => thr.push(t),
                _ => return Err(err(i + 1, format!("threshold \"{p}\" is not a number of 0 or more"))),
            }
        }
        map.insert(PackedKey::new(layout, &layout.pack_values(&vals)), thr);
    }
    Ok(map)
}

/// Validates one `mavg` element of an object.
pub fn parse(file: &Path, object: &str, dir: &Path, item: &Node, i: usize) -> Result<Mavg, ConfigError> {
    let k = |s: &str| format!("mavg[{i}].{s}");
    item.expect_object(file, &format!("mavg[{i}]"))?;
    crate::config::warn_of_keys(item, file, &format!("mavg[{i}]"), keys::MAVG, &[]);
    let name_node = item.get("name").ok_or_else(|| item.error(file, &k("name"), "missing name"))?;
    let name = name_node.as_str(file, &k("name"))?.to_string();
    let fields_node = item.get("fields").ok_or_else(|| item.error(file, &k("fields"), "missing fields"))?;
    let (keys, aggs) = parse_fields(file, fields_node, i)?;
    if aggs.is_empty() {
        return Err(fields_node.error(file, &k("fields"), "needs at least one of octets, packets, bits"));
    }
    if KeyLayout::new(&keys).words > MAVG_WORDS {
        return Err(fields_node.error(file, &k("fields"), "too many key fields for a moving average (at most 5 words: a number or two IPv4 addresses take one, an IPv6 address two)"));
    }
    let time = crate::config::seconds_or_default_for_zero(item, file, &k("time"), "time", 5)?;
    let mem_m = item.mib_or("mem-m", file, &k("mem-m"), 256)?;
    let dump = Some(item.seconds_or("dump", file, &k("dump"), 0, 0)?).filter(|&d| d > 0);
    let layout = KeyLayout::new(&keys);
    let owner = format!("{}-{name}-", crate::objects::flat_name(object));
    let limits = parse_limits(file, dir, item, i, aggs.len(), &owner)?;
    if limits.len() > MAX_LIMITS {
        return Err(item.error(file, &format!("mavg[{i}]"), format!("at most {MAX_LIMITS} overlimit/underlimit elements")));
    }
    let mut per_limit = Vec::new();
    for l in &limits {
        per_limit.push(match &l.limits_file {
            Some(p) => load_limits(p, &keys, &layout, aggs.len())?,
            None => HashMap::default(),
        });
    }
    let defaults = limits.iter().map(|l| l.default.clone()).collect();
    let thresholds = Thresholds { defaults, per_limit };
    let compiled = Arc::new(compile_thresholds(&limits, &thresholds, time as f64));
    let words = layout.words;
    let shape = vec![shape_of(&name, &keys, &aggs, time, &limits)];
    let group = Arc::new(Group::new(words, aggs.len(), vec![compiled], shape, shard_count(), super::rowtable::Nest::default()));
    Ok(Mavg {
        object: object.to_string(),
        name,
        dir: dir.to_path_buf(),
        keys,
        layout,
        aggs,
        time_ms: time * 1000,
        per_ms: 1.0 / (time * 1000) as f64,
        over_mask: limits.iter().enumerate().filter(|(_, l)| l.kind == LimitKind::Over).fold(0, |m, (i, _)| m | 1 << i),
        mem_bytes: (mem_m as usize).saturating_mul(1 << 20),
        dump,
        limits,
        thresholds: RwLock::new(thresholds),
        next_dump_ms: AtomicU64::new(0),
        thresholds_changed: AtomicBool::new(false),
        traffic_since_ms: AtomicU64::new(0),
        listed_pending: AtomicBool::new(true),
        last_drop_log_ms: AtomicU64::new(0),
        last_full_log_ms: AtomicU64::new(0),
        keys_dropped_told: AtomicU64::new(0),
        group,
        member: 0,
        stats: MavgStats::default(),
        states: StateCount::default(),
        events: Mutex::new(None),
        held: Mutex::new(VecDeque::new()),
    })
}

/// The `fields` of `mavg[i]`: key fields, then the averaged ones (octets, packets, bits).
fn parse_fields(file: &Path, fields_node: &Node, i: usize) -> Result<(Vec<FieldId>, Vec<Agg>), ConfigError> {
    let (mut keys, mut aggs) = (Vec::new(), Vec::new());
    let items = fields_node.as_array(file, &format!("mavg[{i}].fields"))?;
    for (j, f) in items.iter().enumerate() {
        let fk = format!("mavg[{i}].fields[{j}]");
        let text = f.as_str(file, &fk)?.trim().to_ascii_lowercase();
        let given_before = |g: &Node| g.as_str(file, &fk).is_ok_and(|t| t.trim().eq_ignore_ascii_case(&text));
        if items[..j].iter().any(given_before) {
            // Each field is a slot's column: at most the three aggregable ones, and a key once.
            return Err(f.error(file, &fk, format!("\"{text}\" given twice")));
        }
        match FieldRef::parse(&text).map_err(|why| f.error(file, &fk, why))? {
            FieldRef::Agg(a) => aggs.push(a),
            FieldRef::Key(id) => keys.push(id),
        }
    }
    Ok((keys, aggs))
}

/// The `overlimit` and `underlimit` elements of `mavg[i]`, overlimits first; names unique.
/// `owner`: `<object>-<mavg>-`, which starts their notification files' names.
fn parse_limits(file: &Path, dir: &Path, item: &Node, i: usize, n_aggs: usize, owner: &str) -> Result<Vec<LimitSpec>, ConfigError> {
    let mut limits = Vec::new();
    for (kind, key) in [(LimitKind::Over, "overlimit"), (LimitKind::Under, "underlimit")] {
        let Some(list) = item.get(key) else { continue };
        for (j, l) in list.as_array(file, &format!("mavg[{i}].{key}"))?.iter().enumerate() {
            let at = format!("mavg[{i}].{key}[{j}]");
            let limit = parse_limit(file, dir, l, (&at, j), kind, n_aggs, owner)?;
            // Overlimits and underlimits share the notification files' names.
            if limits.iter().any(|o: &LimitSpec| o.name == limit.name) {
                return Err(l.error(file, &format!("{at}.name"), format!("limit \"{}\" defined twice in this moving average", limit.name)));
            }
            limits.push(limit);
        }
    }
    Ok(limits)
}

/// What a moving average is, for a reload to tell whether a table can be taken over.
fn shape_of(name: &str, keys: &[FieldId], aggs: &[Agg], time: u64, limits: &[LimitSpec]) -> String {
    let limits: Vec<_> = limits.iter().map(|l| (l.name.as_str(), l.kind)).collect();
    format!("{name} {keys:?} {aggs:?} {time} {limits:?}")
}

/// One limit element, at key path `k`, the `place`-th of its list.
fn parse_limit(file: &Path, dir: &Path, l: &Node, (k, place): (&str, usize), kind: LimitKind, n_aggs: usize, owner: &str) -> Result<LimitSpec, ConfigError> {
    let sub = |s: &str| format!("{k}.{s}");
    l.expect_object(file, k)?;
    crate::config::warn_of_keys(l, file, k, keys::LIMIT, &[]);
    let name = match l.get("name") {
        Some(n) => n.as_str(file, &sub("name"))?.to_string(),
        None => {
            // As the original does (it names a limit without a name by its place).
            crate::log::warn(&l.error(file, &sub("name"), format!("no name: named \"{place}\" by its place in the list, as the original does")).to_string());
            place.to_string()
        }
    };
    let mut default = vec![f64::NAN; n_aggs];
    if let Some(d) = l.get("default") {
        for (i, v) in d.as_array(file, &sub("default"))?.iter().enumerate().take(n_aggs) {
            default[i] = v.as_u64(file, &sub("default"))? as f64;
        }
    }
    let path = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        match l.get(key) {
            Some(n) => {
                let s = n.as_str(file, &sub(key))?;
                Ok((!s.trim().is_empty()).then(|| crate::config::resolve(dir, s)))
            }
            None => Ok(None),
        }
    };
    // A script that cannot run is found now, not at the first alert (a warning: it may be
    // installed after the configuration).
    let script = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        let p = path(key)?;
        if let (Some(p), Some(n)) = (&p, l.get(key)) {
            if !(p.is_file() && crate::fsutil::may_access(p, libc::X_OK)) {
                let why = if p.exists() { "is not an executable file" } else { "does not exist" };
                crate::log::warn(&n.error(file, &sub(key), format!("{} {why}: alerts cannot run it", p.display())).to_string());
            }
        }
        Ok(p)
    };
    let text = |key: &str| -> Result<Option<String>, ConfigError> {
        l.get(key).map(|n| n.as_str(file, &sub(key)).map(String::from)).transpose()
    };
    let mut ext_names = Vec::new();
    if let Some(e) = l.get("ext") {
        for (j, n) in e.as_array(file, &sub("ext"))?.iter().enumerate() {
            let key = sub(&format!("ext[{j}]"));
            let s = n.as_str(file, &key)?;
            let (object, window) = s.rsplit_once('/').unwrap_or(("", s));
            let (object, window) = (object.to_string(), window.to_string());
            ext_names.push(ExtName { object, window, at: n.error(file, &key, "") });
        }
    }
    Ok(LimitSpec {
        prefix: format!("{owner}{name}-"),
        name,
        kind,
        default,
        limits_file: path("limits")?,
        back2norm_ms: crate::config::seconds_or_default_for_zero(l, file, &sub("back2norm-time"), "back2norm-time", DEFAULT_BACK2NORM_S)? * 1000,
        action_script: script("action-script")?,
        back2norm_script: script("back2norm-script")?,
        ext_names,
        ext: Vec::new(),
        action_lua: text("action-lua")?,
        back2norm_lua: text("back2norm-lua")?,
    })
}
