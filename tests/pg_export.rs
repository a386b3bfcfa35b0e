//! End to end against a real PostgreSQL (started by scripts/test.sh, URL in XE_TEST_PG_URL):
//! softflowd's NetFlow v9 export of traffic.pcap, replayed as two rounds 40 seconds apart, goes
//! through ingress/egress objects into export files; scripts/fill-db.sh and the batch script
//! load them; the guide's reports must equal traffic.truth.json exactly.

mod common;

use common::{data_dir, psql, read_frames, workdir, write_pcap, Db, Frame};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use xenoeye::config::json::{self, Value};

const T0: u32 = 1_795_755_180; // a multiple of 30: rounds land in windows T0 and T0 + 30

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// The flows of traffic.truth.json: (src, dst, dport, proto, bytes, packets, ipv6).
fn truth() -> Vec<(String, String, u64, u64, u64, u64, bool)> {
    let path = data_dir().join("exporters/traffic.truth.json");
    let root = json::parse_file(&path).unwrap();
    let flows = root.get("flows").unwrap().as_array(&path, "").unwrap();
    flows
        .iter()
        .map(|f| {
            let s = |k: &str| match &f.get(k).unwrap().value {
                Value::String(s) | Value::Number(s) => s.clone(),
                v => panic!("{v:?}"),
            };
            let n = |k: &str| s(k).parse::<u64>().unwrap();
            (s("src"), s("dst"), n("dport"), n("proto"), n("bytes"), n("packets"), n("ipver") == 6)
        })
        .collect()
}

fn mine(addr: &str) -> bool {
    addr.starts_with("192.0.2.") || addr.starts_with("2001:db8:1:")
}

/// A collector setup with the guide's ingress/egress/ssh_scanners objects for our networks.
fn setup(dir: &Path) -> PathBuf {
    for sub in ["mo/ingress", "mo/egress", "mo/ssh_scanners", "iplists", "exp", "expfailed"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("iplists/my-nets"), "# our networks\n192.0.2.0/24\n2001:db8:1::/48\n").unwrap();
    std::fs::write(
        dir.join("mo/ingress/mo.conf"),
        r#"{ "filter": "dst net my-nets or dst net6 my-nets",
             "fwm": [ {"name": "all", "fields": ["packets", "octets"]},
                      {"name": "by_dst", "fields": ["packets", "octets", "dst host"]},
                      {"name": "proto", "fields": ["packets", "octets", "proto"]},
                      {"name": "octets_by_src", "fields": ["octets desc", "src host"], "limit": 5} ] }"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("mo/egress/mo.conf"),
        r#"{ "filter": "src net my-nets or src net6 my-nets",
             "fwm": [ {"name": "all", "fields": ["packets", "octets"]},
                      {"name": "by_src", "fields": ["packets", "octets", "src host"]},
                      {"name": "by_proto", "fields": ["packets", "octets", "proto"]} ] }"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("mo/ssh_scanners/mo.conf"),
        r#"{ "filter": "src net my-nets and dst port 22",
             "fwm": [ {"name": "hosts", "fields": ["packets", "src host", "dst host", "proto"]} ] }"#,
    )
    .unwrap();
    std::fs::write(dir.join("devices.conf"), "[]").unwrap();
    let conf = dir.join("xenoeye.conf");
    std::fs::write(
        &conf,
        r#"{ "capture": [ {"socket": {"listen-on": "127.0.0.1", "port": 2055}} ],
             "templates": {"db": "templates.tkvdb"}, "devices": "devices.conf",
             "mo-dir": "mo", "iplists-dir": "iplists", "export-dir": "exp" }"#,
    )
    .unwrap();
    conf
}

/// softflowd's v9 export, sent twice: at T0 + 1 and T0 + 41 (two 30-second windows).
fn two_rounds(dir: &Path) -> PathBuf {
    let frames = read_frames(&data_dir().join("exporters/softflowd-v9.pcap"));
    let mut out = Vec::new();
    for (round, t) in [T0 + 1, T0 + 41].into_iter().enumerate() {
        for (i, f) in frames.iter().enumerate() {
            out.push(Frame { sec: t, usec: (round * 100 + i) as u32, data: f.data.clone() });
        }
    }
    let p = dir.join("two-rounds.pcap");
    write_pcap(&p, &out);
    p
}

fn replay(conf: &Path, capture: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(conf).arg("--read-pcap").arg(capture).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn load(db: &Db, dir: &Path, script_name: &str) {
    let out = Command::new(script(script_name))
        .env("EXP_DIR", dir.join("exp"))
        .env("FAIL_DIR", dir.join("expfailed"))
        .env("XENOEYE_DB", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script_name}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(dir.join("exp")).unwrap().count(), 0, "every export file loaded");
    assert_eq!(std::fs::read_dir(dir.join("expfailed")).unwrap().count(), 0, "nothing failed");
}

fn sums(rows: impl Iterator<Item = (String, u64)>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (k, v) in rows {
        *m.entry(k).or_insert(0) += v;
    }
    m
}

#[test]
fn reports_from_postgresql_equal_the_truth() {
    let dir = workdir("pg");
    let conf = setup(&dir);
    let db = Db::create("reports");
    replay(&conf, &two_rounds(&dir));
    let files: Vec<String> = std::fs::read_dir(dir.join("exp")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.contains(&format!("egress_all_{T0}.sql")) && files.contains(&format!("egress_all_{}.sql", T0 + 30)), "{files:?}");
    assert_eq!(files.len(), 2 * 8, "8 windows with rows, two windows each: {files:?}");
    load(&db, &dir, "fill-db.sh");

    let truth = truth();
    let ingress: Vec<_> = truth.iter().filter(|t| mine(&t.1)).collect();
    let egress: Vec<_> = truth.iter().filter(|t| mine(&t.0)).collect();

    // Totals per window (capture clock): each round in its own window.
    let rows = db.query("select extract(epoch from time)::bigint, sum(octets), sum(packets) from egress_all group by 1 order by 1");
    let (eo, ep): (u64, u64) = (egress.iter().map(|t| t.4).sum(), egress.iter().map(|t| t.5).sum());
    assert_eq!(rows, vec![vec![T0.to_string(), eo.to_string(), ep.to_string()], vec![(T0 + 30).to_string(), eo.to_string(), ep.to_string()]]);

    // The guide's per-host report: sums per destination host (IPv6 flows have no IPv4 host: NULL).
    let got = sums(db.query("select coalesce(host(dst_host), 'v6'), sum(octets) from ingress_by_dst group by 1").into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())));
    let want = sums(ingress.iter().map(|t| (if t.6 { "v6".to_string() } else { t.1.clone() }, 2 * t.4)));
    assert_eq!(got, want);

    // Per protocol.
    let got = sums(db.query("select proto, sum(octets) from egress_by_proto group by proto").into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())));
    let want = sums(egress.iter().map(|t| (t.3.to_string(), 2 * t.4)));
    assert_eq!(got, want);

    // Top 5 sources plus the NULL row equal the total, in every window.
    for r in db.query("select extract(epoch from time)::bigint, count(*), count(src_host), sum(octets) from ingress_octets_by_src group by 1") {
        let total: u64 = ingress.iter().map(|t| t.4).sum();
        assert_eq!((r[1].as_str(), r[2].as_str(), r[3].parse::<u64>().unwrap()), ("6", "5", total), "window {}", r[0]);
    }
    let top = db.query("select host(src_host), octets from ingress_octets_by_src where src_host is not null order by time, octets desc limit 5");
    let mut per_src = sums(ingress.iter().filter(|t| !t.6).map(|t| (t.0.clone(), t.4))).into_iter().collect::<Vec<_>>();
    per_src.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(top.iter().map(|r| r[1].parse::<u64>().unwrap()).collect::<Vec<_>>(), per_src.iter().take(5).map(|p| p.1).collect::<Vec<_>>());

    // The guide's ssh-scanners query.
    let scanners = db.query(
        "select host(src_host), count(src_host) from (select distinct src_host, dst_host from ssh_scanners_hosts \
         order by src_host desc) as x group by src_host order by count desc, 1",
    );
    let mut want: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for t in egress.iter().filter(|t| t.2 == 22 && !t.6) {
        want.entry(t.0.clone()).or_default().insert(t.1.clone());
    }
    let mut want: Vec<Vec<String>> = want.into_iter().map(|(s, d)| vec![s, d.len().to_string()]).collect();
    want.sort_by(|a, b| b[1].cmp(&a[1]).then(a[0].cmp(&b[0])));
    assert!(!want.is_empty());
    assert_eq!(scanners, want);

    // Loading again adds nothing twice.
    let before = db.query("select sum(octets) from ingress_all");
    load(&db, &dir, "fill-db.sh");
    assert_eq!(db.query("select sum(octets) from ingress_all"), before);

    // The batch script loads a new round in one transaction.
    replay(&conf, &two_rounds(&dir));
    load(&db, &dir, "xe-dbexport-pg.sh");
    let after: u64 = db.query("select sum(octets) from ingress_all")[0][0].parse().unwrap();
    assert_eq!(after, 2 * before[0][0].parse::<u64>().unwrap());
}

#[test]
fn a_file_that_fails_to_load_moves_to_the_fail_directory_whole() {
    let dir = workdir("pgfail");
    let conf = setup(&dir);
    let db = Db::create("fail");
    replay(&conf, &two_rounds(&dir));
    // Sabotage one file: the table exists with an incompatible column.
    psql(&db.url, "create table egress_all (time timestamptz, packets inet, octets bigint)");
    let out = Command::new(script("fill-db.sh"))
        .env("EXP_DIR", dir.join("exp"))
        .env("FAIL_DIR", dir.join("expfailed"))
        .env("XENOEYE_DB", &db.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let failed: Vec<_> = std::fs::read_dir(dir.join("expfailed")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(failed.len(), 2, "both egress_all windows failed: {failed:?}");
    assert_eq!(db.query("select count(*) from egress_all"), vec![vec!["0".to_string()]], "nothing half-loaded");
    assert!(!db.query("select count(*) from ingress_all").is_empty());
}
