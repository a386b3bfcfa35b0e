//! Loading monitoring objects: the guide's objects, nesting, names, and errors with positions.

use super::*;
use crate::fields::FieldId;
use crate::filter::iplist::load_dir;
use crate::testdir::TestDir;

/// The errors loading `d`/mo gives, as the collector prints them (it must fail).
fn load_errors(d: &Path) -> Vec<String> {
    let errs = load(&d.join("mo"), &IpLists::new()).unwrap_err();
    errs.iter().map(|e| e.to_string()).collect()
}

fn tree(tag: &str, files: &[(&str, &str)]) -> TestDir {
    let d = TestDir::new(&format!("mo-{tag}"));
    for (path, text) in files {
        let p = d.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    d
}

#[test]
fn guide_ingress_object_with_nested_child() {
    let d = tree(
        "guide",
        &[
            ("iplists/my-nets", "10.11.12.0/24\n"),
            (
                "mo/ingress/mo.conf",
                r#"{ "filter": "dst net my-nets", "debug": {"dump-flows": "none"},
                     "fwm": [ {"name": "all", "fields": ["packets", "octets"]},
                              {"name": "octets_by_src", "fields": ["octets desc", "src host"], "limit": 5, "time": 10},
                              {"extended": true, "name": "ext", "fields": ["octets", "src host", "dst host", "tcp-flags"]} ] }"#,
            ),
            ("mo/ingress/web/mo.conf", r#"{ "filter": "dst port 80 or 443", "fwm": [{"name": "by_dst", "fields": ["bits", "dst host"]}] }"#),
            ("mo/customers/acme/mo.conf", r#"{ "filter": "dst net 10.11.12.128/25" }"#),
        ],
    );
    let lists = load_dir(&d.join("iplists")).unwrap();
    let o = load(&d.join("mo"), &lists).unwrap();
    assert_eq!(o.count(), 3);
    let names: Vec<&str> = o.roots.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["customers/acme", "ingress"]);
    let ingress = &o.roots[1];
    assert_eq!(ingress.children[0].name, "ingress/web");
    let tables: Vec<&str> = o.windows.iter().map(|w| w.table.as_str()).collect();
    assert_eq!(tables, vec!["ingress_all", "ingress_octets_by_src", "ingress_ext", "ingress/web_by_dst".replace('/', "_").leak()]);
    let by_src = o.window("ingress", "octets_by_src").unwrap();
    assert_eq!((by_src.time, by_src.limit, by_src.keys.as_slice()), (10, Some(5), &[FieldId::SrcHost][..]));
    assert!(by_src.columns[0].desc);
    assert_eq!(by_src.columns[1].name, "src_host");
    assert_eq!(o.window("ingress", "all").unwrap().time, 30, "default window");
    let ext = o.window("ingress", "ext").unwrap();
    assert!(ext.extended && !ext.is_active());
    assert_eq!(ext.columns[3].name, "tcp_flags");
}

#[test]
fn create_index_and_a_zero_limit_take_the_originals_values() {
    let d = tree(
        "create-index",
        &[(
            "mo/o/mo.conf",
            r#"{ "fwm": [ {"name": "plain", "fields": ["octets"]}, {"name": "off", "fields": ["octets"], "create-index": "off"},
                          {"name": "no", "fields": ["octets"], "create-index": false}, {"name": "on", "fields": ["octets"], "create-index": "on"},
                          {"name": "top", "fields": ["octets desc", "src host"], "limit": 10}, {"name": "all", "fields": ["octets desc", "src host"], "limit": 0} ] }"#,
        )],
    );
    let o = load(&d.join("mo"), &IpLists::new()).unwrap();
    let index = |w: &str| o.window("o", w).unwrap().create_index;
    assert_eq!((index("plain"), index("off"), index("no"), index("on")), (true, false, false, true));
    // A limit of 0 is none, as in the original (not every row summed into the NULL one).
    assert_eq!((o.window("o", "top").unwrap().limit, o.window("o", "all").unwrap().limit), (Some(10), None));
    std::fs::write(d.join("mo/o/mo.conf"), r#"{ "fwm": [ {"name": "w", "fields": ["octets"], "create-index": 0} ] }"#).unwrap();
    assert_eq!(load_errors(&d), [format!("{}:1:64: 'fwm[0].create-index': expected true, false or \"off\", found a number", d.join("mo/o/mo.conf").display())]);
}

#[test]
fn zero_durations_and_unnamed_limits_are_taken_as_in_the_original() {
    let d = tree(
        "zero-durations",
        &[(
            "mo/o/mo.conf",
            r#"{ "fwm": [ {"name": "w", "fields": ["octets"], "time": 0} ],
                 "mavg": [ {"name": "m", "time": "0", "fields": ["dst host", "octets"],
                            "overlimit": [ {"name": "l", "default": [1], "back2norm-time": 0}, {"default": [2]} ] } ] }"#,
        )],
    );
    let o = load(&d.join("mo"), &IpLists::new()).unwrap();
    assert_eq!(o.window("o", "w").unwrap().time, 30);
    let m = &o.mavgs[0];
    assert_eq!((m.time_ms, m.limits[0].back2norm_ms), (5_000, 30_000));
    // A limit without a name is named by its place, as the original does.
    assert_eq!(m.limits.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["l", "1"]);
}

#[test]
fn errors_name_file_line_column_and_key() {
    let d = tree(
        "err",
        &[
            ("mo/a/mo.conf", "{\n  \"filter\": \"dst nett 1.2.3.4\"\n}"),
            ("mo/b/mo.conf", "{ \"fwm\": [ {\"name\": \"x\", \"fields\": [\"octets\", \"host\"]} ] }"),
            ("mo/c/mo.conf", "{ \"fwm\": [ {\"name\": \"x\", \"fields\": [\"proto\"]} ] }"),
            ("mo/e/mo.conf", "{ \"fwm\": [ {\"name\": \"x\", \"fields\": [\"octets\"], \"mem-m\": 0} ] }"),
            ("mo/f/mo.conf", "{ \"mavg\": [ {\"name\": \"m\", \"fields\": [\"dst host\", \"octets\"],\n  \"mem-m\": 0} ] }"),
            // Durations beyond a year (these overflowed the clock arithmetic).
            ("mo/g/mo.conf", r#"{"mavg": [{"name": "m", "fields": ["dst host", "octets"], "time": 18446744073709551615}]}"#),
            ("mo/h/mo.conf", r#"{"mavg": [{"name": "m", "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1], "back2norm-time": 99999999999}]}]}"#),
        ],
    );
    let text = load_errors(&d);
    // (A time of 0 is no error: the default, as in the original; see above.)
    assert_eq!(text.len(), 7, "{text:?}");
    assert!(text[3].contains("'fwm[0].mem-m': mem-m must be at least 1 (MiB)"), "{}", text[3]);
    assert!(text[4].ends_with("f/mo.conf:2:12: 'mavg[0].mem-m': mem-m must be at least 1 (MiB)"), "{}", text[4]);
    assert!(text[0].ends_with("a/mo.conf:2:18: 'filter': column 5: unknown field (at 'nett')"), "{}", text[0]);
    assert!(text[1].contains("'fwm[0].fields[1]': \"host\" needs \"src\" or \"dst\""), "{}", text[1]);
    assert!(text[2].contains("needs at least one of octets, packets, bits"), "{}", text[2]);
    assert!(text[5].ends_with("g/mo.conf:1:67: 'mavg[0].time': expected 1 to 31622400 seconds (a year), found 18446744073709551615"), "{}", text[5]);
    assert!(
        text[6].ends_with("'mavg[0].overlimit[0].back2norm-time': expected 1 to 31622400 seconds (a year), found 99999999999"),
        "{}",
        text[6]
    );
}

#[test]
fn names_that_would_share_files_and_fields_given_twice_are_errors() {
    let d = tree(
        "twice",
        &[(
            "mo/x/mo.conf",
            concat!(
                r#"{"mavg": [{"name": "m", "fields": ["dst host", "octets"]}, {"name": "m", "fields": ["src host", "packets"]},"#,
                "\n",
                r#"{"name": "n", "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1]}], "underlimit": [{"name": "l", "default": [1]}]},"#,
                "\n",
                r#"{"name": "p", "fields": ["octets", "bits", "Packets", "packets ", "dst host"]}]}"#
            ),
        )],
    );
    let text = load_errors(&d);
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(text[0].ends_with("x/mo.conf:1:60: 'mavg[1].name': moving average \"m\" defined twice"), "{}", text[0]);
    assert!(text[1].ends_with("x/mo.conf:2:110: 'mavg[2].underlimit[0].name': limit \"l\" defined twice in this moving average"), "{}", text[1]);
    // Four aggregable fields (two given twice) found no slot type and panicked at load.
    assert!(text[2].ends_with("x/mo.conf:3:55: 'mavg[3].fields[3]': \"packets\" given twice"), "{}", text[2]);
}

#[test]
fn moving_averages_are_the_same_with_one_or_two_workers() {
    use crate::decode::template::{FieldSpec, Template};
    let d = tree(
        "workers",
        &[("mo/o/mo.conf", r#"{"mavg": [{"name": "m", "time": 5, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [2000]}]}]}"#)],
    );
    let tpl = Template::compile(vec![FieldSpec { ie: 4, pen: 0, len: 1, field: None }], 0, false).unwrap();
    let rec = RecordView { version: 9, exporter: "192.0.2.1".parse().unwrap(), domain: 0, template_id: 256, template: &tpl, bytes: &[6] };
    let run = |workers: usize| {
        let o = load(&d.join("mo"), &IpLists::new()).unwrap();
        let mut ws: Vec<WorkerObjects> = (0..workers).map(|w| WorkerObjects::new(&o, w).unwrap()).collect();
        let mut x = 1u64;
        for i in 0..20_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut f = Flow::default();
            f.set(FieldId::DstHost, (x >> 60) as u128);
            f.set(FieldId::Octets, (x >> 50) as u128 % 1000);
            f.time_ms = 1_700_000_000_000 + i * 3;
            ws[(x >> 33) as usize % workers].flow(&f, &rec);
            // Each flow as its own datagram: every worker's clock ticks, applying what waits
            // in front of the moving average, so updates happen in time order as live.
            for w in &mut ws {
                w.advance(f.time_ms);
            }
        }
        for w in &mut ws {
            w.finish(); // applies the flows still waiting in front of the moving average
        }
        let m = &o.mavgs[0];
        (m.dump_text(1_700_000_060_000, "t"), m.stats.events.load(std::sync::atomic::Ordering::Relaxed))
    };
    let (one, one_events) = run(1);
    let (two, two_events) = run(2);
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&one), sorted(&two));
    assert!(one_events > 0);
    assert_eq!(one_events, two_events);
}

#[test]
fn reload_keeps_windows_that_stay_and_closes_removed_ones() {
    use crate::decode::template::{FieldSpec, Template};
    let d = tree(
        "switch",
        &[
            ("mo/a/mo.conf", r#"{"fwm": [{"name": "w", "fields": ["octets"], "time": 60}]}"#),
            ("mo/b/mo.conf", r#"{"fwm": [{"name": "w", "fields": ["octets"], "time": 60}]}"#),
            ("mo/d/mo.conf", r#"{"fwm": [{"name": "w", "fields": ["octets"], "time": 60}]}"#),
        ],
    );
    let tpl = Template::compile(vec![FieldSpec { ie: 4, pen: 0, len: 1, field: None }], 0, false).unwrap();
    let rec = RecordView { version: 9, exporter: "192.0.2.1".parse().unwrap(), domain: 0, template_id: 256, template: &tpl, bytes: &[6] };
    let mut f = Flow::default();
    f.set(FieldId::Octets, 100);
    let old = load(&d.join("mo"), &IpLists::new()).unwrap();
    let mut w = WorkerObjects::new(&old, 0).unwrap();
    w.advance(1_700_000_000_000);
    w.flow(&f, &rec);
    // b goes away, c arrives, d's window keeps its table but sums another field.
    std::fs::remove_dir_all(d.join("mo/b")).unwrap();
    std::fs::create_dir_all(d.join("mo/c")).unwrap();
    std::fs::write(d.join("mo/c/mo.conf"), r#"{"fwm": [{"name": "w", "fields": ["octets"], "time": 60}]}"#).unwrap();
    std::fs::write(d.join("mo/d/mo.conf"), r#"{"fwm": [{"name": "w", "fields": ["octets", "packets"], "time": 60}]}"#).unwrap();
    let new = load(&d.join("mo"), &IpLists::new()).unwrap();
    let closed = w.switch_to(&new).unwrap();
    let closed_rows: Vec<(String, u64)> =
        closed.into_iter().map(|mut c| (c.spec.table.clone(), c.rows.export_rows(&c.spec).iter().map(|r| r.1[0]).sum())).collect();
    assert_eq!(closed_rows, vec![("b_w".to_string(), 100), ("d_w".to_string(), 100)], "written out with their rows: removed, changed");
    w.advance(1_700_000_001_000);
    w.flow(&f, &rec);
    let mut totals: Vec<(String, u64)> =
        w.finish().into_iter().map(|mut c| (c.spec.table.clone(), c.rows.export_rows(&c.spec).iter().map(|r| r.1[0]).sum())).collect();
    totals.sort();
    assert_eq!(totals, vec![("a_w".to_string(), 200), ("c_w".to_string(), 100), ("d_w".to_string(), 100)], "a kept its rows across the reload; d started anew");
}

#[test]
fn a_sweep_of_a_big_table_is_spread_over_batches_and_ends_within_a_bound() {
    let d = tree("sweep", &[("mo/o/mo.conf", r#"{"mavg": [{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1000000]}]}]}"#)]);
    let o = load(&d.join("mo"), &IpLists::new()).unwrap();
    const T0: u64 = 1_700_000_000_000;
    let m = &o.mavgs[0];
    let mut f = Flow::default();
    for host in 0..200_000u32 {
        f.set(FieldId::DstHost, host as u128);
        f.set(FieldId::Octets, 100);
        m.update(&f, T0);
    }
    // 200,000 keys: a table of 2^19 slots, eight pieces of 2^16 (one per batch of datagrams).
    let keys = || m.stats.keys.load(Ordering::Relaxed);
    let batch = |now: u64| {
        let mut budget = 1 << 16;
        o.sweep_if_due(now, &mut budget); // a tick
        o.sweep_if_due(now, &mut budget); // more ticks of the batch: nothing left to sweep
        assert_eq!(budget, 0);
    };
    o.sweep_if_due(T0, &mut 1); // the first call only sets the schedule
    assert!(!o.sweeping.load(Ordering::Relaxed));
    let forget_all = T0 + 120_000; // the keys are idle past a minute: the sweep forgets them
    for piece in 1..=8 {
        batch(forget_all);
        // An eighth of the slots per piece: about an eighth of the keys (hashed evenly).
        let left = 200_000 - piece * 25_000;
        assert!(keys().abs_diff(left) < 2_000, "piece {piece}: {} keys left, about {left}", keys());
        assert_eq!(o.sweeping.load(Ordering::Relaxed), piece < 8, "piece {piece}");
    }
    assert_eq!(keys(), 0);
    assert_eq!(o.sweep_stats.passes.load(Ordering::Relaxed), 1);
    assert!(o.sweep_stats.last_us.load(Ordering::Relaxed) > 0);
    // The next sweep starts at the next second; with batches too few it ends at once when it
    // has been under way for half a second.
    for host in 0..200_000u32 {
        f.set(FieldId::DstHost, host as u128);
        m.update(&f, forget_all);
    }
    let later = forget_all + 120_000;
    batch(later);
    assert!(o.sweeping.load(Ordering::Relaxed) && keys() < 200_000);
    batch(later + 499);
    assert!(o.sweeping.load(Ordering::Relaxed), "still spread 499 ms in");
    o.sweep_if_due(later + 500, &mut 0);
    assert!(!o.sweeping.load(Ordering::Relaxed), "done 500 ms in, whatever the budget");
    assert_eq!(keys(), 0);
    assert_eq!(o.sweep_stats.passes.load(Ordering::Relaxed), 2);
}
