//! Configuration: `xenoeye.conf` and `devices.conf`, read exactly as the original collector
//! reads them, validated into typed structs.
//!
//! Raw text is parsed into positioned nodes ([`json`]) and then validated here; every error
//! names the file, line, column and key path. Unknown keys are ignored (reported at debug level)
//! so configs of the original with keys we do not use (`clsf-dir`, `geodb`...) keep working.
//! Relative paths are resolved against the directory of the file that names them.

pub mod dirs;
pub mod json;

use crate::devices::{Device, Devices};
pub use json::ConfigError;
use json::Node;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the configuration lives when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/xenoeye/xenoeye.conf";

/// One `capture` element: one worker (or several with `workers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureSpec {
    Socket {
        /// `None` for `"*"`: every IPv4 and IPv6 address.
        listen_on: Option<IpAddr>,
        port: u16,
        /// Workers sharing the port with SO_REUSEPORT (default 1).
        workers: usize,
    },
    Pcap {
        interface: String,
        filter: String,
    },
}

/// Where `dump-flows` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpTarget {
    None,
    Syslog,
    /// Standard output (the original's `"stdout"`).
    Stdout,
    File(PathBuf),
}

/// The `lua` object of xenoeye.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuaSettings {
    /// Directories hooks may write to besides the notifications directory and their object's.
    pub write_dirs: Vec<PathBuf>,
    /// Where `xe.module(name)` finds the bundled Lua library.
    pub lib_dir: PathBuf,
    pub max_instructions: u64,
    pub max_memory_m: u64,
    /// Threads running Lua hooks.
    pub threads: u64,
    /// Lua calls waiting per thread before new ones are dropped.
    pub queue: u64,
}

impl Default for LuaSettings {
    fn default() -> Self {
        LuaSettings {
            write_dirs: Vec::new(),
            lib_dir: PathBuf::from("/usr/local/share/xenoeye/lua"),
            max_instructions: 10_000_000,
            max_memory_m: 64,
            threads: 4,
            queue: 10_000,
        }
    }
}

/// The validated `xenoeye.conf`.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub captures: Vec<CaptureSpec>,
    pub sflow_captures: Vec<CaptureSpec>,
    /// Socket receive buffer in MiB (`None`: the OS default).
    pub rcvbufsize_m: Option<u64>,
    pub templates_db: PathBuf,
    pub dump_flows: DumpTarget,
    pub devices_file: PathBuf,
    pub devices: Devices,
    pub mo_dir: PathBuf,
    pub export_dir: PathBuf,
    pub iplists_dir: PathBuf,
    pub notifications_dir: PathBuf,
    pub db_type: String,
    pub db_export: Option<PathBuf>,
    /// Hook scripts still running after this many seconds are killed.
    pub script_timeout: u64,
    /// Hook scripts running at once.
    pub max_scripts: usize,
    /// MiB of export files kept in memory while they cannot be written.
    pub export_backlog_m: u64,
    /// Seconds a `db-export` run may take before it is killed.
    pub db_export_timeout: u64,
    /// Where `/metrics` and the status page are served (`None`: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds without a datagram after which an exporter is logged as silent (0: never).
    pub exporter_silence: u64,
    /// Lua hooks: settings of the `lua` object.
    pub lua: LuaSettings,
    /// Keys present in the file that this version does not use (for a debug message).
    pub ignored_keys: Vec<String>,
    /// The directories written to (see [`dirs::prepare`]).
    pub output_dirs: Vec<dirs::OutputDir>,
}

/// The keys of each configuration element, in one place: what the unknown-key warnings
/// take as known (see [`warn_of_keys`]), and what the README must document (a test holds the
/// two together). A key read by a parser must be listed here, or it is warned of as unknown.
pub mod keys {
    /// `xenoeye.conf`, top level.
    pub const XENOEYE_CONF: &[&str] = &[
        "capture", "sflow-capture", "rcvbufsize_m", "templates", "debug", "devices", "mo-dir",
        "export-dir", "iplists-dir", "notifications-dir", "db-type", "db-export", "script-timeout",
        "max-scripts", "metrics-listen", "lua", "export-backlog-m", "db-export-timeout", "exporter-silence",
    ];
    /// `templates` (allow-templates-in-future: the original's, for its own templates file).
    pub const TEMPLATES: &[&str] = &["db", "allow-templates-in-future"];
    /// `debug`, of `xenoeye.conf` and of an object.
    pub const DEBUG: &[&str] = &["dump-flows"];
    pub const LUA: &[&str] = &["write-dirs", "lib-dir", "max-instructions", "max-memory-m", "threads", "queue"];
    /// An element of `capture` (or `sflow-capture`), and what it holds.
    pub const CAPTURE: &[&str] = &["socket", "pcap"];
    pub const SOCKET: &[&str] = &["listen-on", "port", "workers"];
    pub const PCAP: &[&str] = &["interface", "filter"];
    /// An element of `devices.conf`.
    pub const DEVICE: &[&str] = &["ip", "id", "sampling-rate"];
    /// A monitoring object (`mo.conf`, or the table a `mo.lua` returns).
    pub const OBJECT: &[&str] = &["filter", "debug", "fwm", "mavg", "children"];
    /// An element of `fwm`.
    pub const FWM: &[&str] = &["name", "fields", "time", "limit", "extended", "create-index", "mem-m", "export-lua"];
    /// An element of `mavg`.
    pub const MAVG: &[&str] = &["name", "fields", "time", "mem-m", "dump", "overlimit", "underlimit"];
    /// An element of `overlimit` or `underlimit`.
    pub const LIMIT: &[&str] = &["name", "default", "limits", "back2norm-time", "action-script", "back2norm-script", "ext", "action-lua", "back2norm-lua"];

    /// Every list above, by the element it is of.
    pub const ALL: &[(&str, &[&str])] = &[
        ("xenoeye.conf", XENOEYE_CONF), ("templates", TEMPLATES), ("debug", DEBUG), ("lua", LUA),
        ("capture", CAPTURE), ("socket", SOCKET), ("pcap", PCAP), ("devices.conf", DEVICE),
        ("monitoring object", OBJECT), ("fwm", FWM), ("mavg", MAVG), ("limit", LIMIT),
    ];
}

/// Keys of the original's `xenoeye.conf` for features this version does not have (traffic
/// classification, GeoIP): accepted and listed with `-v`; other unknown keys are warned of.
const ORIGINAL_KEYS: &[&str] = &["clsf-dir", "geodb"];

/// What a setting of the original collector that this version does not support is told.
const UNSUPPORTED: &str = "a setting of the original collector that this version does not support: ignored";

/// Logs a warning for each key of the object `node` (at key path `path` of `file`) that is
/// not `known`, with the known key it most likely misspells (see [`Node::unknown_keys`]),
/// and for each of the original collector's settings in `unsupported` it holds. Neither
/// stops the collector: configurations of the original keep working.
pub fn warn_of_keys(node: &Node, file: &Path, path: &str, known: &[&str], unsupported: &[&str]) {
    let all: Vec<&str> = known.iter().chain(unsupported).copied().collect();
    for w in node.unknown_keys(file, path, &all) {
        crate::log::warn(&w.to_string());
    }
    for (k, _) in node.members().iter().filter(|(k, _)| unsupported.contains(&k.name.as_str())) {
        crate::log::warn(&k.error(file, path, UNSUPPORTED).to_string());
    }
}

/// The duration `name` of the object `item` (at key path `key`), `default` when absent; 0 is
/// taken as absent, with a warning, as the original does (it logs and uses its default).
pub fn seconds_or_default_for_zero(item: &Node, file: &Path, key: &str, name: &str, default: u64) -> Result<u64, ConfigError> {
    match item.get(name) {
        Some(n) if n.as_u64(file, key) == Ok(0) => {
            crate::log::warn(&n.error(file, key, format!("0 s: the default, {default} s, is used (as the original does)")).to_string());
            Ok(default)
        }
        _ => item.seconds_or(name, file, key, 1, default),
    }
}

/// Reads and validates `xenoeye.conf` and the devices file it names.
pub fn load(file: &Path) -> Result<Config, Vec<ConfigError>> {
    let root = json::parse_file(file).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let cfg = from_node(file, &root, &mut errors);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// The devices file's sampling rates; none when the file is absent from its default path
/// (`named`: the configuration gave the path).
fn devices_or_default(devices_file: &Path, named: bool, errors: &mut Vec<ConfigError>) -> Devices {
    match load_devices(devices_file) {
        Ok(d) => d,
        Err(e) if !named && e.line == 0 => Devices::default(),
        Err(e) => {
            errors.push(e);
            Devices::default()
        }
    }
}

/// `metrics-listen`: ADDRESS:PORT, or none (absent or empty).
fn metrics_listen(file: &Path, node: Option<&Node>, errors: &mut Vec<ConfigError>) -> Option<std::net::SocketAddr> {
    let n = node?;
    match n.as_str(file, "metrics-listen") {
        Ok("") => None,
        Ok(a) => match a.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.push(n.error(file, "metrics-listen", format!("\"{a}\" is not ADDRESS:PORT (e.g. 127.0.0.1:9657)")));
                None
            }
        },
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Collects an error and returns a fallback, so one pass reports every problem.
fn ok_or<T>(r: Result<T, ConfigError>, errors: &mut Vec<ConfigError>, fallback: T) -> T {
    r.unwrap_or_else(|e| {
        errors.push(e);
        fallback
    })
}

fn from_node(file: &Path, root: &Node, errors: &mut Vec<ConfigError>) -> Config {
    let base = file.parent().unwrap_or(Path::new("."));
    if let Err(e) = root.expect_object(file, "") {
        errors.push(e);
    }
    let path_key = |key: &str, default: &str, errors: &mut Vec<ConfigError>| -> PathBuf {
        let node = lookup_path(root, key);
        match node {
            Some(n) => resolve(base, ok_or(n.as_str(file, key), errors, default)),
            None => PathBuf::from(default),
        }
    };
    let captures = captures(file, root, "capture", errors);
    let sflow_captures = captures_opt(file, root, "sflow-capture", errors);
    let rcvbufsize_m = root.get("rcvbufsize_m").map(|n| ok_or(n.as_u64(file, "rcvbufsize_m"), errors, 0));
    let templates_db = path_key("templates.db", "/var/lib/xenoeye/templates.tkvdb", errors);
    let dump_flows = dump_target(file, base, lookup_path(root, "debug.dump-flows"), "debug.dump-flows", errors);
    let devices_file = path_key("devices", "/etc/xenoeye/devices.conf", errors);
    let devices = devices_or_default(&devices_file, root.get("devices").is_some(), errors);
    let db_type = root.get("db-type").map(|n| ok_or(n.as_str(file, "db-type"), errors, "pg").to_string());
    let db_type = db_type.unwrap_or_else(|| "pg".into());
    if db_type != "pg" {
        let n = root.get("db-type").expect("db-type present when not defaulted");
        errors.push(n.error(file, "db-type", format!("unsupported database type \"{db_type}\" (supported: pg)")));
    }
    let db_export = root
        .get("db-export")
        .map(|n| ok_or(n.as_str(file, "db-export"), errors, ""))
        .filter(|s| !s.trim().is_empty())
        .map(|s| resolve(base, s));
    // A count of at least 1 (`default` when absent or wrong).
    let u64_key = |key: &str, default: u64, errors: &mut Vec<ConfigError>| -> u64 {
        root.get(key).map(|n| ok_or(n.as_u64(file, key), errors, default)).unwrap_or(default)
    };
    let count_key = |key: &str, default: u64, errors: &mut Vec<ConfigError>| -> u64 { u64_key(key, default, errors).max(1) };
    let script_timeout = count_key("script-timeout", 30, errors);
    let export_backlog_m = count_key("export-backlog-m", 1024, errors);
    let db_export_timeout = count_key("db-export-timeout", 300, errors);
    let max_scripts = count_key("max-scripts", 16, errors) as usize;
    let metrics_listen = metrics_listen(file, root.get("metrics-listen"), errors);
    // 0 is a value of its own here (never tell), not raised to 1 as a count.
    let exporter_silence = u64_key("exporter-silence", 60, errors);
    let lua = lua_settings(file, base, root.get("lua"), errors);
    let export_dir = path_key("export-dir", "/var/lib/xenoeye/exp", errors);
    let notifications_dir = path_key("notifications-dir", "/var/lib/xenoeye/notifications", errors);
    let output_dirs = output_dirs(root, &export_dir, &notifications_dir, &templates_db, &dump_flows);
    let ignored_keys = root
        .members()
        .iter()
        .filter(|(k, _)| ORIGINAL_KEYS.contains(&k.name.as_str()))
        .map(|(k, _)| format!("{}:{}:{}: {}", file.display(), k.line, k.col, k.name))
        .collect();
    warn_of_keys(root, file, "", &[keys::XENOEYE_CONF, ORIGINAL_KEYS].concat(), &[]);
    if let Some(t) = root.get("templates") {
        warn_of_keys(t, file, "templates", keys::TEMPLATES, &[]);
    }
    if let Some(d) = root.get("debug") {
        warn_of_keys(d, file, "debug", keys::DEBUG, &[]);
    }
    Config {
        file: file.to_path_buf(),
        captures,
        sflow_captures,
        rcvbufsize_m,
        templates_db,
        dump_flows,
        devices_file,
        devices,
        mo_dir: path_key("mo-dir", "/var/lib/xenoeye/mo", errors),
        export_dir,
        iplists_dir: path_key("iplists-dir", "/var/lib/xenoeye/iplists", errors),
        notifications_dir,
        db_type,
        db_export,
        script_timeout,
        max_scripts,
        export_backlog_m,
        db_export_timeout,
        metrics_listen,
        exporter_silence,
        lua,
        ignored_keys,
        output_dirs,
    }
}

/// The directories the collector writes to, each with the key (and its place) naming it.
fn output_dirs(root: &Node, export_dir: &Path, notifications_dir: &Path, templates_db: &Path, dump_flows: &DumpTarget) -> Vec<dirs::OutputDir> {
    let parent = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let mut out = vec![("export-dir", export_dir.to_path_buf()), ("notifications-dir", notifications_dir.to_path_buf()), ("templates.db", parent(templates_db))];
    if let DumpTarget::File(f) = dump_flows {
        out.push(("debug.dump-flows", parent(f)));
    }
    out.into_iter().map(|(key, dir)| dirs::OutputDir { key, dir, at: lookup_path(root, key).map(|n| (n.line, n.col)) }).collect()
}

fn lua_settings(file: &Path, base: &Path, node: Option<&Node>, errors: &mut Vec<ConfigError>) -> LuaSettings {
    let mut s = LuaSettings::default();
    let Some(n) = node else { return s };
    if let Err(e) = n.expect_object(file, "lua") {
        errors.push(e);
        return s;
    }
    warn_of_keys(n, file, "lua", keys::LUA, &[]);
    if let Some(d) = n.get("write-dirs") {
        for item in ok_or(d.as_array(file, "lua.write-dirs"), errors, &[]) {
            if let Ok(p) = item.as_str(file, "lua.write-dirs").map_err(|e| errors.push(e)) {
                s.write_dirs.push(resolve(base, p));
            }
        }
    }
    if let Some(d) = n.get("lib-dir") {
        s.lib_dir = resolve(base, ok_or(d.as_str(file, "lua.lib-dir"), errors, "/usr/local/share/xenoeye/lua"));
    }
    if let Some(v) = n.get("max-instructions") {
        s.max_instructions = ok_or(v.as_u64(file, "lua.max-instructions"), errors, s.max_instructions).max(1000);
    }
    if let Some(v) = n.get("max-memory-m") {
        s.max_memory_m = ok_or(v.as_u64(file, "lua.max-memory-m"), errors, s.max_memory_m).max(1);
    }
    if let Some(v) = n.get("threads") {
        s.threads = ok_or(v.as_u64(file, "lua.threads"), errors, s.threads).clamp(1, 256);
    }
    if let Some(v) = n.get("queue") {
        s.queue = ok_or(v.as_u64(file, "lua.queue"), errors, s.queue).max(1);
    }
    s
}

/// Follows a dotted key path (`templates.db`) through nested objects.
fn lookup_path<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    path.split('.').try_fold(root, |n, k| n.get(k))
}

/// A path from the config: absolute as written, relative ones against the config's directory.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses a `dump-flows` value (also used by monitoring objects).
pub fn dump_target(file: &Path, base: &Path, node: Option<&Node>, key: &str, errors: &mut Vec<ConfigError>) -> DumpTarget {
    match node.map(|n| ok_or(n.as_str(file, key), errors, "none")) {
        None | Some("none") | Some("") => DumpTarget::None,
        Some("syslog") => DumpTarget::Syslog,
        Some("stdout") => DumpTarget::Stdout,
        Some(path) => DumpTarget::File(resolve(base, path)),
    }
}

fn captures_opt(file: &Path, root: &Node, key: &str, errors: &mut Vec<ConfigError>) -> Vec<CaptureSpec> {
    if root.get(key).is_some() {
        captures(file, root, key, errors)
    } else {
        Vec::new()
    }
}

fn captures(file: &Path, root: &Node, key: &str, errors: &mut Vec<ConfigError>) -> Vec<CaptureSpec> {
    let Some(list) = root.get(key) else {
        errors.push(root.error(file, key, "missing: at least one capture element is needed"));
        return Vec::new();
    };
    let items = ok_or(list.as_array(file, key), errors, &[]);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let k = format!("{key}[{i}]");
        match capture(file, item, &k) {
            Ok(c) => out.push(c),
            Err(e) => errors.push(e),
        }
    }
    out
}

fn capture(file: &Path, item: &Node, k: &str) -> Result<CaptureSpec, ConfigError> {
    item.expect_object(file, k)?;
    warn_of_keys(item, file, k, keys::CAPTURE, &[]);
    if let Some(s) = item.get("socket") {
        let k = format!("{k}.socket");
        s.expect_object(file, &k)?;
        warn_of_keys(s, file, &k, keys::SOCKET, &[]);
        let listen_on = match s.get("listen-on") {
            None => None,
            Some(n) => match n.as_str(file, &format!("{k}.listen-on"))?.trim() {
                "*" | "" => None,
                a => Some(a.parse::<IpAddr>().map_err(|_| {
                    n.error(file, &format!("{k}.listen-on"), format!("\"{a}\" is not an IP address or \"*\""))
                })?),
            },
        };
        let pk = format!("{k}.port");
        let port_node = s.get("port").ok_or_else(|| s.error(file, &pk, "missing port"))?;
        let port = port_node.as_u64(file, &pk)?;
        if port == 0 || port > 65535 {
            return Err(port_node.error(file, &pk, format!("port {port} is out of range 1-65535")));
        }
        let workers = match s.get("workers") {
            Some(n) => n.as_u64(file, &format!("{k}.workers"))?.clamp(1, 256) as usize,
            None => 1,
        };
        Ok(CaptureSpec::Socket { listen_on, port: port as u16, workers })
    } else if let Some(p) = item.get("pcap") {
        let k = format!("{k}.pcap");
        p.expect_object(file, &k)?;
        warn_of_keys(p, file, &k, keys::PCAP, &[]);
        let ik = format!("{k}.interface");
        let interface = p.get("interface").ok_or_else(|| p.error(file, &ik, "missing interface"))?.as_str(file, &ik)?;
        let filter = match p.get("filter") {
            Some(n) => n.as_str(file, &format!("{k}.filter"))?.to_string(),
            None => String::new(),
        };
        Ok(CaptureSpec::Pcap { interface: interface.to_string(), filter })
    } else {
        Err(item.error(file, k, "expected \"socket\" or \"pcap\""))
    }
}

/// Reads `devices.conf`: an array of `{"ip", "id" (optional), "sampling-rate"}`.
pub fn load_devices(file: &Path) -> Result<Devices, ConfigError> {
    let root = json::parse_file(file)?;
    let mut list = Vec::new();
    for (i, item) in root.as_array(file, "")?.iter().enumerate() {
        let k = format!("[{i}]");
        item.expect_object(file, &k)?;
        warn_of_keys(item, file, &k, keys::DEVICE, &["mark", "skip-unmarked"]);
        let ipk = format!("{k}.ip");
        let ip_node = item.get("ip").ok_or_else(|| item.error(file, &ipk, "missing ip"))?;
        let ip_text = ip_node.as_str(file, &ipk)?;
        let ip = ip_text
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| ip_node.error(file, &ipk, format!("\"{ip_text}\" is not an IP address")))?;
        let id = match item.get("id") {
            Some(n) => {
                let v = n.as_u64(file, &format!("{k}.id"))?;
                Some(u32::try_from(v).map_err(|_| n.error(file, &format!("{k}.id"), "id does not fit 32 bits"))?)
            }
            None => None,
        };
        let rk = format!("{k}.sampling-rate");
        let sampling_rate = match item.get("sampling-rate") {
            Some(n) => n.as_u64(file, &rk)?,
            None => 1,
        };
        if sampling_rate == 0 {
            return Err(item.get("sampling-rate").unwrap_or(item).error(file, &rk, "sampling rate must be at least 1"));
        }
        list.push(Device { ip, id, sampling_rate });
    }
    Ok(Devices::new(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    #[test]
    fn the_readme_documents_every_known_key() {
        // As a table row (`key`, `lua.key`, `fwm[].key`) or in an example ("key": ...).
        let documented = |key: &str| [format!("`{key}`"), format!(".{key}`"), format!("\"{key}\"")].iter().any(|form| crate::testreadme::TEXT.contains(form.as_str()));
        let missing: Vec<String> = keys::ALL.iter().flat_map(|(element, keys)| keys.iter().filter(|k| !documented(k)).map(move |k| format!("{element}: {k}"))).collect();
        assert!(missing.is_empty(), "keys the README does not document: {missing:?}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> TestDir {
        TestDir::new(&format!("cfg-{tag}"))
    }

    #[test]
    fn original_style_config_with_defaults() {
        let d = tmpdir("orig");
        write(&d, "devices.conf", "[ {\"ip\": \"1.2.3.4\", \"id\": 123456, \"sampling-rate\": 10000}, /* c */ {\"ip\": \"2.3.4.5\", \"sampling-rate\": \"1000\"} ]");
        let f = write(
            &d,
            "xenoeye.conf",
            r#"{
            // the original's keys, numbers as strings, unknown keys
            "capture": [ {"socket": {"listen-on": "*", "port": "2055"}},
                         {"pcap": {"interface": "eth0", "filter": "udp port 2056"}} ],
            "templates": { "db": "tpl.db" },
            "debug": { "dump-flows": "none" },
            "devices": "devices.conf",
            "clsf-dir": "/x", "geodb": "/y", "db-export": ""
        }"#,
        );
        let c = load(&f).unwrap();
        assert_eq!(c.captures[0], CaptureSpec::Socket { listen_on: None, port: 2055, workers: 1 });
        assert_eq!(c.captures[1], CaptureSpec::Pcap { interface: "eth0".into(), filter: "udp port 2056".into() });
        assert_eq!(c.templates_db, d.join("tpl.db"));
        assert_eq!(c.dump_flows, DumpTarget::None);
        assert_eq!(c.devices.list.len(), 2);
        assert_eq!(c.devices.list[1].sampling_rate, 1000);
        assert_eq!(c.mo_dir, PathBuf::from("/var/lib/xenoeye/mo"));
        assert_eq!(c.db_type, "pg");
        assert_eq!(c.db_export, None);
        assert_eq!((c.export_backlog_m, c.db_export_timeout, c.exporter_silence), (1024, 300, 60));
        assert_eq!(c.ignored_keys.len(), 2);
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let d = tmpdir("err");
        write(&d, "devices.conf", "[]");
        let f = write(
            &d,
            "xenoeye.conf",
            "{\n \"devices\": \"devices.conf\",\n \"capture\": [ {\"socket\": {\"port\": \"70000\"}},\n   {\"socket\": {\"listen-on\": \"1.2.3\", \"port\": 1}} ]\n}",
        );
        let errs = load(&f).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        // 0 is a value of its own for this key (never warn), a word is an error.
        let with = |v: &str| write(&d, "x.conf", &format!("{{\"devices\": \"devices.conf\", \"capture\": [{{\"socket\": {{\"port\": 2055}}}}], \"exporter-silence\": {v}}}"));
        assert_eq!(load(&with("0")).unwrap().exporter_silence, 0);
        assert_eq!(load(&with("\"soon\"")).unwrap_err()[0].key, "exporter-silence");
        assert_eq!(text[0], format!("{}:3:35: 'capture[0].socket.port': port 70000 is out of range 1-65535", f.display()));
        assert_eq!(
            text[1],
            format!("{}:4:29: 'capture[1].socket.listen-on': \"1.2.3\" is not an IP address or \"*\"", f.display())
        );
    }

    #[test]
    fn devices_errors() {
        let d = tmpdir("dev");
        let f = write(&d, "devices.conf", "[\n {\"ip\": \"1.2.3.4\", \"sampling-rate\": 0}\n]");
        let e = load_devices(&f).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "[0].sampling-rate"));
        let f = write(&d, "devices.conf", "[ {\"ip\": \"nope\"} ]");
        assert_eq!(load_devices(&f).unwrap_err().key, "[0].ip");
    }
}
