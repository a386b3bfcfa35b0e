//! The filter language of monitoring objects (BPF-like), compiled once per object.
//!
//! Grammar (keywords are case-insensitive; `and` binds tighter than `or`):
//!
//! ```text
//! expr      := term ("or" term)*
//! term      := factor ("and" factor)*
//! factor    := "not" factor | "(" expr ")" | primitive
//! primitive := ["src" | "dst"] FIELD value ("or" value)*
//! value     := address | network a/n | IP-list name | integer | lo-hi | protocol name | MAC
//! ```
//!
//! `dst port 80 or 443` is one primitive with a value list: after a primitive, `or` followed by
//! something that is not a field, keyword or parenthesis continues the list. A field without
//! `src`/`dst` matches either side. Every value becomes a set of ranges, so a compiled test is
//! "is this slot present and inside this range set": no parsing, string comparison or
//! allocation per flow.

pub mod index;
pub mod iplist;
pub mod ranges;

use crate::fields::{self, FieldId, Kind};
use crate::flow::Flow;
use iplist::{parse_network, IpLists};
use ranges::RangeSet;
use std::fmt;
use std::sync::Arc;

/// A compiled filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// The empty filter: every flow.
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// True when one of the fields is present and its value is in the set.
    Test { fields: Vec<FieldId>, set: Arc<RangeSet> },
}

impl Filter {
    #[inline]
    pub fn matches(&self, flow: &Flow) -> bool {
        match self {
            Filter::All => true,
            Filter::And(v) => v.iter().all(|f| f.matches(flow)),
            Filter::Or(v) => v.iter().any(|f| f.matches(flow)),
            Filter::Not(f) => !f.matches(flow),
            Filter::Test { fields, set } => fields.iter().any(|&id| flow.get(id).is_some_and(|v| set.contains(v))),
        }
    }
}

/// A syntax or meaning error, with the 1-based column in the filter text and the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub col: usize,
    pub token: String,
    pub msg: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(f, "column {}: {}", self.col, self.msg)
        } else {
            write!(f, "column {}: {} (at '{}')", self.col, self.msg, self.token)
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    text: String,
    col: usize,
}

fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (col, ch) in (1..).zip(s.chars()) {
        if ch.is_whitespace() || ch == '(' || ch == ')' {
            if !cur.is_empty() {
                out.push(Token { text: std::mem::take(&mut cur), col: start });
            }
            if ch != ' ' && !ch.is_whitespace() {
                out.push(Token { text: ch.to_string(), col });
            }
        } else {
            if cur.is_empty() {
                start = col;
            }
            cur.push(ch);
        }
    }
    if !cur.is_empty() {
        out.push(Token { text: cur, col: start });
    }
    out
}

/// Compiles a filter; `lists` resolves IP-list names.
pub fn compile(text: &str, lists: &IpLists) -> Result<Filter, FilterError> {
    let tokens = tokenize(text);
    if tokens.is_empty() {
        return Ok(Filter::All);
    }
    let mut p = Parser { t: tokens, pos: 0, lists, end_col: text.chars().count() + 1, depth: 0 };
    let f = p.expr()?;
    if let Some(t) = p.peek() {
        return Err(p.error_at(t, "unexpected token (a missing 'and'/'or'?)"));
    }
    Ok(f)
}

struct Parser<'a> {
    t: Vec<Token>,
    pos: usize,
    lists: &'a IpLists,
    end_col: usize,
    /// Parentheses and `not`s open at the current token.
    depth: usize,
}

/// How deeply parentheses and `not`s may nest (the parser and the matching recurse that deep).
const MAX_DEPTH: usize = 100;

fn is_kw(t: &Token, kw: &str) -> bool {
    t.text.eq_ignore_ascii_case(kw)
}

/// Field names usable in filters (the table's names), for telling values from fields.
fn is_field_name(word: &str) -> bool {
    !fields::lookup(word).is_empty()
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.t.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.t.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error_at(&self, t: &Token, msg: &str) -> FilterError {
        FilterError { col: t.col, token: t.text.clone(), msg: msg.to_string() }
    }

    fn error_end(&self, msg: &str) -> FilterError {
        FilterError { col: self.end_col, token: String::new(), msg: msg.to_string() }
    }

    fn expr(&mut self) -> Result<Filter, FilterError> {
        let mut terms = vec![self.term()?];
        while self.peek().is_some_and(|t| is_kw(t, "or")) {
            self.next();
            terms.push(self.term()?);
        }
        Ok(if terms.len() == 1 { terms.pop().unwrap_or(Filter::All) } else { Filter::Or(terms) })
    }

    fn term(&mut self) -> Result<Filter, FilterError> {
        let mut factors = vec![self.factor()?];
        while self.peek().is_some_and(|t| is_kw(t, "and")) {
            self.next();
            factors.push(self.factor()?);
        }
        Ok(if factors.len() == 1 { factors.pop().unwrap_or(Filter::All) } else { Filter::And(factors) })
    }

    fn factor(&mut self) -> Result<Filter, FilterError> {
        let Some(t) = self.next() else { return Err(self.error_end("unexpected end of filter")) };
        if !is_kw(&t, "not") && t.text != "(" {
            return self.primitive(t);
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(&t, &format!("nested too deeply (more than {MAX_DEPTH} levels of parentheses and 'not')")));
        }
        let nested = if is_kw(&t, "not") { self.factor().map(|f| Filter::Not(Box::new(f))) } else { self.parenthesized() };
        self.depth -= 1;
        nested
    }

    /// What follows an opening parenthesis, up to and with its closing one.
    fn parenthesized(&mut self) -> Result<Filter, FilterError> {
        let inner = self.expr()?;
        match self.next() {
            Some(c) if c.text == ")" => Ok(inner),
            Some(c) => Err(self.error_at(&c, "expected ')'")),
            None => Err(self.error_end("missing ')'")),
        }
    }

    fn primitive(&mut self, first: Token) -> Result<Filter, FilterError> {
        let (side, name_tok) = if is_kw(&first, "src") || is_kw(&first, "dst") {
            let Some(n) = self.next() else { return Err(self.error_end("expected a field name")) };
            (Some(first.text.to_ascii_lowercase()), n)
        } else {
            (None, first)
        };
        let name = match &side {
            Some(s) => format!("{s} {}", name_tok.text),
            None => name_tok.text.clone(),
        };
        let ids = fields::lookup(&name);
        if ids.is_empty() {
            let msg = if is_field_name(&name_tok.text) { "this field has no src/dst side" } else { "unknown field" };
            return Err(self.error_at(&name_tok, msg));
        }
        let mut ranges = Vec::new();
        let Some(v) = self.next() else { return Err(self.error_end("expected a value")) };
        self.value(&v, ids[0], &mut ranges)?;
        // A value list: "or" followed by a value, not by a new primitive.
        while self.peek().is_some_and(|t| is_kw(t, "or")) {
            let Some(after) = self.t.get(self.pos + 1).cloned() else { break };
            let starts_primitive = after.text == "("
                || ["not", "src", "dst", "and", "or"].iter().any(|k| is_kw(&after, k))
                || is_field_name(&after.text);
            if starts_primitive || after.text == ")" {
                break;
            }
            self.next();
            let v = self.next().unwrap_or(after);
            self.value(&v, ids[0], &mut ranges)?;
        }
        Ok(Filter::Test { fields: ids, set: Arc::new(RangeSet::new(ranges)) })
    }

    /// Adds the ranges a value token stands for, read as of the field's kind.
    fn value(&self, t: &Token, field: FieldId, out: &mut Vec<(u128, u128)>) -> Result<(), FilterError> {
        match field.def().kind {
            kind @ (Kind::Ipv4 | Kind::Ipv6 | Kind::Addr) => self.address_value(t, kind, out),
            Kind::Mac => {
                let v = crate::flow::parse_mac(&t.text).ok_or_else(|| self.error_at(t, "not a MAC address"))?;
                out.push((v, v));
                Ok(())
            }
            Kind::Uint | Kind::Counter => {
                out.push(self.number_value(t, field)?);
                Ok(())
            }
        }
    }

    /// An address, a network or an IP list's networks (of the IP version the field holds).
    fn address_value(&self, t: &Token, kind: Kind, out: &mut Vec<(u128, u128)>) -> Result<(), FilterError> {
        let text = t.text.as_str();
        if let Some((v6, lo, hi)) = parse_network(text) {
            out.push(match (kind, v6) {
                (Kind::Ipv4, false) | (Kind::Ipv6, true) | (Kind::Addr, true) => (lo, hi),
                (Kind::Addr, false) => (lo | V4_MAPPED, hi | V4_MAPPED),
                (Kind::Ipv4, true) => return Err(self.error_at(t, "an IPv6 network for an IPv4 field (use net6/host6)")),
                _ => return Err(self.error_at(t, "an IPv4 network for an IPv6 field (use net/host)")),
            });
            return Ok(());
        }
        let Some(list) = self.lists.get(text) else {
            return Err(self.error_at(t, "not an address, network or IP list name"));
        };
        match kind {
            Kind::Ipv4 => out.extend_from_slice(list.v4.ranges()),
            Kind::Ipv6 => out.extend_from_slice(list.v6.ranges()),
            _ => {
                out.extend(list.v4.ranges().iter().map(|&(lo, hi)| (lo | V4_MAPPED, hi | V4_MAPPED)));
                out.extend_from_slice(list.v6.ranges());
            }
        }
        Ok(())
    }

    /// A number, a range `low-high`, or (for `proto`) a protocol name.
    fn number_value(&self, t: &Token, field: FieldId) -> Result<(u128, u128), FilterError> {
        let text = t.text.as_str();
        if let Some(p) = protocol_number(text).filter(|_| field == FieldId::Proto) {
            return Ok((p, p));
        }
        let (lo, hi) = match text.split_once('-') {
            Some((a, b)) => (parse_int(a), parse_int(b)),
            None => (parse_int(text), parse_int(text)),
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
            (Some(_), Some(_)) => Err(self.error_at(t, "empty range (low end above high end)")),
            _ => Err(self.error_at(t, "not a number or range")),
        }
    }
}

/// `::ffff:0:0/96`: how IPv4 addresses are stored in the `dev-ip` slot.
const V4_MAPPED: u128 = 0xFFFF_0000_0000;

fn parse_int(s: &str) -> Option<u128> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u128::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Protocol names accepted for `proto` (IANA numbers).
fn protocol_number(name: &str) -> Option<u128> {
    const NAMES: &[(&str, u128)] = &[
        ("icmp", 1), ("igmp", 2), ("tcp", 6), ("udp", 17), ("gre", 47), ("esp", 50), ("ah", 51),
        ("icmp6", 58), ("ipv6-icmp", 58), ("ospf", 89), ("sctp", 132),
    ];
    NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests;
