//! JSON with comments, keeping the line and column of every value and key.
//!
//! The original collector's configs are JSON with `//` and `/* */` comments (and often a trailing
//! comma). A general-purpose parser loses positions once the text is parsed, but an operator's
//! error message must point at the line, column and key that is wrong, also for errors found
//! after parsing ("port must be a number"). So configs are parsed into this small tree of
//! positioned nodes, and the typed accessors below turn a wrong value into a [`ConfigError`].

use std::fmt;
use std::path::{Path, PathBuf};

/// A value with its position (1-based line and column).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u32,
    pub col: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A number, kept as written (integers stay exact).
    Number(String),
    String(String),
    Array(Vec<Node>),
    /// Members in file order (duplicate keys: the last one wins on lookup).
    Object(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: u32,
    pub col: u32,
}

impl Key {
    /// An error (or warning) at this key, which is `name` under the key path `path`.
    pub fn error(&self, file: &Path, path: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_path_buf(), line: self.line, col: self.col, key: key_path(path, &self.name), msg: msg.into() }
    }
}

/// A configuration error: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 0 where there is no position: a file that cannot be read, a value of a `mo.lua`
    /// table (shown as `file: ...` then, with the key path).
    pub line: u32,
    pub col: u32,
    /// Key path such as `capture[0].socket.port`; empty for syntax errors.
    pub key: String,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "'{}': ", self.key)?;
        }
        write!(f, "{}", self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a whole document.
pub fn parse(text: &str, file: &Path) -> Result<Node, ConfigError> {
    let mut p = Parser { s: text.as_bytes(), pos: 0, line: 1, col: 1, file, depth: 0 };
    p.skip_ws()?;
    let node = p.value()?;
    p.skip_ws()?;
    if p.pos < p.s.len() {
        return Err(p.err("unexpected text after the end of the document"));
    }
    Ok(node)
}

/// Reads and parses a file.
pub fn parse_file(file: &Path) -> Result<Node, ConfigError> {
    let text = crate::fsutil::read_input_text(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: 0,
        col: 0,
        key: String::new(),
        msg: format!("cannot read: {e}"),
    })?;
    parse(&text, file)
}

const MAX_DEPTH: u32 = 128;

/// The longest duration a configuration may give (see [`Node::as_seconds`]).
pub const MAX_SECONDS: u64 = 366 * 86400;

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: u32,
    col: u32,
    file: &'a Path,
    depth: u32,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), line: self.line, col: self.col, key: String::new(), msg: msg.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            self.col += 1; // count characters, not UTF-8 continuation bytes
        }
        Some(c)
    }

    fn skip_ws(&mut self) -> Result<(), ConfigError> {
        loop {
            match (self.peek(), self.s.get(self.pos + 1).copied()) {
                (Some(b' ' | b'\t' | b'\n' | b'\r'), _) => {
                    self.bump();
                }
                (Some(b'/'), Some(b'/')) => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.bump();
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.err("unterminated comment");
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(start),
                            Some(b'*') if self.peek() == Some(b'/') => {
                                self.bump();
                                break;
                            }
                            _ => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self) -> Result<Node, ConfigError> {
        let (line, col) = (self.line, self.col);
        let value = match self.peek() {
            None => return Err(self.err("unexpected end of file")),
            Some(b'{') => self.nested(Self::object)?,
            Some(b'[') => self.nested(Self::array)?,
            Some(b'"' | b'\'') => Value::String(self.string()?),
            Some(b'-' | b'+' | b'0'..=b'9' | b'.') => Value::Number(self.number()?),
            Some(c) if c.is_ascii_alphabetic() => match self.word().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                w => return Err(ConfigError { line, col, ..self.err(format!("unexpected word '{w}'")) }),
            },
            Some(c) => return Err(self.err(format!("unexpected character '{}'", c as char))),
        };
        Ok(Node { value, line, col })
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Value, ConfigError>) -> Result<Value, ConfigError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
            self.bump();
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn number(&mut self) -> Result<String, ConfigError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')) {
            self.bump();
        }
        let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
        if text.parse::<f64>().is_err() {
            return Err(self.err(format!("bad number '{text}'")));
        }
        Ok(text)
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        let quote = self.bump().unwrap_or(b'"');
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None | Some(b'\n') => return Err(self.err("unterminated string")),
                Some(c) if c == quote => break,
                Some(b'\\') => match self.bump() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'b') => out.push(8),
                    Some(b'f') => out.push(12),
                    Some(b'u') => {
                        let hex: String = (0..4).filter_map(|_| self.bump().map(|c| c as char)).collect();
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.err(format!("bad escape \\u{hex}")))?;
                        out.extend(ch.to_string().as_bytes());
                    }
                    Some(c) => out.push(c),
                    None => return Err(self.err("unterminated string")),
                },
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn array(&mut self) -> Result<Value, ConfigError> {
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_ws()?;
            if self.peek() == Some(b']') {
                self.bump();
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b']') => {}
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self) -> Result<Value, ConfigError> {
        self.bump();
        let mut members = Vec::new();
        loop {
            self.skip_ws()?;
            let (line, col) = (self.line, self.col);
            let name = match self.peek() {
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Object(members));
                }
                Some(b'"' | b'\'') => self.string()?,
                Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.word(),
                _ => return Err(self.err("expected a key in quotes or '}'")),
            };
            self.skip_ws()?;
            if self.bump() != Some(b':') {
                return Err(self.err(format!("expected ':' after key \"{name}\"")));
            }
            self.skip_ws()?;
            let v = self.value()?;
            members.push((Key { name, line, col }, v));
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b'}') => {}
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }
}

/// Typed access to nodes, producing errors that name the file, position and key path.
impl Node {
    pub fn error(&self, file: &Path, key: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_path_buf(), line: self.line, col: self.col, key: key.to_string(), msg: msg.into() }
    }

    /// Member of an object (the last one when a key is repeated).
    pub fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            Value::Object(m) => m.iter().rev().find(|(k, _)| k.name == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Object members in order.
    pub fn members(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Object(m) => m,
            _ => &[],
        }
    }

    pub fn as_str(&self, file: &Path, key: &str) -> Result<&str, ConfigError> {
        match &self.value {
            Value::String(s) => Ok(s),
            _ => Err(self.error(file, key, format!("expected a string, found {}", self.kind()))),
        }
    }

    /// A non-negative integer, written as a number or as a string of digits.
    pub fn as_u64(&self, file: &Path, key: &str) -> Result<u64, ConfigError> {
        let text = match &self.value {
            Value::Number(n) => n.as_str(),
            Value::String(s) => s.trim(),
            _ => return Err(self.error(file, key, format!("expected a number, found {}", self.kind()))),
        };
        text.parse::<u64>()
            .map_err(|_| self.error(file, key, format!("expected a non-negative integer, found \"{text}\"")))
    }

    /// A duration in whole seconds, from `min` up to a year (larger ones are mistakes, and
    /// would overflow the clock arithmetic).
    pub fn as_seconds(&self, file: &Path, key: &str, min: u64) -> Result<u64, ConfigError> {
        let secs = self.as_u64(file, key)?;
        if secs < min || secs > MAX_SECONDS {
            return Err(self.error(file, key, format!("expected {min} to {MAX_SECONDS} seconds (a year), found {secs}")));
        }
        Ok(secs)
    }

    /// This object's duration `name` (see [`Node::as_seconds`]), `default` when absent;
    /// `key` names it in an error.
    pub fn seconds_or(&self, name: &str, file: &Path, key: &str, min: u64, default: u64) -> Result<u64, ConfigError> {
        self.get(name).map_or(Ok(default), |n| n.as_seconds(file, key, min))
    }

    /// This object's memory bound `name` in MiB (at least 1), `default` when absent; `key`
    /// names it in an error.
    pub fn mib_or(&self, name: &str, file: &Path, key: &str, default: u64) -> Result<u64, ConfigError> {
        let Some(n) = self.get(name) else { return Ok(default) };
        match n.as_u64(file, key)? {
            0 => Err(n.error(file, key, format!("{name} must be at least 1 (MiB)"))),
            mib => Ok(mib),
        }
    }

    pub fn as_bool(&self, file: &Path, key: &str) -> Result<bool, ConfigError> {
        match &self.value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            _ => Err(self.error(file, key, format!("expected true or false, found {}", self.kind()))),
        }
    }

    pub fn as_array(&self, file: &Path, key: &str) -> Result<&[Node], ConfigError> {
        match &self.value {
            Value::Array(a) => Ok(a),
            _ => Err(self.error(file, key, format!("expected an array, found {}", self.kind()))),
        }
    }

    pub fn expect_object(&self, file: &Path, key: &str) -> Result<&[(Key, Node)], ConfigError> {
        match &self.value {
            Value::Object(m) => Ok(m),
            _ => Err(self.error(file, key, format!("expected an object, found {}", self.kind()))),
        }
    }

    /// The members of this object that `known` does not list, each as a warning naming its
    /// position and key path (`path` is the object's: `mavg[0].overlimit[1]`, empty at the
    /// top), with the known key it most likely misspells. An unknown key is ignored, so the
    /// original's configurations with keys this version does not read keep working; but a
    /// misspelt one would leave its setting at the default unseen (an alert without its
    /// action script).
    pub fn unknown_keys(&self, file: &Path, path: &str, known: &[&str]) -> Vec<ConfigError> {
        self.members()
            .iter()
            .filter(|(k, _)| !known.contains(&k.name.as_str()))
            .map(|(k, _)| match closest(&k.name, known) {
                Some(c) => k.error(file, path, format!("unknown key, ignored (did you mean '{c}'?)")),
                None => k.error(file, path, "unknown key, ignored"),
            })
            .collect()
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// `name` under the key path `path` (which may be empty).
fn key_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The key of `known` that `name` most likely misspells: the same but for case and `_` for
/// `-`, else the nearest within two edits (one for short keys).
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let plain = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    if let Some(k) = known.iter().find(|k| plain(k) == plain(name)) {
        return Some(k);
    }
    let most = if name.len() <= 4 { 1 } else { 2 };
    known.iter().map(|k| (edit_distance(&plain(name), k), *k)).filter(|&(d, _)| d <= most).min_by_key(|&(d, _)| d).map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions, substitutions) between two keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Node, ConfigError> {
        parse(s, Path::new("t.conf"))
    }

    #[test]
    fn comments_trailing_commas_and_positions() {
        let n = p("{\n  /* c */ \"a\": 1, // x\n  \"b\": [\"x\", 'y',],\n}").unwrap();
        let a = n.get("a").unwrap();
        assert_eq!((a.line, a.col), (2, 16));
        assert_eq!(a.as_u64(Path::new("t"), "a").unwrap(), 1);
        let b = n.get("b").unwrap().as_array(Path::new("t"), "b").unwrap();
        assert_eq!(b[1].value, Value::String("y".into()));
    }

    #[test]
    fn numbers_as_strings() {
        let n = p(r#"{"port": "2055", "bad": "20x"}"#).unwrap();
        assert_eq!(n.get("port").unwrap().as_u64(Path::new("f"), "port"), Ok(2055));
        let e = n.get("bad").unwrap().as_u64(Path::new("f"), "bad").unwrap_err();
        assert_eq!(e.to_string(), "f:1:25: 'bad': expected a non-negative integer, found \"20x\"");
    }

    #[test]
    fn unknown_keys_are_named_with_their_likely_meaning() {
        let n = p("{\"name\": \"l1\",\n \"back2norm_time\": 5, \"action-scrpt\": \"a\", \"tim\": 1, \"colour\": 2}").unwrap();
        let known = ["name", "back2norm-time", "action-script", "back2norm-script", "time"];
        let text: Vec<String> = n.unknown_keys(Path::new("mo.conf"), "mavg[0].overlimit[0]", &known).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            [
                "mo.conf:2:2: 'mavg[0].overlimit[0].back2norm_time': unknown key, ignored (did you mean 'back2norm-time'?)",
                "mo.conf:2:23: 'mavg[0].overlimit[0].action-scrpt': unknown key, ignored (did you mean 'action-script'?)",
                "mo.conf:2:44: 'mavg[0].overlimit[0].tim': unknown key, ignored (did you mean 'time'?)",
                "mo.conf:2:54: 'mavg[0].overlimit[0].colour': unknown key, ignored",
            ]
        );
        assert!(p("{\"name\": 1}").unwrap().unknown_keys(Path::new("f"), "", &known).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("Time", &known), Some("time"));
        assert_eq!(closest("name2", &known), Some("name"));
        assert_eq!(closest("nme", &["name", "time"]), Some("name"));
        assert_eq!(closest("xyz", &known), None);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = p("{\n \"a\": 1\n \"b\": 2}").unwrap_err();
        assert_eq!((e.line, e.col), (3, 2));
        let e = p("{\"a\": tru}").unwrap_err();
        assert_eq!((e.line, e.col, e.msg.as_str()), (1, 7, "unexpected word 'tru'"));
        assert!(p("/* open").is_err());
        assert!(p(&"[".repeat(1000)).is_err());
    }
}
