//! Reports from a real PostgreSQL filled by the collector: the gnuplot charts (non-empty PNGs
//! of the right size), every Grafana panel's SQL (runs and returns rows), protocol names.

mod common;

use common::{v9_frame, workdir, write_pcap, CraftedFlow, Db, Frame};
use std::path::{Path, PathBuf};
use std::process::Command;
use xenoeye::config::json::{self, Value};

const T0: u64 = 1_795_756_200_000; // ms, a multiple of 30 s

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// Ten minutes of traffic between our 192.0.2.0/24 and 30 external hosts, TCP/UDP/ICMP/GRE,
/// through the bundled objects, loaded into `db`.
fn fill(db: &Db, d: &Path) {
    let conf_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    assert!(Command::new("cp").arg("-r").arg(&conf_src).arg(d.join("conf")).status().unwrap().success());
    std::fs::write(d.join("conf/iplists/my-nets"), "192.0.2.0/24\n").unwrap();
    std::fs::create_dir_all(d.join("conf/mo/ingress_as")).unwrap();
    std::fs::write(d.join("conf/mo/ingress_as/mo.conf"), r#"{"filter": "dst net my-nets", "fwm": [{"name": "as", "fields": ["octets", "src as"]}]}"#).unwrap();
    std::fs::create_dir_all(d.join("run/exp")).unwrap();
    let mut frames: Vec<Frame> = Vec::new();
    let mut x = 7u64;
    for step in 0..120u64 {
        let mut flows = Vec::new();
        for _ in 0..20 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ext = [198, 51, 100, (x >> 59) as u8 % 30 + 1];
            let ours = [192, 0, 2, (x >> 40) as u8 % 50 + 1];
            let proto = [6u8, 6, 6, 17, 17, 1, 47][(x >> 20) as usize % 7];
            let (src, dst) = if x & 1 == 0 { (ext, ours) } else { (ours, ext) };
            flows.push(CraftedFlow { src, dst, proto, dport: 443, octets: 1000 + (x >> 50) as u32 % 100_000, packets: 10 });
        }
        frames.push(v9_frame(T0 + step * 5000, &flows));
    }
    write_pcap(&d.join("traffic.pcap"), &frames);
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye"))
        .arg("-c")
        .arg(d.join("conf/xenoeye.conf"))
        .arg("--read-pcap")
        .arg(d.join("traffic.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let load = |name: &str| {
        let out = Command::new(script(name))
            .env("EXP_DIR", d.join("run/exp"))
            .env("FAIL_DIR", d.join("run/expfailed"))
            .env("XENOEYE_DB", &db.url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    };
    load("fill-db.sh");
    load("iana-protocols.sh");
}

/// Width and height of a PNG file.
fn png_size(path: &Path) -> (u32, u32, usize) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    (w, h, b.len())
}

#[test]
fn charts_dashboards_and_protocol_names() {
    let d = workdir("reports");
    let db = Db::create("reports");
    fill(&db, &d);
    // IANA's registry as shipped: every number 0..=255 once, ranges expanded, no keyword = NULL.
    let rows = |sql: &str| db.query(sql).into_iter().map(|r| r.join("|")).collect::<Vec<_>>();
    assert_eq!(rows("select count(*), min(num), max(num), count(distinct num) from iana_protocols"), ["256|0|255|256"]);
    assert_eq!(
        rows("select num, coalesce(name, '-'), descr from iana_protocols where num in (0, 6, 17, 56, 61, 150) order by num"),
        [
            "0|HOPOPT|IPv6 Hop-by-Hop Option",
            "6|TCP|Transmission Control",
            "17|UDP|User Datagram",
            "56|TLSP|Transport Layer Security Protocol using Kryptonet key management",
            "61|-|any host internal protocol",
            "150|-|Unassigned",
        ]
    );

    let from = "2026-11-27 00:00:00+00";
    let to = "2026-11-28 00:00:00+00";
    for (chart, table) in [("traffic", "ingress_all"), ("proto", "ingress_proto"), ("ip", "ingress_octets_by_src"), ("ip", "egress_by_src")] {
        let png = d.join(format!("{chart}-{table}.png"));
        let out = Command::new(script("mkchart-gnuplot.sh"))
            .args([chart, table])
            .arg(&png)
            .args([from, to])
            .env("XENOEYE_DB", &db.url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{chart} {table}: {}", String::from_utf8_lossy(&out.stderr));
        let (w, h, len) = png_size(&png);
        assert_eq!((w, h), (1000, 400), "{chart}");
        assert!(len > 4000, "{chart} {table}: a drawn chart, not an empty frame ({len} bytes)");
    }

    // The matplotlib scripts (Debian's python3-matplotlib, hence /usr/bin/python3).
    for (name, table, size) in [
        ("mkchart-matplotlib-donut-prot.py", "ingress_proto", (800, 600)),
        ("mkchart-matplotlib-donut-as.py", "ingress_as_as", (800, 600)),
        ("mkchart-matplotlib-ts.py", "ingress_all", (1000, 400)),
        ("mkchart-matplotlib-ts-ip.py", "ingress_octets_by_src", (1000, 400)),
    ] {
        let png = d.join(format!("{name}.png"));
        let out = Command::new("/usr/bin/python3")
            .arg(script(name))
            .arg(table)
            .arg(&png)
            .args([from, to])
            .env("XENOEYE_DB", &db.url)
            .env("AGG", "60")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let (w, h, len) = png_size(&png);
        assert_eq!((w, h), size, "{name}");
        assert!(len > 10_000, "{name}: {len} bytes");
    }

    // Every Grafana panel's SQL runs against the filled database and returns rows.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/grafana/dashboards");
    let mut panels = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let root = json::parse_file(&path).unwrap();
        for p in root.get("panels").unwrap().as_array(&path, "panels").unwrap() {
            for t in p.get("targets").unwrap().as_array(&path, "targets").unwrap() {
                let Value::String(sql) = &t.get("rawSql").unwrap().value else { panic!() };
                let sql = sql.replace("$__timeFilter(t.time)", &format!("t.time >= '{from}' and t.time < '{to}'"));
                let sql = sql.replace("$__timeFilter(time)", &format!("time >= '{from}' and time < '{to}'"));
                let rows = db.query(&sql);
                assert!(rows.len() >= 10, "{}: {} rows", path.display(), rows.len());
                panels += 1;
            }
        }
    }
    assert_eq!(panels, 10);
    // The top-N query of the dashboards keeps the total: top addresses plus "Other".
    let dashboard = std::fs::read_to_string(dir.join("ingress.json")).unwrap();
    assert!(dashboard.contains("'Other'"));

    // xe_rep(): the top 5 sources plus 'Other' per window, summing to the window's total.
    let sql = std::fs::read_to_string(script("sql/xe_rep.sql")).unwrap();
    common::psql(&db.url, &sql);
    let rep = db.query(&format!(
        "select extract(epoch from tm)::bigint, name, val from xe_rep('ingress_octets_by_src', 'host(src_host)', 'octets', '*8/10', $$ time >= '{from}' and time < '{to}' $$, 5)"
    ));
    let names: std::collections::BTreeSet<&str> = rep.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names.len(), 6, "five sources and Other: {names:?}");
    assert!(names.contains("Other"));
    let totals = db.query(&format!(
        "select extract(epoch from time)::bigint, (sum(octets)*8/10)::bigint from ingress_octets_by_src where time >= '{from}' and time < '{to}' group by 1 order by 1"
    ));
    for t in &totals {
        let sum: i64 = rep.iter().filter(|r| r[0] == t[0]).map(|r| r[2].parse::<i64>().unwrap()).sum();
        let want: i64 = t[1].parse().unwrap();
        assert!((sum - want).abs() <= 6, "window {}: {sum} vs {want} (rounding per name)", t[0]);
    }
    if std::env::var_os("XE_KEEP_CHARTS").is_none() {
    }
}
