//! Filter tests: each grammar rule and field kind, the guide's examples, and a differential
//! test against a direct reference evaluator on random filters and flows.

use super::*;
use crate::testrand::XorShift;
use crate::flow::addr_to_u128;
use iplist::IpList;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn lists() -> IpLists {
    let mut l = IpLists::new();
    let set = |v: &[(u128, u128)]| RangeSet::new(v.to_vec());
    let net4 = |s: &str| parse_network(s).map(|(_, lo, hi)| (lo, hi)).unwrap();
    l.insert(
        "bogon".into(),
        Arc::new(IpList { v4: set(&[net4("10.0.0.0/8"), net4("192.168.0.0/16")]), v6: set(&[net4("fc00::/7")]) }),
    );
    l.insert("my-nets".into(), Arc::new(IpList { v4: set(&[net4("1.2.3.0/24"), net4("1.2.4.0/24")]), v6: set(&[]) }));
    l.insert("mail-servers".into(), Arc::new(IpList { v4: set(&[net4("1.2.3.25/32")]), v6: set(&[]) }));
    l
}

fn v4(s: &str) -> u128 {
    u32::from(s.parse::<Ipv4Addr>().unwrap()) as u128
}

fn flow(src: &str, dst: &str, proto: u128, sport: u128, dport: u128) -> Flow {
    let mut f = Flow::default();
    f.set(FieldId::SrcHost, v4(src));
    f.set(FieldId::DstHost, v4(dst));
    f.set(FieldId::Proto, proto);
    f.set(FieldId::SrcPort, sport);
    f.set(FieldId::DstPort, dport);
    f.set(FieldId::DevIp, addr_to_u128("1.2.3.4".parse().unwrap()));
    f
}

fn m(filter: &str, f: &Flow) -> bool {
    compile(filter, &lists()).unwrap_or_else(|e| panic!("{filter}: {e}")).matches(f)
}

#[test]
fn guide_examples() {
    let f = flow("10.11.12.5", "8.8.8.8", 6, 40000, 443);
    assert!(m("src net 10.11.12.0/24 or 10.11.13.0/24 and proto tcp and dst port 80 or 443", &f));
    assert!(!m("src net 10.11.12.0/24 or 10.11.13.0/24 and proto tcp and dst port 80 or 8080", &f));
    assert!(m("dst net 8.8.8.0/24", &f));
    assert!(m("net bogon", &f), "either side");
    assert!(!m("src net bogon and dst net bogon", &f));
    assert!(m("src net bogon and dst net bogon", &flow("10.0.0.1", "192.168.1.1", 6, 1, 2)));
    assert!(m("dst net 8.8.8.8 and dev-ip 1.2.3.4", &f));
    assert!(!m("dst net 8.8.8.8 and dev-ip 1.2.3.5", &f));
    let spam = "src net my-nets and not src net mail-servers and dst port 25 or 587 or 465 or 2525";
    assert!(m(spam, &flow("1.2.3.7", "9.9.9.9", 6, 3333, 587)));
    assert!(!m(spam, &flow("1.2.3.25", "9.9.9.9", 6, 3333, 587)), "real mail server");
    assert!(!m(spam, &flow("1.2.3.7", "9.9.9.9", 6, 3333, 80)));
    let mut g = flow("5.5.5.5", "6.6.6.6", 17, 53, 53);
    g.set(FieldId::DstAs, 12345);
    assert!(m("dst as 12345 and not (dst host 1.2.3.4 or 2.3.4.5 or 3.4.5.6)", &g));
    g.set(FieldId::DstHost, v4("2.3.4.5"));
    assert!(!m("dst as 12345 and not (dst host 1.2.3.4 or 2.3.4.5 or 3.4.5.6)", &g));
}

#[test]
fn ipv6_fields_and_absent_fields() {
    let mut f = Flow::default();
    f.set(FieldId::SrcHost6, u128::from("fd00::1".parse::<Ipv6Addr>().unwrap()));
    f.set(FieldId::DstHost6, u128::from("2001:db8::1".parse::<Ipv6Addr>().unwrap()));
    assert!(m("src net6 bogon", &f));
    assert!(!m("src net6 bogon and dst net6 bogon", &f));
    assert!(m("dst host6 2001:db8::1", &f));
    assert!(m("net6 2001:db8::/32", &f));
    assert!(!m("net 0.0.0.0/0", &f), "an IPv4 field is absent on an IPv6 flow");
    assert!(m("not net 0.0.0.0/0", &f));
}

#[test]
fn precedence_not_and_parentheses() {
    let f = flow("1.1.1.1", "2.2.2.2", 17, 1, 2);
    assert!(m("proto tcp or proto udp and src port 1", &f));
    assert!(m("proto udp or proto tcp and src port 9", &f), "and binds tighter");
    assert!(!m("(proto udp or proto tcp) and src port 9", &f));
    assert!(m("not not proto udp", &f));
    assert!(m("NOT proto tcp AND Proto UDP", &f), "keywords are case-insensitive");
    assert!(m("", &f));
    assert!(m("   ", &f));
}

#[test]
fn integer_kinds_ranges_and_lists() {
    let mut f = flow("1.1.1.1", "2.2.2.2", 6, 1024, 8080);
    f.set(FieldId::TcpFlags, 0x12);
    f.set(FieldId::SrcMac, 0x000c29708609);
    assert!(m("dst port 8000-8999", &f));
    assert!(!m("dst port 1-1023", &f));
    assert!(m("port 1024", &f));
    assert!(m("tcp-flags 0x12", &f));
    assert!(m("proto 1 or 6 or 17", &f));
    assert!(m("src mac 00:0c:29:70:86:09", &f));
    assert!(!m("dst mac 00:0c:29:70:86:09", &f));
    // The counters and the sampling rate (as the decoder leaves them: scaled, and applied).
    f.set(FieldId::Octets, 52_000);
    f.set(FieldId::Packets, 40);
    f.set(FieldId::Rate, 1000);
    assert!(m("octets 0-99999 and packets 40", &f));
    assert!(!m("octets 100000-999999999", &f));
    assert!(m("rate 1000 and not rate 1", &f));
}

#[test]
fn errors_name_column_and_token() {
    let e = |s: &str| compile(s, &lists()).unwrap_err();
    assert_eq!(e("dst nett 1.2.3.4"), FilterError { col: 5, token: "nett".into(), msg: "unknown field".into() });
    assert_eq!(e("dst net nosuchlist").token, "nosuchlist");
    assert_eq!(e("dst net 1.2.3.4/33").col, 9);
    assert_eq!(e("(proto tcp").msg, "missing ')'");
    assert_eq!(e("proto tcp port 80").token, "port");
    assert_eq!(e("dst port 90-80").msg, "empty range (low end above high end)");
    assert_eq!(e("src proto 6").msg, "this field has no src/dst side");
    assert_eq!(e("dst net 2001:db8::/32").token, "2001:db8::/32");
    assert_eq!(e("proto").msg, "expected a value");
    assert_eq!(e("port tcp").token, "tcp", "protocol names only for proto");
    // Nesting is bounded (a filter of 100,000 parentheses overflowed the stack) and columns
    // are counted in characters.
    let deep = format!("{}proto 6{}", "(".repeat(100_000), ")".repeat(100_000));
    let msg = "nested too deeply (more than 100 levels of parentheses and 'not')";
    assert_eq!(e(&deep), FilterError { col: 101, token: "(".into(), msg: msg.into() });
    assert_eq!(e(&format!("proto 6 and {}port 80", "not ".repeat(200))), FilterError { col: 13 + 4 * 100, token: "not".into(), msg: msg.into() });
    let ok = format!("{}proto 6{}", "(".repeat(50), ")".repeat(50));
    assert!(compile(&format!("{}{ok}", "not ".repeat(50)), &lists()).is_ok());
    assert_eq!(e("proto 6 and port é").col, 18);
}

/// A random filter, kept as structure for the reference evaluator.
#[derive(Debug)]
enum Ref {
    Prim { side: Option<bool>, field: RefField, values: Vec<String> },
    And(Vec<Ref>),
    Or(Vec<Ref>),
    Not(Box<Ref>),
}

#[derive(Debug, Clone, Copy)]
enum RefField {
    Net,
    Port,
    Proto,
}

struct Gen(XorShift);

impl Gen {
    fn pick(&mut self, n: u64) -> u64 {
        self.0.next() % n
    }

    fn value(&mut self, f: RefField) -> String {
        match f {
            RefField::Net => {
                let a = [10, 192, 1][self.pick(3) as usize];
                match self.pick(4) {
                    0 => "bogon".into(),
                    1 => "my-nets".into(),
                    2 => format!("{a}.{}.0.0/{}", self.pick(3), 8 + self.pick(17)),
                    _ => format!("{a}.{}.{}.{}", self.pick(3), self.pick(3), self.pick(3)),
                }
            }
            RefField::Port => match self.pick(2) {
                0 => self.pick(6).to_string(),
                _ => {
                    let lo = self.pick(6);
                    format!("{lo}-{}", lo + self.pick(3))
                }
            },
            RefField::Proto => ["tcp", "udp", "6", "17", "1"][self.pick(5) as usize].into(),
        }
    }

    fn filter(&mut self, depth: u32) -> Ref {
        match if depth == 0 { 0 } else { self.pick(5) } {
            0 | 1 => {
                let field = [RefField::Net, RefField::Port, RefField::Proto][self.pick(3) as usize];
                let side = match (field, self.pick(3)) {
                    (RefField::Proto, _) => None,
                    (_, 0) => None,
                    (_, 1) => Some(true),
                    _ => Some(false),
                };
                let n = 1 + self.pick(3) as usize;
                Ref::Prim { side, field, values: (0..n).map(|_| self.value(field)).collect() }
            }
            2 => Ref::And((0..2 + self.pick(2)).map(|_| self.filter(depth - 1)).collect()),
            3 => Ref::Or((0..2 + self.pick(2)).map(|_| self.filter(depth - 1)).collect()),
            _ => Ref::Not(Box::new(self.filter(depth - 1))),
        }
    }
}

/// Renders a filter with explicit parentheses around every compound.
fn render(r: &Ref) -> String {
    match r {
        Ref::Prim { side, field, values } => {
            let side = match side {
                None => "",
                Some(true) => "src ",
                Some(false) => "dst ",
            };
            let name = match field {
                RefField::Net => "net",
                RefField::Port => "port",
                RefField::Proto => "proto",
            };
            format!("{side}{name} {}", values.join(" or "))
        }
        Ref::And(v) => format!("({})", v.iter().map(render).collect::<Vec<_>>().join(" and ")),
        Ref::Or(v) => format!("({})", v.iter().map(render).collect::<Vec<_>>().join(" or ")),
        Ref::Not(f) => format!("not {}", render(f)),
    }
}

/// The reference: evaluates the structure directly, parsing values with the standard library.
fn reference(r: &Ref, f: &RefFlow) -> bool {
    match r {
        Ref::And(v) => v.iter().all(|x| reference(x, f)),
        Ref::Or(v) => v.iter().any(|x| reference(x, f)),
        Ref::Not(x) => !reference(x, f),
        Ref::Prim { side, field, values } => {
            let sides: Vec<bool> = match side {
                None => vec![true, false],
                Some(s) => vec![*s],
            };
            sides.iter().any(|&src| {
                values.iter().any(|v| match field {
                    RefField::Net => {
                        let addr = if src { f.src } else { f.dst };
                        net_contains(v, addr)
                    }
                    RefField::Port => {
                        let port = if src { f.sport } else { f.dport };
                        match v.split_once('-') {
                            Some((a, b)) => a.parse::<u16>().unwrap() <= port && port <= b.parse::<u16>().unwrap(),
                            None => v.parse::<u16>().unwrap() == port,
                        }
                    }
                    RefField::Proto => {
                        let p = match v.as_str() {
                            "tcp" => 6,
                            "udp" => 17,
                            n => n.parse().unwrap(),
                        };
                        p == f.proto
                    }
                })
            })
        }
    }
}

fn net_contains(v: &str, addr: Ipv4Addr) -> bool {
    let lists: &[(&str, &[&str])] = &[("bogon", &["10.0.0.0/8", "192.168.0.0/16"]), ("my-nets", &["1.2.3.0/24", "1.2.4.0/24"])];
    if let Some((_, nets)) = lists.iter().find(|(n, _)| *n == v) {
        return nets.iter().any(|n| net_contains(n, addr));
    }
    let (a, len) = v.split_once('/').unwrap_or((v, "32"));
    let (a, len): (Ipv4Addr, u32) = (a.parse().unwrap(), len.parse().unwrap());
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a) & mask == u32::from(addr) & mask
}

struct RefFlow {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    proto: u8,
}

#[test]
fn compiled_filter_agrees_with_reference_evaluator() {
    let mut g = Gen(XorShift(7));
    let lists = lists();
    let mut matched = 0;
    for _ in 0..3000 {
        let r = g.filter(3);
        let text = render(&r);
        let compiled = compile(&text, &lists).unwrap_or_else(|e| panic!("{text}: {e}"));
        for _ in 0..30 {
            let a = |g: &mut Gen| Ipv4Addr::new([10, 192, 1][g.pick(3) as usize], g.pick(3) as u8, g.pick(3) as u8, g.pick(3) as u8);
            let rf = RefFlow {
                src: a(&mut g),
                dst: a(&mut g),
                sport: g.pick(8) as u16,
                dport: g.pick(8) as u16,
                proto: [6, 17, 1][g.pick(3) as usize],
            };
            let mut f = Flow::default();
            f.set(FieldId::SrcHost, u32::from(rf.src) as u128);
            f.set(FieldId::DstHost, u32::from(rf.dst) as u128);
            f.set(FieldId::SrcPort, rf.sport as u128);
            f.set(FieldId::DstPort, rf.dport as u128);
            f.set(FieldId::Proto, rf.proto as u128);
            let want = reference(&r, &rf);
            assert_eq!(compiled.matches(&f), want, "{text} on {}->{} {}:{} {}", rf.src, rf.dst, rf.sport, rf.dport, rf.proto);
            matched += want as u32;
        }
    }
    assert!(matched > 10_000 && matched < 80_000, "both outcomes exercised: {matched}");
}

#[test]
fn dev_ip_accepts_v4_and_v6() {
    let mut f = Flow::default();
    f.set(FieldId::DevIp, addr_to_u128(IpAddr::V6("2001:db8::9".parse().unwrap())));
    assert!(m("dev-ip 2001:db8::/64", &f));
    assert!(!m("dev-ip 1.2.3.4", &f));
}
