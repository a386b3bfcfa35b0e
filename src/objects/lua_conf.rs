//! Monitoring objects defined in Lua: a `mo.lua` that returns a table is the object's
//! configuration, with the same keys as `mo.conf`, plus `children` (name -> configuration) for
//! nested objects made in code — e.g. one child per line of a customers file.
//!
//! The chunk runs once at load in a sandbox (no `io`, `os`, `load`...; an instruction budget,
//! so a loop cannot hang start-up; a memory limit), with `xe.log`, `xe.dir` and
//! `xe.read_lines(path)` (files of the object's directory only). Its result is turned into the
//! same configuration tree a `mo.conf` gives, so both are validated by one code path; a Lua
//! error is reported like a configuration error, with the file and line.

use crate::config::json::{Key, Node, Value as JValue};
use crate::config::ConfigError;
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const INSTRUCTIONS: u64 = 50_000_000;
const MEMORY: usize = 256 << 20;

fn error(file: &Path, line: u32, msg: String) -> ConfigError {
    ConfigError { file: file.to_path_buf(), line, col: 0, key: String::new(), msg }
}

/// Runs `<dir>/mo.lua`; returns the configuration it returns (`None` when it returns nothing,
/// i.e. it only defines hook functions).
pub fn evaluate(dir: &Path, lib_dir: Option<&Path>) -> Result<Option<Node>, ConfigError> {
    let file = dir.join("mo.lua");
    let code = crate::fsutil::read_input_text(&file).map_err(|e| error(&file, 0, format!("cannot read: {e}")))?;
    let sb = sandbox(dir, lib_dir, MEMORY).map_err(|e| error(&file, 0, e.to_string()))?;
    sb.budget.set(INSTRUCTIONS);
    let value: Value = sb.lua.load(code).set_name(format!("@{}", file.display())).eval().map_err(|e| {
        let text = e.to_string();
        // Lua reports "@path:LINE: message"; keep the line for the error position.
        let line = text
            .split(&format!("{}:", file.display()))
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        error(&file, line, text)
    })?;
    match value {
        Value::Nil => Ok(None),
        Value::Table(_) => ToNode { file: &file, values: 0, path: Vec::new() }.node(&value).map(Some),
        other => Err(error(&file, 0, format!("mo.lua must return a table (the configuration) or nothing, not a {}", other.type_name()))),
    }
}

/// A sandboxed Lua 5.4 state, shared by the configuration stage and the hooks.
pub struct Sandbox {
    pub lua: Lua,
    /// Instructions the running chunk or call may still execute.
    pub budget: Rc<Cell<u64>>,
    /// The `xe` table (`dir`, `log`, `read_lines`, `module`); the hooks add to it.
    pub xe: Table,
}

/// How often (in VM instructions) the budget is checked.
const CHECK_EVERY: u64 = 1000;

/// A state without `io`, `os`, `package`, `debug`, `load*`, `dofile`, `require` or
/// `collectgarbage`, with a memory limit and an instruction budget (set `budget` before each
/// chunk or call), and the `xe` functions every mo.lua may use.
pub fn sandbox(dir: &Path, lib_dir: Option<&Path>, max_memory: usize) -> mlua::Result<Sandbox> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let g = lua.globals();
    for name in ["load", "loadfile", "dofile", "require", "collectgarbage"] {
        g.set(name, Value::Nil)?;
    }
    let xe = lua.create_table()?;
    xe.set("dir", dir.display().to_string())?;
    let shown = dir.display().to_string();
    xe.set("log", lua.create_function(move |_, msg: String| {
        crate::log::info(&format!("lua {shown}: {msg}"));
        Ok(())
    })?)?;
    xe.set("read_lines", read_lines(&lua, dir)?)?;
    xe.set("module", module_loader(&lua, lib_dir.map(Path::to_path_buf))?)?;
    g.set("xe", xe.clone())?;
    lua.set_memory_limit(max_memory)?;
    let budget = Rc::new(Cell::new(0u64));
    let left = budget.clone();
    lua.set_hook(HookTriggers::new().every_nth_instruction(CHECK_EVERY as u32), move |_, _| {
        if left.get() < CHECK_EVERY {
            return Err(mlua::Error::runtime("instruction limit reached (a loop in mo.lua?)"));
        }
        left.set(left.get() - CHECK_EVERY);
        Ok(VmState::Continue)
    })?;
    Ok(Sandbox { lua, budget, xe })
}

/// `xe.module(name)`: runs `<lib-dir>/<name>.lua` of the bundled library once in this state
/// (the sandbox has no `require`) and returns what it returns.
pub fn module_loader(lua: &Lua, lib_dir: Option<PathBuf>) -> mlua::Result<mlua::Function> {
    let loaded = lua.create_table()?;
    lua.create_function(move |lua, name: String| {
        if let Ok(v) = loaded.get::<Value>(name.as_str()) {
            if !v.is_nil() {
                return Ok(v);
            }
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(mlua::Error::runtime(format!("bad module name {name}")));
        }
        let dir = lib_dir.as_ref().ok_or_else(|| mlua::Error::runtime("no Lua library directory (lua.lib-dir)"))?;
        let path = dir.join(format!("{name}.lua"));
        let code = crate::fsutil::read_input_text(&path).map_err(|e| mlua::Error::runtime(format!("{}: {e}", path.display())))?;
        let v: Value = lua.load(code).set_name(format!("@{}", path.display())).eval()?;
        loaded.set(name.as_str(), v.clone())?;
        Ok(v)
    })
}

/// `xe.read_lines(path)`: the lines of a file of the object's directory (relative paths are
/// taken from it). Shared with the hooks' states, which run the same mo.lua.
pub fn read_lines(lua: &Lua, dir: &Path) -> mlua::Result<mlua::Function> {
    let base = dir.to_path_buf();
    lua.create_function(move |_, path: String| {
        let p = if Path::new(&path).is_absolute() { std::path::PathBuf::from(&path) } else { base.join(&path) };
        if !p.starts_with(&base) || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(mlua::Error::runtime(format!("{path}: only files of the object's directory can be read")));
        }
        let text = crate::fsutil::read_input_text(&p).map_err(|e| mlua::Error::runtime(format!("{path}: {e}")))?;
        Ok(text.lines().map(String::from).collect::<Vec<_>>())
    })
}

/// Most values a configuration returned by mo.lua may hold. One table placed twice at every
/// level of a few dozen counts as billions of values: without a bound, their conversion would
/// hang the start or a reload.
const MAX_VALUES: usize = 2_000_000;
/// Deepest nesting of a returned configuration.
const MAX_NESTING: usize = 64;

/// Turns a Lua value into a configuration node: sequences become arrays, other tables objects.
struct ToNode<'a> {
    file: &'a Path,
    /// Values converted so far.
    values: usize,
    /// The tables from the top to the one being converted (a table met again on this path
    /// holds itself).
    path: Vec<*const std::ffi::c_void>,
}

impl ToNode<'_> {
    fn node(&mut self, v: &Value) -> Result<Node, ConfigError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(error(self.file, 0, format!("the configuration holds more than {MAX_VALUES} values (one table placed in it many times over?)")));
        }
        let value = match v {
            Value::Nil => JValue::Null,
            Value::Boolean(b) => JValue::Bool(*b),
            Value::Integer(i) => JValue::Number(i.to_string()),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => JValue::Number((*n as i64).to_string()),
            Value::Number(n) => JValue::Number(n.to_string()),
            Value::String(s) => JValue::String(s.to_str().map_err(|_| error(self.file, 0, "string is not UTF-8".into()))?.to_string()),
            Value::Table(t) => {
                if self.path.contains(&t.to_pointer()) {
                    return Err(error(self.file, 0, "a table of the configuration holds itself".into()));
                }
                if self.path.len() >= MAX_NESTING {
                    return Err(error(self.file, 0, "configuration nested too deep".into()));
                }
                self.path.push(t.to_pointer());
                let value = self.table(t)?;
                self.path.pop();
                value
            }
            other => return Err(error(self.file, 0, format!("a {} cannot be part of a configuration", other.type_name()))),
        };
        Ok(Node { value, line: 0, col: 0 })
    }

    fn table(&mut self, t: &Table) -> Result<JValue, ConfigError> {
        let file = self.file;
        let len = t.raw_len();
        let pairs: Vec<(Value, Value)> = t.clone().pairs::<Value, Value>().collect::<mlua::Result<_>>().map_err(|e| error(file, 0, e.to_string()))?;
        if len > 0 && pairs.len() == len {
            let mut items = Vec::with_capacity(len);
            for i in 1..=len {
                let item: Value = t.raw_get(i).map_err(|e| error(file, 0, e.to_string()))?;
                items.push(self.node(&item)?);
            }
            return Ok(JValue::Array(items));
        }
        let mut members = Vec::new();
        for (k, val) in pairs {
            let name = match k {
                Value::String(s) => s.to_str().map(|s| s.to_string()).unwrap_or_default(),
                Value::Integer(i) => i.to_string(),
                other => return Err(error(file, 0, format!("a configuration key must be a string, not a {}", other.type_name()))),
            };
            members.push((Key { name, line: 0, col: 0 }, self.node(&val)?));
        }
        // Lua tables have no order: sort keys so loading is reproducible.
        members.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(JValue::Object(members))
    }
}
