//! Lua alert hooks: functions of an object's `mo.lua`, run in-process on a Lua hook thread
//! (see `lua_pool`).
//!
//! Each object with a `mo.lua` gets its own Lua 5.4 state, created on first use on its Lua
//! thread (never on a capture worker). The state is sandboxed: no `io`, `os`, `package`,
//! `debug`, `load`, `loadfile`, `dofile` or `require`; instead a small `xe` table (logging,
//! time, atomic file writes restricted to allowed directories, per-object `xe.state`). Every
//! call has an instruction budget and every state a memory limit: a looping or greedy hook is
//! cut, counted and logged with the object, the hook and the Lua line, and collection goes on.

use crate::fsutil::write_atomically;
use crate::log;
use crate::objects::mavg::{Event, Phase};
use crate::objects::lua_conf::{sandbox, Sandbox};
use mlua::{Lua, StdLib, Table, Value};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Limits and permissions of Lua hooks.
#[derive(Clone, Debug)]
pub struct LuaConfig {
    /// VM instructions one call may run.
    pub max_instructions: u64,
    /// Memory one object's state may use.
    pub max_memory: usize,
    /// Directories `xe.write_file` and friends may touch (the object's own directory is added).
    pub write_dirs: Vec<PathBuf>,
    /// The objects in force, for `xe.ext` (extended windows).
    pub objects: Option<std::sync::Arc<crate::objects::LiveObjects>>,
    /// Where `xe.module(name)` finds the bundled library (`<dir>/<name>.lua`).
    pub lib_dir: Option<PathBuf>,
    /// Set when the collector stops and its hooks may no longer wait: `xe.run` kills its
    /// program and returns at once.
    pub stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for LuaConfig {
    fn default() -> Self {
        LuaConfig {
            max_instructions: 10_000_000,
            max_memory: 64 << 20,
            write_dirs: Vec::new(),
            objects: None,
            lib_dir: None,
            stopping: Default::default(),
        }
    }
}

/// Counters of the Lua hooks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LuaStats {
    pub calls: u64,
    pub errors: u64,
    /// Calls cut at the instruction budget.
    pub cut: u64,
    /// Calls not made: too many waited already (see `lua_pool`), or a stop left them.
    pub dropped: u64,
}

struct ObjectLua {
    lua: Lua,
    budget: Rc<Cell<u64>>,
}

/// One Lua thread's states, one per object directory.
pub struct LuaHooks {
    cfg: LuaConfig,
    /// Per object directory: mo.lua's modification time and its state (`None`: it failed).
    states: HashMap<PathBuf, (Option<std::time::SystemTime>, Option<ObjectLua>)>,
    pub stats: LuaStats,
}

impl LuaHooks {
    pub fn new(cfg: LuaConfig) -> Self {
        LuaHooks { cfg, states: HashMap::new(), stats: LuaStats::default() }
    }

    /// Calls the limit's `action-lua` (start) or `back2norm-lua` (back to normal) function, if
    /// it names one.
    pub fn event(&mut self, ev: &Event, notification: &Path, silent_exporters: &[String]) {
        let Some(func) = hook_function(ev) else { return };
        let spec = ev.limit_spec();
        let label = || format!("lua hook {}/{}/{} {func}", ev.mavg.object, ev.mavg.name, spec.name);
        self.run(&ev.mavg.dir, &ev.mavg.object, func, label, |lua| event_table(lua, ev, notification, silent_exporters));
    }

    /// Calls a window's `export-lua` function with the rows just exported.
    pub fn export(&mut self, ev: &crate::export::ExportEvent) {
        let Some(func) = ev.spec.export_lua.as_deref() else { return };
        let label = || format!("lua export hook {} {func}", ev.spec.table);
        self.run(&ev.spec.dir, &ev.spec.object, func, label, |lua| export_table(lua, ev));
    }

    /// Calls `func` of the object's mo.lua with the table `argument` builds, under a fresh
    /// instruction budget; counts the call, and a failure as cut (budget) or error, logged
    /// after `label`.
    fn run(
        &mut self,
        dir: &Path,
        object: &str,
        func: &str,
        label: impl FnOnce() -> String,
        argument: impl FnOnce(&Lua) -> mlua::Result<Table>,
    ) {
        self.stats.calls += 1;
        let budget = self.cfg.max_instructions;
        let Some(state) = self.state(dir, object) else {
            self.stats.errors += 1;
            return;
        };
        let result = (|| {
            let f: mlua::Function =
                state.lua.globals().get(func).map_err(|_| mlua::Error::runtime(format!("no function {func} in mo.lua")))?;
            let t = argument(&state.lua)?;
            state.budget.set(budget);
            f.call::<()>(t)
        })();
        let Err(e) = result else { return };
        // What a failed hook (a memory hog above all) left behind must not starve the next
        // call of this object's state.
        let _ = state.lua.gc_collect();
        let text = e.to_string();
        if text.contains("instruction limit") {
            self.stats.cut += 1;
        } else {
            self.stats.errors += 1;
        }
        log::error(&format!("{}: {text}", label()));
    }

    /// The object's state, created (and mo.lua run) on first use and again when mo.lua changed
    /// (a reload), carrying `xe.state` over; `None` when it failed.
    fn state(&mut self, dir: &Path, object: &str) -> Option<&ObjectLua> {
        let mtime = std::fs::metadata(dir.join("mo.lua")).and_then(|m| m.modified()).ok();
        let stale = self.states.get(dir).is_none_or(|(t, _)| *t != mtime);
        if stale {
            let old = self.states.remove(dir).and_then(|(_, s)| s);
            let made = new_state(&self.cfg, dir, object)
                .and_then(|new| {
                    if let Some(old) = &old {
                        carry_state(old, &new)?;
                    }
                    Ok(new)
                })
                .map_err(|e| log::error(&format!("{}/mo.lua: {e}", dir.display())))
                .ok();
            // A changed mo.lua that fails keeps the old functions rather than none.
            let keep = made.or(old);
            self.states.insert(dir.to_path_buf(), (mtime, keep));
        }
        self.states.get(dir).and_then(|(_, s)| s.as_ref())
    }
}

/// The Lua function an event calls: the limit's `action-lua` at start, `back2norm-lua` at
/// back-to-normal.
pub fn hook_function(ev: &Event) -> Option<&str> {
    let spec = ev.limit_spec();
    match ev.phase {
        Phase::Start => spec.action_lua.as_deref(),
        Phase::Back2Norm => spec.back2norm_lua.as_deref(),
        _ => None,
    }
}

/// A sandboxed state with the `xe` API, after running the object's mo.lua.
fn new_state(cfg: &LuaConfig, dir: &Path, object: &str) -> mlua::Result<ObjectLua> {
    let Sandbox { lua, budget, xe } = sandbox(dir, cfg.lib_dir.as_deref(), cfg.max_memory)?;
    // Hooks may also use coroutines; the configuration stage does not need them.
    lua.load_std_libs(StdLib::COROUTINE)?;
    let mut dirs = cfg.write_dirs.clone();
    dirs.push(dir.to_path_buf());
    hook_api(&lua, &xe, dirs, cfg.stopping.clone())?;
    xe.set("ext", ext_switch(&lua, object, cfg.objects.clone())?)?;
    let file = dir.join("mo.lua");
    let code = crate::fsutil::read_input_text(&file).map_err(mlua::Error::external)?;
    // Running mo.lua itself is bounded too: it may not hang the hook thread.
    budget.set(cfg.max_instructions);
    lua.load(code).set_name(format!("@{}", file.display())).exec()?;
    Ok(ObjectLua { lua, budget })
}

/// Copies `xe.state` from an old state into a new one (strings, numbers, booleans, nested
/// tables; functions and userdata do not cross states).
fn carry_state(old: &ObjectLua, new: &ObjectLua) -> mlua::Result<()> {
    fn copy(v: Value, into: &Lua, depth: u32) -> mlua::Result<Value> {
        Ok(match v {
            Value::String(s) => Value::String(into.create_string(s.as_bytes())?),
            Value::Table(t) if depth < 32 => {
                let out = into.create_table()?;
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    out.raw_set(copy(k, into, depth + 1)?, copy(v, into, depth + 1)?)?;
                }
                Value::Table(out)
            }
            Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::Number(_) => v,
            _ => Value::Nil,
        })
    }
    let from: Table = old.lua.globals().get::<Table>("xe")?.get("state")?;
    let copied = copy(Value::Table(from), &new.lua, 0)?;
    new.lua.globals().get::<Table>("xe")?.set("state", copied)
}

/// Whether `path` lies in one of `dirs` (no `..` escapes).
fn allowed(path: &Path, dirs: &[PathBuf]) -> bool {
    !path.components().any(|c| matches!(c, std::path::Component::ParentDir)) && dirs.iter().any(|d| path.starts_with(d))
}

/// What hooks add to the sandbox's `xe`: time, files in `dirs`, programs, `xe.state`.
fn hook_api(lua: &Lua, xe: &Table, dirs: Vec<PathBuf>, stopping: std::sync::Arc<std::sync::atomic::AtomicBool>) -> mlua::Result<()> {
    xe.set("date", lua.create_function(|_, (fmt, t): (String, Option<f64>)| Ok(date(&fmt, t)))?)?;
    xe.set(
        "time",
        lua.create_function(|_, ()| {
            Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0))
        })?,
    )?;
    let check = move |path: &str| -> mlua::Result<PathBuf> {
        let p = PathBuf::from(path);
        if allowed(&p, &dirs) {
            Ok(p)
        } else {
            Err(mlua::Error::runtime(format!("{path}: not in a directory hooks may write to")))
        }
    };
    let c = check.clone();
    xe.set(
        "write_file",
        lua.create_function(move |_, (path, text): (String, String)| {
            write_atomically(&c(&path)?, text.as_bytes()).map_err(mlua::Error::external)
        })?,
    )?;
    let c = check.clone();
    xe.set(
        "append_file",
        lua.create_function(move |_, (path, text): (String, String)| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(c(&path)?).map_err(mlua::Error::external)?;
            f.write_all(text.as_bytes()).map_err(mlua::Error::external)
        })?,
    )?;
    xe.set(
        "remove_file",
        lua.create_function(move |_, path: String| match std::fs::remove_file(check(&path)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(mlua::Error::external(e)),
            _ => Ok(()),
        })?,
    )?;
    xe.set("run", lua.create_function(move |_, (argv, timeout): (Vec<String>, Option<f64>)| Ok(run(&argv, timeout, &stopping)))?)?;
    xe.set("state", lua.create_table()?)?;
    Ok(())
}

/// `xe.ext(name, on)`: switches an extended window (`name` of this object or
/// `object/name`) on or off. Counted with the limits that hold it: a window is off only when
/// neither a limit nor this object's Lua holds it.
fn ext_switch(lua: &Lua, object: &str, objects: Option<std::sync::Arc<crate::objects::LiveObjects>>) -> mlua::Result<mlua::Function> {
    let object = object.to_string();
    let held: std::cell::RefCell<std::collections::HashSet<String>> = Default::default();
    lua.create_function(move |_, (name, on): (String, bool)| {
        let live = objects.as_ref().ok_or_else(|| mlua::Error::runtime("no objects"))?;
        let (obj, win) = name.rsplit_once('/').unwrap_or((object.as_str(), name.as_str()));
        let current = live.get();
        let w = current.window(obj, win).ok_or_else(|| mlua::Error::runtime(format!("no window {win} in object {obj}")))?;
        if !w.extended {
            return Err(mlua::Error::runtime(format!("{obj}/{win} is not an extended window")));
        }
        let key = format!("{obj}/{win}");
        let mut held = held.borrow_mut();
        if on && held.insert(key.clone()) {
            w.hold(true);
        } else if !on && held.remove(&key) {
            w.hold(false);
        }
        Ok(w.is_active())
    })
}

/// `xe.date(format, time)`: local time formatted by strftime (default time: now).
fn date(fmt: &str, t: Option<f64>) -> String {
    let t = t.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0));
    let Ok(cfmt) = std::ffi::CString::new(fmt) else { return String::new() };
    let secs = t.floor() as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers given, of the sizes given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        let mut buf = [0u8; 256];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Longest a program started by `xe.run` may run (seconds).
const RUN_MAX_SECONDS: f64 = 60.0;

/// `xe.run({program, arg...}, timeout)`: runs a program directly (no shell), waits at most
/// `timeout` seconds (default 10, at most 60), returns its exit code, or nil and a reason
/// (killed at the timeout, could not start, killed by a signal).
fn run(argv: &[String], timeout: Option<f64>, stopping: &std::sync::atomic::AtomicBool) -> (Option<i32>, Option<String>) {
    let Some((program, args)) = argv.split_first() else { return (None, Some("empty argv".into())) };
    let timeout = std::time::Duration::from_secs_f64(timeout.unwrap_or(10.0).clamp(0.0, RUN_MAX_SECONDS));
    let mut child = match crate::child::spawn(std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null())) {
        Ok(c) => c,
        Err(e) => return (None, Some(format!("{program}: {e}"))),
    };
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match status.code() {
                    Some(code) => (Some(code), None),
                    None => (None, Some(format!("{program}: {status}"))),
                }
            }
            Ok(None) if started.elapsed() >= timeout || stopping.load(std::sync::atomic::Ordering::Relaxed) => {
                crate::child::kill(&mut child);
                let why = if started.elapsed() >= timeout { format!("killed after {:.1} s", timeout.as_secs_f64()) } else { "killed: collector stopping".into() };
                return (None, Some(format!("{program}: {why}")));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => return (None, Some(format!("{program}: {e}"))),
        }
    }
}

/// Calls an export hook: { object, window, table, time, rows = { {column = value, ...}, ... } }
/// (addresses as text, numbers as integers, NULL keys absent).
/// The argument of an `export-lua` function: the window and its exported rows.
fn export_table(lua: &Lua, ev: &crate::export::ExportEvent) -> mlua::Result<Table> {
    use crate::objects::window::ColumnSource;
    let t = lua.create_table()?;
    t.set("object", ev.spec.object.as_str())?;
    t.set("window", ev.spec.name.as_str())?;
    t.set("table", ev.spec.table.as_str())?;
    t.set("time", ev.start)?;
    let rows = lua.create_table()?;
    for (i, (key, sums)) in ev.rows.iter().enumerate() {
        let row = lua.create_table()?;
        for c in &ev.spec.columns {
            match c.source {
                ColumnSource::Agg(a) => row.set(c.name.as_str(), sums[a])?,
                ColumnSource::Key(k) => {
                    if let Some(v) = key.get(k) {
                        row.set(c.name.as_str(), crate::objects::mavg::format_value(ev.spec.keys[k], v))?;
                    }
                }
            }
        }
        rows.set(i + 1, row)?;
    }
    t.set("rows", rows)?;
    Ok(t)
}

/// The argument of an `action-lua` / `back2norm-lua` function: the event.
fn event_table(lua: &Lua, ev: &Event, notification: &Path, silent_exporters: &[String]) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let spec = ev.limit_spec();
    t.set("object", ev.mavg.object.as_str())?;
    t.set("mavg", ev.mavg.name.as_str())?;
    t.set("limit", spec.name.as_str())?;
    t.set("kind", spec.kind.name())?;
    t.set("phase", if ev.phase == Phase::Start { "start" } else { "back2norm" })?;
    let keys = lua.create_table()?;
    let by_name = lua.create_table()?;
    for (i, (id, value)) in ev.mavg.keys.iter().zip(&ev.keys).enumerate() {
        keys.set(i + 1, value.as_str())?;
        let def = id.def();
        let name = match def.side {
            crate::fields::Side::Src => format!("src {}", def.names[0]),
            crate::fields::Side::Dst => format!("dst {}", def.names[0]),
            crate::fields::Side::None => def.names[0].to_string(),
        };
        by_name.set(name, value.as_str())?;
    }
    t.set("keys", keys)?;
    t.set("key", by_name)?;
    let field = match ev.mavg.aggs.get(ev.field) {
        Some(crate::objects::window::Agg::Packets) => "packets",
        Some(crate::objects::window::Agg::Bits) => "bits",
        _ => "octets",
    };
    t.set("field", field)?;
    t.set("value", ev.value)?;
    t.set("threshold", ev.threshold)?;
    t.set("notification", notification.display().to_string())?;
    t.set("time", ev.time_ms as f64 / 1000.0)?;
    t.set("start", ev.start_ms as f64 / 1000.0)?;
    t.set("silent_exporters", lua.create_sequence_from(silent_exporters.iter().map(String::as_str))?)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    fn state(code: &str) -> (ObjectLua, TestDir) {
        let d = TestDir::new(&format!("lua-{}", code.len()));
        std::fs::write(d.join("mo.lua"), code).unwrap();
        (new_state(&LuaConfig { max_instructions: 100_000, max_memory: 4 << 20, ..Default::default() }, &d, "o").unwrap(), d)
    }

    #[test]
    fn sandbox_has_no_dangerous_library() {
        let (s, _d) = state("function f() return io, os, package, debug, load, loadfile, dofile, require end");
        let f: mlua::Function = s.lua.globals().get("f").unwrap();
        s.budget.set(1000);
        let vals: mlua::MultiValue = f.call(()).unwrap();
        assert_eq!(vals.len(), 8);
        assert!(vals.iter().all(|v| v.is_nil()), "{vals:?}");
    }

    #[test]
    fn loops_are_cut_and_memory_is_bounded() {
        let (s, _d) = state("function spin() while true do end end\nfunction hog() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end end");
        s.budget.set(100_000);
        let e = s.lua.globals().get::<mlua::Function>("spin").unwrap().call::<()>(()).unwrap_err();
        assert!(e.to_string().contains("instruction limit"), "{e}");
        s.budget.set(u64::MAX / 2);
        let e = s.lua.globals().get::<mlua::Function>("hog").unwrap().call::<()>(()).unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
    }

    #[test]
    fn programs_run_without_a_shell_and_are_killed_at_their_timeout() {
        let (s, d) = state("function r(argv, t) return xe.run(argv, t) end");
        let r: mlua::Function = s.lua.globals().get("r").unwrap();
        s.budget.set(100_000);
        let (code, err): (Option<i32>, Option<String>) = r.call((vec!["/bin/sh", "-c", "exit 3"], 5.0)).unwrap();
        assert_eq!((code, err), (Some(3), None));
        let t = std::time::Instant::now();
        let (code, err): (Option<i32>, Option<String>) = r.call((vec!["/bin/sleep", "30"], 0.2)).unwrap();
        assert_eq!(code, None);
        assert!(err.unwrap().contains("killed after 0.2 s"));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let (_, err): (Option<i32>, Option<String>) = r.call((vec!["/nonexistent/prog"], 1.0)).unwrap();
        assert!(err.unwrap().starts_with("/nonexistent/prog:"));
        // Arguments reach the program as written: a shell would expand `*` into file names.
        std::fs::write(d.join("a"), "").unwrap();
        let (code, _): (Option<i32>, Option<String>) = r.call((vec!["/bin/test", "*", "=", "*"], 1.0)).unwrap();
        assert_eq!(code, Some(0));
    }

    #[test]
    fn files_only_in_allowed_directories() {
        let (s, d) = state("function w(p) xe.write_file(p, 'x') end");
        let w: mlua::Function = s.lua.globals().get("w").unwrap();
        s.budget.set(100_000);
        w.call::<()>(d.join("ok.txt").display().to_string()).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("ok.txt")).unwrap(), "x");
        assert!(w.call::<()>("/etc/passwd-xe").is_err());
        assert!(w.call::<()>(format!("{}/../escape", d.display())).is_err());
    }
}

#[cfg(test)]
mod object_tests {
    use super::*;
    use crate::filter::iplist::IpLists;
    use crate::objects::{self, LiveObjects};
    use crate::testdir::TestDir;
    use crate::testreadme;

    /// The names in the first column of the README's table that follows `intro`, each with
    /// `prefix` and any argument list taken off (`xe.run({...}, timeout)` is `run`).
    fn readme_table(intro: &str, prefix: &str) -> std::collections::BTreeSet<String> {
        let rows = testreadme::table_after(intro);
        let names = rows.iter().flat_map(|cells| testreadme::backticked(cells[0]));
        names.map(|n| n.trim_start_matches(prefix).split('(').next().unwrap().to_string()).collect()
    }

    fn keys_of(t: &Table) -> std::collections::BTreeSet<String> {
        t.pairs::<String, Value>().map(|p| p.unwrap().0).collect()
    }

    #[test]
    fn the_readme_documents_the_lua_api_exactly() {
        let d = object_dir("api", "o", r#"{"mavg": [{"name": "m", "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1000]}]}]}"#, "");
        let s = new_state(&LuaConfig::default(), &d.join("mo/o"), "o").unwrap();
        let xe: Table = s.lua.globals().get("xe").unwrap();
        assert_eq!(keys_of(&xe), readme_table("The `xe` table:", "xe."), "the xe table");
        let o = objects::load_with(&d.join("mo"), &IpLists::new(), None).unwrap();
        let ev = Event { phase: Phase::Start, mavg: o.mavgs[0].clone(), limit: 0, keys: vec!["10.0.0.9".into()], field: 0, value: 2000.0, threshold: 1000.0, time_ms: 0, start_ms: 0 };
        let t = event_table(&s.lua, &ev, Path::new("/n/o-m-l-10.0.0.9"), &[]).unwrap();
        assert_eq!(keys_of(&t), readme_table("Each gets one event table:", ""), "an alert hook's event");
        use crate::objects::window::{Agg, FwmSpec};
        let spec = std::sync::Arc::new(FwmSpec::for_tests("o", "w", Vec::new(), Vec::new(), vec![Agg::Octets], 30));
        let t = export_table(&s.lua, &crate::export::ExportEvent { spec, start: 0, rows: Vec::new() }).unwrap();
        let readme = testreadme::TEXT;
        let listed = readme.split("called after each\nexport of the window with `{ ").nth(1).expect("the export hook's fields").split(" }`").next().unwrap();
        assert_eq!(keys_of(&t), listed.split(", ").map(String::from).collect(), "an export hook's argument");
        // What a mo.lua's chunk has at load, named in one sentence.
        let sentence = readme.split("The chunk runs once at load").nth(1).expect("the mo.lua chunk's API").split("a budget of").next().unwrap();
        let listed = sentence.split("`xe.").skip(1).map(|n| n.split(['`', '(']).next().unwrap().to_string()).collect();
        let chunk = sandbox(&d.join("mo/o"), None, 1 << 20).unwrap();
        assert_eq!(keys_of(&chunk.xe), listed, "the xe table of a mo.lua chunk");
    }

    /// A fresh `mo/<object>` directory with this mo.conf and mo.lua; returns the base directory.
    fn object_dir(tag: &str, object: &str, conf: &str, lua: &str) -> TestDir {
        let d = TestDir::new(&format!("lua-{tag}"));
        std::fs::create_dir_all(d.join("mo").join(object)).unwrap();
        std::fs::write(d.join("mo").join(object).join("mo.conf"), conf).unwrap();
        std::fs::write(d.join("mo").join(object).join("mo.lua"), lua).unwrap();
        d
    }

    #[test]
    fn hooks_switch_extended_windows() {
        let d = object_dir(
            "ext",
            "victim",
            r#"{"fwm": [{"name": "ext", "extended": true, "fields": ["octets", "src host"]}],
                "mavg": [{"name": "m", "fields": ["dst host", "octets"],
                          "overlimit": [{"name": "l", "default": [1], "action-lua": "on", "back2norm-lua": "off"}]}]}"#,
            "function on(ev) assert(xe.ext('ext', true)) end\nfunction off(ev) assert(not xe.ext('victim/ext', false)) end\n",
        );
        let o = std::sync::Arc::new(objects::load(&d.join("mo"), &IpLists::new()).unwrap());
        let live = LiveObjects::new(o.clone());
        let mut hooks = LuaHooks::new(LuaConfig { objects: Some(live), ..Default::default() });
        let ext = o.window("victim", "ext").unwrap().clone();
        let event = |phase| Event {
            phase,
            mavg: o.mavgs[0].clone(),
            limit: 0,
            keys: vec!["10.0.0.9".into()],
            field: 0,
            value: 2.0,
            threshold: 1.0,
            time_ms: 0,
            start_ms: 0,
        };
        assert!(!ext.is_active());
        hooks.event(&event(Phase::Start), Path::new("/n"), &[]);
        assert!(ext.is_active(), "switched on by the start hook");
        hooks.event(&event(Phase::Back2Norm), Path::new("/n"), &[]);
        assert!(!ext.is_active(), "and off by the back-to-normal hook");
        assert_eq!(hooks.stats, LuaStats { calls: 2, ..LuaStats::default() });
    }

    #[test]
    fn a_changed_mo_lua_is_reloaded_keeping_xe_state() {
        let d = TestDir::new("lua-reload");
        std::fs::create_dir_all(d.join("mo/o")).unwrap();
        std::fs::write(
            d.join("mo/o/mo.conf"),
            r#"{"mavg": [{"name": "m", "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1], "action-lua": "on"}]}]}"#,
        )
        .unwrap();
        let write = |body: &str| {
            std::fs::write(d.join("mo/o/mo.lua"), body).unwrap();
            // A distinct modification time even on coarse file systems.
            let t = std::time::SystemTime::now() + std::time::Duration::from_secs(body.len() as u64);
            std::fs::File::options().write(true).open(d.join("mo/o/mo.lua")).unwrap().set_modified(t).unwrap();
        };
        write("function on(ev) xe.state.n = (xe.state.n or 0) + 1; xe.state.tag = {v = 'one'} end");
        let o = std::sync::Arc::new(objects::load(&d.join("mo"), &IpLists::new()).unwrap());
        let mut hooks = LuaHooks::new(LuaConfig::default());
        let ev = Event { phase: Phase::Start, mavg: o.mavgs[0].clone(), limit: 0, keys: vec!["k".into()], field: 0, value: 2.0, threshold: 1.0, time_ms: 0, start_ms: 0 };
        hooks.event(&ev, Path::new("/n"), &[]);
        hooks.event(&ev, Path::new("/n"), &[]);
        // The new version writes what it found in xe.state.
        write(&format!(
            "function on(ev) xe.write_file(xe.dir .. '/seen', tostring(xe.state.n) .. ' ' .. xe.state.tag.v) end -- v2 {}",
            "x".repeat(10)
        ));
        hooks.event(&ev, Path::new("/n"), &[]);
        assert_eq!(std::fs::read_to_string(d.join("mo/o/seen")).unwrap(), "2 one");
        assert_eq!(hooks.stats.errors, 0);
    }

    #[test]
    fn telegram_module_and_shell_script_name_the_silent_exporters_at_an_underlimit_start() {
        let msgs = TestDir::new("lua-tg-silent-messages");
        let shell = msgs.join("shell");
        std::fs::create_dir_all(&shell).unwrap();
        let d = object_dir(
            "tg-silent",
            "o",
            r#"{"mavg": [{"name": "m", "fields": ["dst host", "proto", "octets"], "underlimit": [{"name": "l", "default": [1000], "action-lua": "on"}]}]}"#,
            &format!("local tg = xe.module('telegram')\ntg.dir = '{}'\nfunction on(ev) tg.on_start(ev) end\n", msgs.display()),
        );
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let o = std::sync::Arc::new(objects::load_with(&d.join("mo"), &IpLists::new(), Some(&lib)).unwrap());
        let mut hooks = LuaHooks::new(LuaConfig { lib_dir: Some(lib), write_dirs: vec![msgs.to_path_buf()], ..Default::default() });
        let ev = Event { phase: Phase::Start, mavg: o.mavgs[0].clone(), limit: 0, keys: vec!["10.0.0.9".into(), "6".into()], field: 0, value: 0.0, threshold: 1000.0, time_ms: 0, start_ms: 0 };
        hooks.event(&ev, Path::new("/n/o-m-l-10.0.0.9-6"), &["192.0.2.2".into(), "192.0.2.3".into()]);
        assert_eq!(hooks.stats, LuaStats { calls: 1, ..LuaStats::default() });
        // The shell script, as the collector runs it for the same start.
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/telegram-bot/on-start.sh");
        let out = std::process::Command::new(script)
            .args(["o", "m", "l", "/n/o-m-l-10.0.0.9-6", "10.0.0.9", "6", "0", "1000"])
            .env("TELEMSG_DIR", &shell)
            .env("XENOEYE_KIND", "underlimit")
            .env("XENOEYE_SILENT_EXPORTERS", "192.0.2.2 192.0.2.3")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let read = |dir: &Path| {
            let text = std::fs::read_to_string(dir.join("o-m-l-10.0.0.9-6.n")).unwrap();
            let (what, rest) = (text.split_once(" at '<b>").unwrap().0.to_string(), text.split_once("</b>'").unwrap().1.to_string());
            format!("{what} at ...{rest}")
        };
        let want = "Underlimit detected at ..., object '<b>o</b>', IP <b>10.0.0.9</b>, proto <b>6</b>, BPS <b>0</b>, limit 8000 BPS, exporters silent: <b>192.0.2.2 192.0.2.3</b>";
        assert_eq!((read(&msgs), read(&shell)), (want.to_string(), want.to_string()));
    }

    #[test]
    fn notify_module_runs_the_program_with_the_action_script_argv() {
        let argv_dir = TestDir::new("lua-notify-argv");
        let out = argv_dir.join("argv.txt");
        let d = object_dir(
            "notify",
            "o",
            r#"{"mavg": [{"name": "m", "fields": ["dst host", "proto", "octets"], "overlimit": [{"name": "l", "default": [1], "action-lua": "on"}]}]}"#,
            &format!(
                "local n = xe.module('notify')\nn.program = '/bin/sh'\nfunction on(ev)\n  local argv = n.argv(ev)\n  assert(#argv == 9)\n  local code = xe.run({{'/bin/sh', '-c', 'echo \"$@\" > {}', table.unpack(argv)}}, 5)\n  assert(code == 0)\nend\n",
                out.display()
            ),
        );
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let o = std::sync::Arc::new(objects::load_with(&d.join("mo"), &IpLists::new(), Some(&lib)).unwrap());
        let mut hooks = LuaHooks::new(LuaConfig { lib_dir: Some(lib), ..Default::default() });
        let ev = Event { phase: Phase::Start, mavg: o.mavgs[0].clone(), limit: 0, keys: vec!["10.0.0.9".into(), "6".into()], field: 0, value: 1500.4, threshold: 1000.0, time_ms: 0, start_ms: 0 };
        hooks.event(&ev, Path::new("/n/o-m-l-10.0.0.9-6"), &[]);
        assert_eq!(hooks.stats, LuaStats { calls: 1, ..LuaStats::default() });
        // sh -c 'echo "$@"' sh PROGRAM ARGS...: $0 is the program, "$@" the action-script argv.
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "o m l /n/o-m-l-10.0.0.9-6 10.0.0.9 6 1500 1000\n");
    }
}
