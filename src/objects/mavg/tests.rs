//! Moving averages with an injected clock: the formula, crossings on the exact flow,
//! back-to-normal timing, underlimits, limits files, the memory bound.

use super::*;
use crate::config::json;
use crate::flow::Flow;
use crate::objects::rows::NESTED_MARK;
use crate::testdir::TestDir;
use crate::testrand::xorshift;
use std::sync::mpsc::{sync_channel, Receiver};

fn mavg(conf: &str, dir: &Path) -> (Arc<Mavg>, Receiver<Event>) {
    let file = dir.join("mo.conf");
    let node = json::parse(conf, &file).unwrap();
    let m = Arc::new(parse(&file, "obj", dir, &node, 0).unwrap());
    let (tx, rx) = sync_channel(1000);
    m.set_events(Some(tx));
    (m, rx)
}

fn tmp(tag: &str) -> TestDir {
    TestDir::new(&format!("mavg-{tag}"))
}

fn flow(dst: u32, octets: u128) -> Flow {
    let mut f = Flow::default();
    f.set(FieldId::DstHost, dst as u128);
    f.set(FieldId::Proto, 6);
    f.set(FieldId::Octets, octets);
    f.set(FieldId::Packets, 1);
    f
}

/// `f` without its protocol.
fn flow_without_proto(f: &Flow) -> Flow {
    let mut out = Flow::default();
    for id in [FieldId::DstHost, FieldId::Octets, FieldId::Packets] {
        out.set(id, f.stored_value(id as usize));
    }
    out
}

fn events(rx: &Receiver<Event>) -> Vec<(Phase, Vec<String>, u64, u64)> {
    rx.try_iter().map(|e| (e.phase, e.keys.clone(), e.value.round() as u64, e.time_ms)).collect()
}

const T0: u64 = 1_700_000_000_000;

/// A 1-second average of octets per destination host, over 1000 B/s for 5 s of back2norm.
fn level1_over_1000(tag: &str) -> (Arc<Mavg>, Receiver<Event>, TestDir) {
    let conf = r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"],
        "overlimit": [{"name": "level1", "default": [1000], "back2norm-time": 5}]}"#;
    let d = tmp(tag);
    let (m, rx) = mavg(conf, &d);
    (m, rx, d)
}

#[test]
fn formula_matches_direct_computation() {
    let d = tmp("formula");
    let (m, _rx) = mavg(r#"{"name": "m", "time": 10, "fields": ["dst host", "octets", "packets"]}"#, &d);
    // Direct: N = N - dt/T*N + V, rate = N/T.
    let mut n = 0f64;
    let mut last = T0;
    for (i, (dt, v)) in [(0u64, 1000u128), (500, 2000), (2500, 300), (9000, 50), (12_000, 7000), (1, 1)].iter().enumerate() {
        let now = last + dt;
        let dtf = (now - last) as f64;
        n = if i > 0 && dtf >= 10_000.0 { *v as f64 } else { n - dtf / 10_000.0 * n + *v as f64 };
        last = now;
        m.update(&flow(1, *v), now);
    }
    let dump = m.dump_text(last, "t");
    let rate = (n / 10.0).round() as u64;
    assert!(dump.contains(&format!(" '0.0.0.1'  :: {rate} (")), "{dump} / {rate}");
}

#[test]
fn a_flow_behind_the_rows_time_adds_without_decay_and_keeps_the_time() {
    // Workers' clocks differ a little: a flow stamped before the row's last update.
    let d = tmp("behind");
    let (m, _rx) = mavg(r#"{"name": "m", "time": 10, "fields": ["dst host", "octets"]}"#, &d);
    m.update(&flow(1, 1000), T0 + 1000);
    m.update(&flow(1, 500), T0 + 800); // no decay: 1500
    m.update(&flow(1, 0), T0 + 2000); // decays from T0 + 1000: 1500 - 1000/10000 * 1500 = 1350
    let dump = m.dump_text(T0 + 2000, "t");
    assert!(dump.contains(" '0.0.0.1'  :: 135 ("), "{dump}");
}

#[test]
fn overlimit_on_the_exact_flow_and_back2norm_after_quiet_time() {
    let (m, rx, _d) = level1_over_1000("over");
    m.update(&flow(7, 600), T0);
    m.update(&flow(7, 300), T0 + 100); // 600*0.9 + 300 = 840 B/s: under
    assert!(events(&rx).is_empty());
    m.update(&flow(7, 200), T0 + 200); // 840*0.9 + 200 = 956: under
    assert!(events(&rx).is_empty());
    m.update(&flow(7, 100), T0 + 300); // 956*0.9 + 100 = 960.4: under
    m.update(&flow(7, 200), T0 + 400); // 960.4*0.9+200 = 1064.36: over, on this flow
    let ev = events(&rx);
    assert_eq!(ev, vec![(Phase::Start, vec!["0.0.0.7".to_string()], 1064, T0 + 400)]);
    // Sweeps while over rewrite the notification every 3 s (started at 0.4 s: due at 3.4 s).
    for s in 1..=4 {
        m.update(&flow(7, 2000), T0 + s * 1000);
        m.sweep(T0 + s * 1000 + 1);
    }
    assert_eq!(events(&rx).iter().map(|e| (e.0, e.3)).collect::<Vec<_>>(), vec![(Phase::Update, T0 + 4001)]);
    // Quiet from 4 s on: back to normal only 5 s after the last time it was over (4.001 s).
    for s in 5..=8 {
        m.sweep(T0 + s * 1000 + 1);
    }
    assert!(events(&rx).iter().all(|e| e.0 != Phase::Back2Norm), "not yet: 5 s of normal traffic are needed");
    // The rate bounces over again at 8.5 s: the 5 s start again from there.
    m.update(&flow(7, 5000), T0 + 8500);
    m.sweep(T0 + 9001); // still over after decay: last over at 9.001 s
    m.sweep(T0 + 13_001);
    assert!(events(&rx).iter().all(|e| e.0 != Phase::Back2Norm));
    m.sweep(T0 + 14_100);
    let ev = events(&rx);
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].0, ev[0].3), (Phase::Back2Norm, T0 + 14_100));
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 0);
}

#[test]
fn back2norm_time_defaults_to_the_originals_30_s() {
    let d = tmp("b2n-default");
    let (m, rx) = mavg(r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1000]}]}"#, &d);
    assert_eq!(m.limits[0].back2norm_ms, 30_000);
    m.update(&flow(7, 5000), T0);
    assert_eq!(events(&rx).len(), 1, "started");
    // Quiet from then on: still on 29 s after it was last over, back to normal at 30 s.
    m.sweep(T0 + 1);
    m.sweep(T0 + 29_000);
    assert!(events(&rx).iter().all(|e| e.0 != Phase::Back2Norm));
    m.sweep(T0 + 30_001);
    assert_eq!(events(&rx).iter().map(|e| e.0).collect::<Vec<_>>(), [Phase::Back2Norm]);
}

#[test]
fn each_overlimit_starts_on_its_own_crossing_flow() {
    // Two overlimits on two fields; "bytes" has no packets threshold. The lower of the two
    // packets thresholds decides first.
    let d = tmp("two-limits");
    let conf = r#"{"name": "m", "time": 1, "fields": ["dst host", "octets", "packets"], "overlimit": [
        {"name": "bytes", "default": [5000], "back2norm-time": 5},
        {"name": "pkts", "default": [1000000000, 3], "back2norm-time": 5}]}"#;
    let (m, rx) = mavg(conf, &d);
    let started = |rx: &Receiver<Event>| rx.try_iter().map(|e| (e.phase, e.limit_spec().name.clone(), e.value.round() as u64)).collect::<Vec<_>>();
    for _ in 0..3 {
        m.update(&flow(5, 100), T0); // 3 packets: at, not over, either threshold
    }
    assert!(started(&rx).is_empty());
    m.update(&flow(5, 100), T0); // the fourth packet
    assert_eq!(started(&rx), vec![(Phase::Start, "pkts".to_string(), 4)]);
    m.update(&flow(5, 4600), T0); // 5000 B: at the threshold
    assert!(started(&rx).is_empty());
    m.update(&flow(5, 1), T0);
    assert_eq!(started(&rx), vec![(Phase::Start, "bytes".to_string(), 5001)]);
}

#[test]
fn the_last_over_flow_between_sweeps_sets_the_back2norm_wait_and_the_reported_rate() {
    let (m, rx, _d) = level1_over_1000("between");
    m.update(&flow(9, 2000), T0); // start
    m.update(&flow(9, 1500), T0 + 500); // 2000*0.5 + 1500 = 2500: still over
    m.update(&flow(9, 10), T0 + 600); // 2500*0.9 + 10 = 2260: over, the last time
    m.update(&flow(9, 1), T0 + 1500); // 2260*0.1 + 1 = 227: under, before any sweep
    m.sweep(T0 + 3001); // the notification shows the last over rate
    m.sweep(T0 + 5599);
    assert_eq!(events(&rx).iter().map(|e| (e.0, e.2, e.3)).collect::<Vec<_>>(), vec![(Phase::Start, 2000, T0), (Phase::Update, 2260, T0 + 3001)]);
    m.sweep(T0 + 5600); // 5 s after the last over flow (0.6 s)
    assert_eq!(events(&rx).iter().map(|e| (e.0, e.3)).collect::<Vec<_>>(), vec![(Phase::Back2Norm, T0 + 5600)]);
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 0);
}

/// An average of octets per destination host over `time` seconds, with the underlimit `low`
/// at `threshold` B/s (2 s of back2norm).
fn low_under(tag: &str, time: u32, threshold: u32) -> (Arc<Mavg>, Receiver<Event>, TestDir) {
    let conf = format!(
        r#"{{"name": "m", "time": {time}, "fields": ["dst host", "octets"],
            "underlimit": [{{"name": "low", "default": [{threshold}], "back2norm-time": 2}}]}}"#
    );
    let d = tmp(tag);
    let (m, rx) = mavg(&conf, &d);
    (m, rx, d)
}

/// Keys a moving average tracks, and new keys it dropped (`mem-m` full).
fn keys_and_dropped(m: &Mavg) -> (usize, u64) {
    (m.stats.keys.load(Ordering::Relaxed), m.stats.keys_dropped.load(Ordering::Relaxed))
}

/// Keys with a state (see [`KeyState`]) and rows still filling, in all shards.
fn states_and_filling(m: &Mavg) -> (usize, usize) {
    let (mut states, mut filling) = (0, 0);
    for cell in &m.group.cells {
        let shard = cell.shard.lock();
        states += shard.limits[m.member].len();
        shard.rows.for_each(T0, m.member, |_, row| filling += usize::from(row.thr & FILLING != 0));
    }
    (states, filling)
}

#[test]
fn a_keys_state_lasts_while_its_average_fills_or_its_underlimit_holds() {
    // Window 2 s: an average fills in 20 s. 0.0.0.1 is steady at 10,000 B/s; 0.0.0.2 sends
    // for 3 s, stops (its underlimit starts), comes back at 40 s (and ends 2 s later).
    let (m, rx, _d) = low_under("under-states", 2, 5000);
    let mut seen = Vec::new();
    for ms in (0..60_000).step_by(100) {
        if ms % 1000 == 0 && ms > 0 {
            m.sweep(T0 + ms);
            if ms % 10_000 == 0 {
                seen.push((ms / 1000, states_and_filling(&m)));
            }
        }
        m.update(&flow(1, 1000), T0 + ms);
        if !(3000..40_000).contains(&ms) {
            m.update(&flow(2, 1000), T0 + ms);
        }
    }
    let phases: Vec<_> = events(&rx).into_iter().filter(|e| e.0 != Phase::Update).map(|(phase, keys, ..)| (phase, keys[0].clone())).collect();
    assert_eq!(phases, vec![(Phase::Start, "0.0.0.2".to_string()), (Phase::Back2Norm, "0.0.0.2".to_string())]);
    // (s, (states, rows filling)): both fill for 20 s. 0.0.0.2's is looked at (its average
    // is under) and ends then; its state stays while its underlimit holds. 0.0.0.1's is not
    // (nothing depends on it) and ends within an eighth of 20 s more, when its epoch tells.
    // None is left after, and no row fills again.
    assert_eq!(seen, vec![(10, (2, 2)), (20, (2, 1)), (30, (1, 0)), (40, (1, 0)), (50, (0, 0))]);
}

#[test]
fn key_states_count_against_mem_m() {
    // 1 MiB for an underlimit average keyed by a destination address, with one sum: a key is
    // counted as its share of the table and, while its average fills, as its state too. A
    // threshold of 0: no key is ever under it, so no alert adds to that.
    let d = tmp("mem-states");
    let conf = r#"{"name": "m", "time": 2, "fields": ["dst host", "octets"], "mem-m": 1,
        "underlimit": [{"name": "low", "default": [0], "back2norm-time": 2}]}"#;
    let (m, _rx) = mavg(conf, &d);
    assert_eq!((STATE_BYTES, LIMIT_STATES_BYTES), (148, 208), "as the README says (mem-m)");
    let (mem, key) = (m.mem_bytes, m.key_bytes());
    // A key is taken while what is counted leaves room for its share of the table.
    let fit = |used: usize, each: usize| (mem - key - used) / each + 1;
    for k in 0..20_000 {
        m.update(&flow(k, 1000), T0);
    }
    let filling = fit(0, key + STATE_BYTES);
    assert_eq!(keys_and_dropped(&m), (filling, (20_000 - filling) as u64));
    assert_eq!(m.memory_bytes(), filling * (key + STATE_BYTES));
    assert!(m.memory_bytes() <= mem && filling < mem / key / 2, "{filling} keys");
    // Ten windows on, every average has filled (none has had a flow since): the states go,
    // and new keys fit again.
    m.sweep(T0 + 20_000);
    assert_eq!(states_and_filling(&m), (0, 0));
    assert_eq!(m.memory_bytes(), filling * key);
    for k in 20_000..40_000 {
        m.update(&flow(k, 1000), T0 + 20_000);
    }
    let more = fit(filling * key, key + STATE_BYTES);
    assert_eq!(keys_and_dropped(&m), (filling + more, (40_000 - filling - more) as u64));
    assert!(m.memory_bytes() <= mem);
}

#[test]
fn an_alerts_state_counts_against_mem_m_while_it_lasts() {
    let (m, rx, _d) = level1_over_1000("mem-alert");
    m.update(&flow(1, 500), T0);
    m.update(&flow(2, 500), T0);
    let quiet = m.memory_bytes();
    assert_eq!(quiet, 2 * m.key_bytes());
    m.update(&flow(1, 2000), T0 + 100); // over: the alert starts
    assert_eq!(m.memory_bytes(), quiet + STATE_BYTES + LIMIT_STATES_BYTES);
    m.sweep(T0 + 7000); // back to normal after 5 s under
    let phases: Vec<Phase> = events(&rx).into_iter().map(|e| e.0).filter(|p| *p != Phase::Update).collect();
    assert_eq!(phases, vec![Phase::Start, Phase::Back2Norm]);
    assert_eq!(m.memory_bytes(), quiet);
}

#[test]
fn underlimit_found_by_the_sweep() {
    let (m, rx, _d) = low_under("under", 2, 100);
    // The key was first seen ten windows before: its average counts as full (see the next
    // test).
    m.update(&flow(1, 1000), T0 - 20_000);
    m.update(&flow(1, 1000), T0); // 500 B/s, the sum started anew
    m.sweep(T0 + 500); // decayed 1000*0.75/2 = 375: fine
    assert!(events(&rx).is_empty());
    m.sweep(T0 + 1700); // 1000*0.15/2 = 75 < 100
    assert_eq!(events(&rx).iter().map(|e| e.0).collect::<Vec<_>>(), vec![Phase::Start]);
    m.update(&flow(1, 1000), T0 + 2000); // back up
    m.sweep(T0 + 2100);
    m.sweep(T0 + 3000);
    assert!(events(&rx).is_empty());
    m.update(&flow(1, 1000), T0 + 3500);
    m.sweep(T0 + 4200);
    assert_eq!(events(&rx).iter().map(|e| e.0).collect::<Vec<_>>(), vec![Phase::Back2Norm]);
}

#[test]
fn an_underlimit_allows_for_a_new_keys_average_filling_and_still_finds_traffic_that_stops() {
    let (m, rx, _d) = low_under("under-fill", 10, 5000);
    let starts = |rx: &Receiver<Event>| events(rx).into_iter().filter(|e| e.0 == Phase::Start).map(|(phase, keys, value, at)| (phase, keys[0].clone(), value, at - T0)).collect::<Vec<_>>();
    // 0.0.0.1: 10,000 B/s from T0 (1,000 B every 100 ms), twice the threshold, for 30 s. Its
    // average fills: 951 B/s at the first sweep, 3,910 after 5 s. Without allowing for that it
    // is under 5,000 B/s for its first 7 s. 0.0.0.2: three flows, then nothing.
    for ms in (0..30_000).step_by(100) {
        if ms % 1000 == 0 && ms > 0 {
            m.sweep(T0 + ms);
        }
        m.update(&flow(1, 1000), T0 + ms);
        if ms <= 200 {
            m.update(&flow(2, 1000), T0 + ms);
        }
    }
    // 0.0.0.2 at 1 s: 2,970.1 B decayed for 800 ms (273 B/s) is under what its average would
    // show filled for 1 s of steady traffic at the threshold, 5,000 * (1 - e^-0.1) = 476.
    assert_eq!(starts(&rx), vec![(Phase::Start, "0.0.0.2".to_string(), 273, 1000)]);
    // 0.0.0.1's traffic stops at 29.9 s (sum 100,000 * (1 - 0.99^300) = 95,096): its rate
    // is first under 5,000 B/s at 35 s (4,660).
    for s in 30..=36 {
        m.sweep(T0 + s * 1000);
    }
    let ones: Vec<_> = starts(&rx).into_iter().filter(|e| e.1 == "0.0.0.1").collect();
    assert_eq!(ones, vec![(Phase::Start, "0.0.0.1".to_string(), 4660, 35_000)]);
}

/// A moving average of octets per destination host over 2 s with the underlimit `low` at
/// 100 B/s (2 s of back2norm), whose limits file `low.csv` holds `listed`.
fn low_listed(d: &Path, listed: &str) -> (Arc<Mavg>, Receiver<Event>) {
    std::fs::write(d.join("low.csv"), listed).unwrap();
    mavg(r#"{"name": "m", "time": 2, "fields": ["dst host", "octets"], "underlimit": [{"name": "low", "default": [100], "limits": "low.csv", "back2norm-time": 2}]}"#, d)
}

/// The events of `rx` as (phase, first key value, value, seconds after T0).
fn events_s(rx: &Receiver<Event>) -> Vec<(Phase, String, u64, u64)> {
    events(rx).into_iter().map(|(phase, keys, value, at)| (phase, keys[0].clone(), value, (at - T0) / 1000)).collect()
}

#[test]
fn keys_listed_for_an_underlimit_are_watched_once_the_object_has_had_traffic_for_a_minute() {
    let d = tmp("listed");
    // 0.0.0.1 has traffic, 0.0.0.9 never until 80 s, 0.0.0.8's threshold (0) watches nothing.
    let (m, rx) = low_listed(&d, "0.0.0.1,100\n0.0.0.9,100\n0.0.0.8,0\n");
    let mut seen = Vec::new();
    for ms in (0..84_000).step_by(100) {
        if ms % 1000 == 0 {
            m.sweep(T0 + ms);
            seen.extend(events_s(&rx).into_iter().filter(|e| e.0 != Phase::Update)); // rewrites every 3 s
        }
        let reload = |listed: &str| {
            std::fs::write(d.join("low.csv"), listed).unwrap();
            let t = load_limits(&d.join("low.csv"), &m.keys, &m.layout, 1).unwrap();
            m.set_thresholds(Thresholds { defaults: vec![vec![100.0]], per_limit: vec![t] });
        };
        if ms == 70_500 {
            // A reload lists 0.0.0.7 too: watched from the next sweep, no minute's wait.
            reload("0.0.0.1,100\n0.0.0.9,100\n0.0.0.8,0\n0.0.0.7,100\n");
        }
        if ms == 75_500 {
            // Gone for good: a threshold of 0 ends its alert after back2norm-time.
            reload("0.0.0.1,100\n0.0.0.9,100\n0.0.0.8,0\n0.0.0.7,0\n");
        }
        // 0.0.0.1: 1,000 B every 100 ms from 0.5 s (the sweep at 0 s finds no traffic yet).
        if ms >= 500 {
            m.update(&flow(1, 1000), T0 + ms);
        }
        if ms >= 80_000 {
            m.update(&flow(9, 1000), T0 + ms);
        }
        if ms == 60_000 {
            assert_eq!(m.stats.keys.load(Ordering::Relaxed), 1, "nothing listed is put in before a minute of traffic");
        }
    }
    // Traffic seen by the sweep at 1 s: 0.0.0.9 is put in at 61 s with an average of 0, which
    // starts filling then, so it is under its threshold at the next sweep; 0.0.0.7 likewise
    // at 71 s and 72 s, and set to 0 it is last under at 75 s, back to normal at 77 s. 0.0.0.9's
    // traffic from 80 s (the sweep at 80 s comes first) ends its underlimit 2 s after that
    // sweep, with the rate of 20 flows 100 ms apart, decayed 100 ms.
    let mut n = 0.0f64;
    for i in 0..20 {
        n = if i == 0 { 1000.0 } else { n - 0.05 * n + 1000.0 };
    }
    let rate = ((n - 0.05 * n) / 2.0).round() as u64;
    let (start, back) = (Phase::Start, Phase::Back2Norm);
    let expected = vec![(start, "0.0.0.9".into(), 0, 62), (start, "0.0.0.7".into(), 0, 72), (back, "0.0.0.7".into(), 0, 77), (back, "0.0.0.9".into(), rate, 82)];
    assert_eq!(seen, expected);
    assert_eq!(m.stats.keys.load(Ordering::Relaxed), 3, "0.0.0.1, 0.0.0.9 and 0.0.0.7; not 0.0.0.8");
}

#[test]
fn listed_keys_go_into_their_shards_of_a_shared_table_and_beyond_mem_m_are_counted_as_dropped() {
    let d = tmp("listed-shards");
    let bps = r#"{"name": "bps", "time": 2, "mem-m": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "a", "default": [1000000000000]}]}"#;
    let low = r#"{"name": "pps", "time": 2, "mem-m": 1, "fields": ["dst host", "packets"], "underlimit": [{"name": "u", "default": [0], "limits": "low.csv"}]}"#;
    // 1 MiB holds `fit` keys of the shared table: one with traffic (0.0.0.0, not listed; its
    // average has filled by the time listed keys go in), and listed keys, each with the state
    // of its average filling for the underlimit member; 100 more are listed than fit (the
    // limits file is read with the configuration).
    let fit = 1 + ((1usize << 20) - 2 * 102) / (102 + STATE_BYTES) + 1;
    let listed: String = (1..=fit as u32 + 100).map(|i| format!("{},10\n", std::net::Ipv4Addr::from(i))).collect();
    std::fs::write(d.join("low.csv"), listed).unwrap();
    let (ms, rxs) = object_mavgs_sharded(&[bps, low], &d, 4);
    assert!(ms[0].shares_table() && ms[0].key_bytes() == 102);
    let mut feed = Feed::new(ms.clone());
    let mut listed_flow = flow(5, 1000);
    for s in 0..=63u64 {
        Mavg::sweep_group(&ms, T0 + s * 1000);
        let mut f = flow(0, 1000);
        f.time_ms = T0 + s * 1000 + 500;
        feed.push(&f);
        if s == 62 {
            // A listed key's first flow finds its row, in the shard its hash picks.
            listed_flow.time_ms = f.time_ms;
            feed.push(&listed_flow);
        }
        feed.flush();
    }
    assert_eq!((keys_and_dropped(&ms[0]), keys_and_dropped(&ms[1])), ((fit, 101), (fit, 101)), "0.0.0.0 and the first listed that fit");
    let rows_in = |c: &ShardCell| {
        let mut n = 0;
        c.shard.lock().rows.for_each(T0, 0, |_, _| n += 1);
        n
    };
    let per_shard: Vec<usize> = ms[0].group.cells.iter().map(rows_in).collect();
    assert_eq!(per_shard.iter().sum::<usize>(), fit);
    assert!(per_shard.iter().all(|&n| n > fit / 8), "spread over the shards: {per_shard:?}");
    // Put in at 61 s (traffic since the sweep at 1 s), under 10 pps at 62 s: every listed key
    // in the table, 0.0.0.5 too (its flow came at 62.5 s, after that sweep).
    let starts = events_s(&rxs[1]);
    assert_eq!(starts.len(), fit - 1);
    assert!(starts.iter().all(|(phase, _, value, at)| *phase == Phase::Start && *value == 0 && *at == 62));
    assert!(events(&rxs[0]).is_empty(), "the overlimit average has nothing to say");
}

#[test]
fn keys_with_the_same_thresholds_share_a_set() {
    // Six listed keys: three at 100, two at 5000, one at the default (1000); 0.0.0.9 not
    // listed. Three sets, and each key crosses at its own threshold.
    let d = tmp("shared-sets");
    let listed = "0.0.0.1,100\n0.0.0.2,100\n0.0.0.3,100\n0.0.0.4,5000\n0.0.0.5,5000\n0.0.0.6,1000\n";
    std::fs::write(d.join("l.csv"), listed).unwrap();
    let (m, rx) = mavg(r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [1000], "limits": "l.csv"}]}"#, &d);
    let compiled = m.group.cells[0].shard.lock().compiled[0].clone();
    assert_eq!(compiled.sets.len(), 3);
    assert_eq!(MAX_THRESHOLD_SETS - 1, 524_287, "as the README says (limits file)");
    for host in [1, 2, 3, 4, 5, 6, 9] {
        m.update(&flow(host, 2000), T0);
    }
    let over: Vec<String> = events(&rx).into_iter().map(|e| e.1[0].clone()).collect();
    assert_eq!(over, ["0.0.0.1", "0.0.0.2", "0.0.0.3", "0.0.0.6", "0.0.0.9"]);
}

#[test]
fn limits_file_overrides_the_default() {
    let d = tmp("limits");
    std::fs::write(d.join("limits1.csv"), "# host,proto,bytes/s\n0.0.0.1,6,100\n0.0.0.2, 6, 100000\n").unwrap();
    let (m, rx) = mavg(
        r#"{"name": "m", "time": 1, "fields": ["dst host", "proto", "octets"],
            "overlimit": [{"name": "l", "default": [1000], "limits": "limits1.csv"}]}"#,
        &d,
    );
    m.update(&flow(1, 500), T0); // 500 > 100 from the file
    m.update(&flow(2, 5000), T0); // 5000 < 100000 from the file
    m.update(&flow(3, 5000), T0); // 5000 > default 1000
    let keys: Vec<Vec<String>> = events(&rx).into_iter().map(|e| e.1).collect();
    assert_eq!(keys, vec![vec!["0.0.0.1".to_string(), "6".into()], vec!["0.0.0.3".to_string(), "6".into()]]);
    // A bad line names file and line.
    std::fs::write(d.join("limits1.csv"), "0.0.0.1,6\n").unwrap();
    let e = load_limits(&d.join("limits1.csv"), &m.keys, &m.layout, 1).unwrap_err();
    assert_eq!(e.line, 1);
    // Thresholds are numbers of 0 or more ("inf": never crossed).
    for bad in ["NaN", "-5", "lots"] {
        std::fs::write(d.join("limits1.csv"), format!("0.0.0.1,6,inf\n# ok so far\n0.0.0.2,6,{bad}\n")).unwrap();
        let e = load_limits(&d.join("limits1.csv"), &m.keys, &m.layout, 1).unwrap_err();
        assert_eq!((e.line, e.msg), (3, format!("threshold \"{bad}\" is not a number of 0 or more")));
    }
}

#[test]
fn reload_changes_thresholds_and_keeps_averages() {
    let d = tmp("reload");
    std::fs::write(d.join("l.csv"), "0.0.0.1,100000\n").unwrap();
    let (m, rx) = mavg(r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "limits": "l.csv"}]}"#, &d);
    m.update(&flow(1, 5000), T0);
    assert!(events(&rx).is_empty());
    std::fs::write(d.join("l.csv"), "0.0.0.1,1000\n").unwrap();
    let t = load_limits(&d.join("l.csv"), &m.keys, &m.layout, 1).unwrap();
    m.set_thresholds(Thresholds { defaults: vec![vec![f64::NAN]], per_limit: vec![t] });
    m.update(&flow(1, 0), T0 + 100); // average kept: 4500 B/s > 1000
    let ev = events(&rx);
    assert_eq!((ev.len(), ev[0].2), (1, 4500));
}

#[test]
fn a_lowered_threshold_is_found_by_the_next_sweep_without_a_flow() {
    // The sweep skips quiet rows while thresholds stay as they are; after a reload it looks at
    // every row, so a key now over starts its limit without waiting for its next flow.
    let d = tmp("lowered");
    let (m, rx) = mavg(r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [100000], "back2norm-time": 5}]}"#, &d);
    m.update(&flow(1, 5000), T0);
    m.update(&flow(2, 500), T0);
    m.sweep(T0 + 100);
    assert!(events(&rx).is_empty());
    m.set_thresholds(Thresholds { defaults: vec![vec![1000.0]], per_limit: vec![HashMap::default()] });
    m.sweep(T0 + 200);
    assert_eq!(events(&rx), vec![(Phase::Start, vec!["0.0.0.1".to_string()], 4000, T0 + 200)], "5000 B decayed by a fifth");
    m.sweep(T0 + 300);
    assert!(events(&rx).is_empty(), "started once");
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 1);
}

#[test]
fn sweeps_skipping_quiet_rows_find_what_full_sweeps_find() {
    // Two copies of a moving average get the same random flows and a sweep every second; the
    // second is made to look at every row each time (as after a reload). Starts, updates,
    // back-to-normals (values and times) and the keys kept must be the same.
    let d = tmp("quiet-sweep");
    let conf = r#"{"name": "m", "time": 2, "fields": ["dst host", "octets"],
        "overlimit": [{"name": "a", "default": [2000], "back2norm-time": 3}, {"name": "b", "default": [6000], "back2norm-time": 1}]}"#;
    let (quick, quick_rx) = mavg(conf, &d);
    let (full, full_rx) = mavg(conf, &d);
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut now, mut next_sweep) = (T0, T0 + 1000);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for _ in 0..20_000 {
        now += next(3);
        // Mostly quiet keys; now and then a burst on a few of them, and idle stretches long
        // enough for keys to be forgotten (20 s).
        let octets = if next(50) == 0 { 3000 + next(5000) } else { next(40) };
        if next(2000) == 0 {
            now += 25_000;
        }
        let f = flow(next(300) as u32, octets as u128);
        quick.update(&f, now);
        full.update(&f, now);
        while next_sweep <= now {
            full.thresholds_changed.store(true, Ordering::Relaxed);
            quick.sweep(next_sweep);
            full.sweep(next_sweep);
            got.extend(events(&quick_rx));
            want.extend(events(&full_rx));
            assert_eq!(quick.stats.keys.load(Ordering::Relaxed), full.stats.keys.load(Ordering::Relaxed), "keys kept at {next_sweep}");
            next_sweep += 1000;
        }
    }
    let count = |phase: Phase| want.iter().filter(|e| e.0 == phase).count();
    assert!(count(Phase::Start) > 20 && count(Phase::Back2Norm) > 20 && count(Phase::Update) > 0, "the traffic starts and ends limits: {want:?}");
    assert_eq!(got, want);
}

#[test]
fn a_sweep_in_pieces_finds_what_a_whole_sweep_finds() {
    // Two copies of an object's moving averages (two sharing a table split over 4 shards, one
    // with a table of its own) get the same random flows; each second one is swept whole, the
    // other in pieces of 7 slots. Events and keys kept must be the same.
    let d = tmp("pieces");
    let confs = [BPS, PPS, r#"{"name": "own", "time": 1, "fields": ["dst host", "proto", "packets"], "overlimit": [{"name": "c", "default": [20], "back2norm-time": 1}]}"#];
    let (whole, whole_rx) = object_mavgs_sharded(&confs, &d, 4);
    let (pieces, pieces_rx) = object_mavgs_sharded(&confs, &d, 4);
    let (mut whole_feeds, mut piece_feeds): (Vec<Feed>, Vec<Feed>) = (groups(&whole).into_iter().map(Feed::new).collect(), groups(&pieces).into_iter().map(Feed::new).collect());
    let mut next = xorshift(0x1234_5678_9abc_def1);
    let (mut now, mut next_sweep, mut steps) = (T0, T0 + 1000, 0);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for _ in 0..20_000 {
        now += next(4);
        let mut f = flow(next(200) as u32, if next(40) == 0 { 2000 + next(4000) } else { next(50) } as u128);
        f.set(FieldId::Packets, if next(60) == 0 { 30 } else { 1 });
        f.time_ms = now;
        for feed in whole_feeds.iter_mut().chain(piece_feeds.iter_mut()) {
            feed.push(&f);
        }
        while next_sweep <= now {
            for feed in whole_feeds.iter_mut().chain(piece_feeds.iter_mut()) {
                feed.flush();
            }
            for g in groups(&whole) {
                Mavg::sweep_group(&g, next_sweep);
            }
            for g in groups(&pieces) {
                let mut pass = SweepPass::new(&g);
                while !pass.step(next_sweep, &mut 7) {
                    steps += 1;
                }
            }
            want.extend(whole_rx.iter().flat_map(events));
            got.extend(pieces_rx.iter().flat_map(events));
            let keys = |ms: &[Arc<Mavg>]| ms.iter().map(|m| m.stats.keys.load(Ordering::Relaxed)).collect::<Vec<_>>();
            assert_eq!(keys(&pieces), keys(&whole), "keys kept at {next_sweep}");
            next_sweep += 1000;
        }
    }
    let starts = want.iter().filter(|e| e.0 == Phase::Start).count();
    assert!(starts > 30 && want.iter().any(|e| e.0 == Phase::Back2Norm), "limits start and end: {want:?}");
    assert!(steps > 1000, "swept in pieces: {steps} steps");
    assert_eq!(got, want);
}

#[test]
fn memory_bound_drops_new_keys_only() {
    let d = tmp("mem");
    let (m, rx) = mavg(r#"{"name": "m", "time": 1, "mem-m": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [10]}]}"#, &d);
    let fit = (1 << 20) / m.key_bytes();
    assert_eq!(m.key_bytes(), 102, "a 32-byte slot, up to 3.2 slots per key");
    for i in 0..fit as u32 + 100 {
        m.update(&flow(i, 1), T0);
    }
    assert_eq!(m.stats.keys.load(Ordering::Relaxed), fit);
    assert_eq!(m.stats.keys_dropped.load(Ordering::Relaxed), 100);
    m.update(&flow(0, 100), T0 + 10); // a known key still works
    assert_eq!(events(&rx).len(), 1);
}

#[test]
fn events_carry_notification_names() {
    let d = tmp("names");
    let (m, rx) = mavg(r#"{"name": "mavg1", "time": 1, "fields": ["src host", "proto", "octets"], "overlimit": [{"name": "level1", "default": [1]}]}"#, &d);
    let mut f = flow(0, 10);
    f.set(FieldId::SrcHost, u32::from(Ipv4Addr::new(15, 22, 13, 99)) as u128);
    m.update(&f, T0);
    let ev = rx.try_recv().unwrap();
    assert_eq!(ev.notification_name(), "obj-mavg1-level1-15.22.13.99-6");
}

/// A 1-second average over 10 B/s, 10 s of back2norm.
const OVER_10: &str = r#"{"name": "m", "time": 1, "fields": ["dst host", "octets"], "overlimit": [{"name": "l", "default": [10], "back2norm-time": 10}]}"#;

/// [`OVER_10`] with a hook queue of one event.
fn with_queue_of_one(tag: &str) -> (Arc<Mavg>, Receiver<Event>, TestDir) {
    let d = tmp(tag);
    let (m, _) = mavg(OVER_10, &d);
    let (tx, rx) = sync_channel(1);
    m.set_events(Some(tx));
    (m, rx, d)
}

#[test]
fn a_full_hook_queue_holds_starts_in_order_and_drops_rewrites() {
    let (m, rx, _d) = with_queue_of_one("held");
    let keys_of = |evs: Vec<Event>| evs.into_iter().map(|e| (e.phase, e.keys[0].clone())).collect::<Vec<_>>();
    for host in 1..=3 {
        m.update(&flow(host, 1000), T0);
    }
    // The hooks do not keep up: 3 s over the limit, every notification rewrite finds the
    // queue full (the first start still in it, the other two held).
    for s in 1..=3 {
        for host in 1..=3 {
            m.update(&flow(host, 1000), T0 + s * 1000);
        }
        m.sweep(T0 + s * 1000);
    }
    assert_eq!(m.stats.events.load(Ordering::Relaxed), 6);
    assert_eq!(m.stats.events_dropped.load(Ordering::Relaxed), 3, "the three rewrites, due at 3 s");
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 3, "limits hold whatever the hooks");
    // The hooks catch up: each sweep sends what the queue takes, in order.
    let mut got = Vec::new();
    for k in 1..=3 {
        got.extend(rx.try_iter());
        m.sweep(T0 + 3000 + k * 10);
    }
    got.extend(rx.try_iter());
    let want: Vec<(Phase, String)> = (1..=3).map(|h| (Phase::Start, format!("0.0.0.{h}"))).collect();
    assert_eq!(keys_of(got), want, "no start lost");

    // Held events move to the moving average a reload puts in place.
    let (old, rx, d) = with_queue_of_one("held-reload");
    for host in 1..=3 {
        old.update(&flow(host, 1000), T0);
    }
    let (new, _) = mavg(OVER_10, &d);
    new.set_events(old.events.lock().clone());
    let used = old.memory_bytes();
    assert_eq!(used, 3 * (old.key_bytes() + STATE_BYTES + LIMIT_STATES_BYTES), "three keys, each with an alert's state");
    assert!(Mavg::adopt(std::slice::from_ref(&new), &[&old]));
    assert_eq!((new.memory_bytes(), old.memory_bytes()), (used, 0), "the states are counted where they went");
    drop(old);
    let mut got: Vec<Event> = Vec::new();
    for k in 1..=3 {
        got.extend(rx.try_iter());
        new.sweep(T0 + k * 10);
    }
    got.extend(rx.try_iter());
    assert_eq!(keys_of(got), want);

    // Events still held when the collector stops are handed over before it lets go.
    let (m, rx, _d) = with_queue_of_one("held-at-stop");
    for host in 1..=3 {
        m.update(&flow(host, 1000), T0);
    }
    let hooks = std::thread::spawn(move || rx.iter().collect::<Vec<_>>());
    m.set_events(None);
    assert_eq!(keys_of(hooks.join().unwrap()), want);
    assert_eq!(m.stats.events_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn idle_rows_go_even_when_ten_windows_exceed_the_kept_age() {
    // 10 windows of 200,000 s are beyond the 2^30 ms a row's 32-bit time keeps exactly.
    let d = tmp("age");
    let (m, _rx) = mavg(r#"{"name": "m", "time": 200000, "fields": ["dst host", "octets"]}"#, &d);
    m.update(&flow(1, 100), T0);
    m.sweep(T0 + 1000);
    assert_eq!(m.stats.keys.load(Ordering::Relaxed), 1);
    m.sweep(T0 + (1 << 30) - 1000);
    assert_eq!(m.stats.keys.load(Ordering::Relaxed), 1, "still within the age");
    m.sweep(T0 + (1 << 30) + 1000);
    assert_eq!(m.stats.keys.load(Ordering::Relaxed), 0, "forgotten");
}

#[test]
fn random_traffic_starts_the_same_limits_as_a_direct_model() {
    // A direct model of the formula and of overlimit starts (no sweeps, so a limit once
    // started stays on), against the moving average on random flows: keys with and without
    // limits-file thresholds, two overlimits on two fields (one without a packets threshold),
    // time steps within a window, flows stamped a little behind, and gaps of a whole window.
    let d = tmp("model");
    std::fs::write(d.join("b.csv"), "0.0.0.3, 500, 1000000\n0.0.0.4, 1000000, 2\n").unwrap();
    let conf = r#"{"name": "m", "time": 2, "fields": ["dst host", "octets", "packets"], "overlimit": [
        {"name": "a", "default": [3000], "back2norm-time": 5},
        {"name": "b", "default": [1000000, 20], "limits": "b.csv", "back2norm-time": 5}]}"#;
    let (m, rx) = mavg(conf, &d);
    let threshold = |key: u32, l: usize| -> [f64; 2] {
        match (l, key) {
            (0, _) => [3000.0, f64::NAN],
            (1, 3) => [500.0, 1_000_000.0],
            (1, 4) => [1_000_000.0, 2.0],
            _ => [1_000_000.0, 20.0],
        }
    };
    let secs = 2.0;
    struct Model {
        n: [f64; 2],
        last: u64,
        on: [bool; 2],
    }
    let mut model: HashMap<u32, Model> = HashMap::new();
    let mut want = Vec::new();
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut now = T0;
    for _ in 0..5000 {
        now = match next(100) {
            0..=4 => now - 50,       // a flow a little behind the clock
            5 => now + 2000 + next(3000), // a gap of a window or more: averages restart
            _ => now + next(40),
        };
        let (key, octets, packets) = (1 + next(6) as u32, 1 + next(400), 1 + next(3));
        let mut f = flow(key, octets as u128);
        f.set(FieldId::Packets, packets as u128);
        m.update(&f, now);
        let e = model.entry(key).or_insert(Model { n: [0.0; 2], last: now, on: [false; 2] });
        let dt = now.saturating_sub(e.last);
        for (n, v) in e.n.iter_mut().zip([octets as f64, packets as f64]) {
            *n = if dt >= 2000 { v } else { *n - dt as f64 * (1.0 / 2000.0) * *n + v };
        }
        e.last = e.last.max(now);
        for l in 0..2 {
            let thr = threshold(key, l);
            if let Some(field) = (0..2).find(|&i| e.n[i] > thr[i] * secs).filter(|_| !e.on[l]) {
                e.on[l] = true;
                want.push((key, ["a", "b"][l], (e.n[field] / secs).round() as u64, now));
            }
        }
    }
    let got: Vec<_> = rx
        .try_iter()
        .map(|e| (e.keys[0].parse::<std::net::Ipv4Addr>().map(u32::from).unwrap(), if e.limit == 0 { "a" } else { "b" }, e.value.round() as u64, e.time_ms))
        .collect();
    assert!(want.len() >= 6, "the traffic crosses thresholds: {want:?}");
    assert_eq!(got, want);
}

#[test]
fn random_traffic_starts_the_same_underlimits_as_a_direct_model() {
    // A direct model of the formula, of an average filling (see `Mavg::fill`) and of
    // underlimit starts at each sweep, against the moving average on random flows: keys that
    // begin at random times (their averages fill while the others' have filled), send at
    // about three times the threshold, sometimes pause, and stop; a sweep every second. The
    // sweep looks a filling key's state up only when it may matter: the starts must be the
    // same, value and time, as when it is always looked at.
    let d = tmp("under-model");
    let conf = r#"{"name": "m", "time": 2, "fields": ["dst host", "octets"],
        "underlimit": [{"name": "u", "default": [2000], "back2norm-time": 31622400}]}"#;
    let (m, rx) = mavg(conf, &d);
    let (time_ms, sum) = (2000.0, 2000.0 * 2.0);
    struct Model {
        n: f64,
        last: u64,
        first: u64,
        on: bool,
    }
    let mut model: HashMap<u32, Model> = HashMap::new();
    let mut next = xorshift(0x5851_f42d_4c95_7f2d);
    // Per key: when it begins and ends (ms after T0).
    let spans: Vec<(u64, u64)> = (0..12)
        .map(|_| {
            let begin = next(40_000);
            (begin, begin + next(40_000))
        })
        .collect();
    let mut want = Vec::new();
    for ms in (0..90_000u64).step_by(50) {
        let now = T0 + ms;
        if ms % 1000 == 0 && ms > 0 {
            m.sweep(now);
            for (&key, e) in model.iter_mut() {
                let dt = (now - e.last) as f64;
                let n = if dt >= time_ms { 0.0 } else { e.n - dt * (1.0 / time_ms) * e.n };
                let age = (now - e.first) as f64;
                let fill = if age >= 10.0 * time_ms { 1.0 } else { 1.0 - (-age * (1.0 / time_ms)).exp() };
                let full = if fill > 0.0 { n / fill } else { f64::INFINITY };
                if full < sum && n < sum && !e.on {
                    e.on = true;
                    want.push((key, (n / 2.0).round() as u64, now));
                }
            }
        }
        for (key, &(begin, end)) in spans.iter().enumerate() {
            // About 20 flows a second while it sends, with pauses of a second or two.
            if ms < begin || ms >= end || next(2) == 0 || (ms / 1000) % 7 == 3 {
                continue;
            }
            let (key, octets) = (key as u32 + 1, 300 + next(600));
            m.update(&flow(key, octets as u128), now);
            let e = model.entry(key).or_insert(Model { n: 0.0, last: now, first: now, on: false });
            let dt = now.saturating_sub(e.last);
            e.n = if dt >= 2000 { octets as f64 } else { e.n - dt as f64 * (1.0 / time_ms) * e.n + octets as f64 };
            e.last = e.last.max(now);
        }
    }
    want.sort();
    let mut got: Vec<_> = rx
        .try_iter()
        .filter(|e| e.phase == Phase::Start)
        .map(|e| (e.keys[0].parse::<std::net::Ipv4Addr>().map(u32::from).unwrap(), e.value.round() as u64, e.time_ms))
        .collect();
    got.sort();
    assert!(want.len() >= 8, "the traffic starts underlimits: {want:?}");
    assert_eq!(got, want);
}

/// Parses the `mavg` elements of one object and lets them share tables as loading does.
fn object_mavgs(confs: &[&str], dir: &Path) -> (Vec<Arc<Mavg>>, Vec<Receiver<Event>>) {
    object_mavgs_sharded(confs, dir, 1)
}

/// [`object_mavgs`], shared tables split over `shards` shards.
fn object_mavgs_sharded(confs: &[&str], dir: &Path, shards: usize) -> (Vec<Arc<Mavg>>, Vec<Receiver<Event>>) {
    let file = dir.join("mo.conf");
    let mut parsed: Vec<Mavg> = confs.iter().enumerate().map(|(i, c)| parse(&file, "obj", dir, &json::parse(c, &file).unwrap(), i).unwrap()).collect();
    share_tables_in(&mut parsed, shards);
    let mut rxs = Vec::new();
    let mavgs = parsed
        .into_iter()
        .map(|m| {
            let (tx, rx) = sync_channel(100_000);
            m.set_events(Some(tx));
            rxs.push(rx);
            Arc::new(m)
        })
        .collect();
    (mavgs, rxs)
}

const BPS: &str = r#"{"name": "bps", "time": 2, "fields": ["dst host", "octets"],
    "overlimit": [{"name": "a", "default": [1500], "back2norm-time": 3}]}"#;
const PPS: &str = r#"{"name": "pps", "time": 1, "fields": ["dst host", "packets"],
    "overlimit": [{"name": "b", "default": [15], "back2norm-time": 2}], "underlimit": [{"name": "u", "default": [2]}]}"#;
/// [`PPS`] per protocol: nested in [`BPS`]'s table.
const PPS_BY_PROTO: &str = r#"{"name": "pps", "time": 1, "fields": ["dst host", "proto", "packets"],
    "overlimit": [{"name": "b", "default": [10], "back2norm-time": 2}], "underlimit": [{"name": "u", "default": [2]}]}"#;

#[test]
fn averages_with_the_same_keys_share_a_table_when_it_fits_a_line() {
    let d = tmp("share");
    let other_mem = r#"{"name": "q", "mem-m": 5, "fields": ["dst host", "packets"]}"#;
    let third = r#"{"name": "r", "fields": ["dst host", "bits"]}"#;
    let wide = r#"{"name": "w", "fields": ["src host", "dst host", "src port", "dst port", "octets", "packets"]}"#;
    let wide2 = r#"{"name": "w2", "fields": ["src host", "dst host", "src port", "dst port", "octets", "bits"]}"#;
    let (m, _rx) = object_mavgs(&[BPS, PPS, other_mem, third, wide, wide2], &d);
    let sharing: Vec<(&str, bool, usize)> = m.iter().map(|m| (m.name.as_str(), m.shares_table(), m.member)).collect();
    assert_eq!(
        sharing,
        [("bps", true, 0), ("pps", true, 1), ("q", false, 0), ("r", false, 0), ("w", false, 0), ("w2", false, 0)],
        "pairs of the same keys, fields count and mem-m; a third stays alone; two-field rows of a 3-word key do not fit a line"
    );
    let g = groups(&m);
    assert_eq!(g.iter().map(|g| g.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()).collect::<Vec<_>>(), [vec!["bps", "pps"], vec!["q"], vec!["r"], vec!["w"], vec!["w2"]]);
    assert!(!m[0].group.nested());
    assert_eq!(m[0].key_bytes(), 102, "half of a 64-byte slot each, up to 3.2 slots per key");
}

#[test]
fn an_average_keyed_by_anothers_keys_and_an_8_bit_field_more_is_nested_in_its_table() {
    let d = tmp("nest");
    let by_port = r#"{"name": "port", "fields": ["dst host", "dst port", "packets"]}"#;
    let by_src = r#"{"name": "src", "fields": ["src host", "proto", "packets"]}"#;
    let two_fields = r#"{"name": "two", "fields": ["dst host", "proto", "octets", "packets"]}"#;
    let by_as = r#"{"name": "as", "fields": ["dst host", "dst as", "packets"]}"#;
    let mac = r#"{"name": "mac", "fields": ["dst mac", "octets"]}"#;
    let mac_proto = r#"{"name": "macp", "fields": ["dst mac", "proto", "octets"]}"#;
    let six = r#"{"name": "six", "fields": ["src host6", "octets"]}"#;
    let six_proto = r#"{"name": "sixp", "fields": ["src host6", "proto", "bits"]}"#;
    let (m, _rx) = object_mavgs(&[BPS, PPS_BY_PROTO, by_src, two_fields, by_as, mac, mac_proto, six, six_proto], &d);
    let sharing: Vec<(&str, bool, usize)> = m.iter().map(|m| (m.name.as_str(), m.shares_table(), m.member)).collect();
    assert_eq!(
        sharing,
        [("bps", true, 0), ("pps", true, 1), ("src", false, 0), ("two", false, 0), ("as", false, 0), ("mac", true, 0), ("macp", true, 1), ("six", true, 0), ("sixp", true, 1)],
        "one nested per table; not by another's keys, nor with more fields, nor by a wide field"
    );
    // A port has too many values: all of a key's variants would sit on one probe path.
    let (p, _rx) = object_mavgs(&[BPS, by_port], &d);
    assert!(!p[0].shares_table() && !p[1].shares_table());
    assert!(m[0].group.nested());
    assert_eq!((m[0].key_bytes(), m[1].key_bytes()), (102, 102), "a 32-byte slot each, up to 3.2 slots per key");
    // The nested average's keys: the first's, its protocol (or NULL) and the mark in the
    // spare bits of the one word; its thresholds by those keys.
    let key = |host: u32, proto: Option<u128>| PackedKey::new(&m[1].layout, &m[1].layout.pack_values(&[Some(host as u128), proto]));
    let first = PackedKey::new(&m[0].layout, &m[0].layout.pack_values(&[Some(7)]));
    assert_eq!(key(7, Some(17)).w[..2], [7 | 17 << 34 | NESTED_MARK, 0]);
    assert_eq!(key(7, None).w[0], 7 | 1 << 33 | NESTED_MARK);
    assert_eq!(key(7, Some(0)).w[0] & !NESTED_MARK, first.w[0], "told from the first's key by the mark alone");
    for proto in [None, Some(0), Some(6), Some(31), Some(32), Some(200), Some(255)] {
        let k = key(7, proto);
        let spread = proto.map_or(0, |p| (p as u64 >> 5) << 6);
        assert_eq!(m[0].group.nest.hash_of(&k), first.hash64() ^ spread, "hashed as the first's key, 64 slots on and more for 32 and over");
        assert_eq!(m[1].key_text(&k), ["0.0.0.7".to_string(), proto.map_or("NULL".into(), |p| p.to_string())]);
    }
    assert_eq!(m[1].key_text(&key(7, Some(256 + 6))), ["0.0.0.7", "6"], "a value of 8 bits");
    let mut f = flow(7, 100);
    f.set(FieldId::Proto, 17);
    assert_eq!(m[1].layout.extension().unwrap().bits(&f) | first.w[0], key(7, Some(17)).w[0], "a flow's extension makes its key");
}

#[test]
fn averages_sharing_a_table_behave_as_each_alone() {
    shared_behave_as_alone("share-model", [BPS, PPS], 5, 20_000);
}

#[test]
fn a_nested_average_behaves_as_alone() {
    // Protocols 6, 17, 0 and none (NULL): a key extended by 0 is not the first's key.
    shared_behave_as_alone("nest-model", [BPS, PPS_BY_PROTO], 5, 20_000);
}

#[test]
fn a_nested_average_of_many_keys_behaves_as_alone_through_growth_and_sweeps() {
    // Thousands of keys: the table grows many times while flows and sweeps go on, and keys
    // go (idle) and come back.
    shared_behave_as_alone("nest-grow", [BPS, PPS_BY_PROTO], 1000, 40_000);
}

/// The same `flows` random flows (to `hosts` destinations, of protocols 6, 17, 0, 32-255 or none) through two
/// averages sharing a table (by a worker's queue, with sweeps) and through each alone: the
/// same events, the same dumps, the same keys.
fn shared_behave_as_alone(tag: &str, confs: [&str; 2], hosts: u64, flows: usize) {
    let d = tmp(tag);
    // The shared table split over 16 shards, as with four workers (a batch's flows are
    // grouped by shard); the lone ones have one.
    let (shared, shared_rx) = object_mavgs_sharded(&confs, &d, 16);
    assert!(shared[0].shares_table() && shared[0].group.cells.len() == 16);
    let alone: Vec<_> = confs.iter().map(|c| object_mavgs(&[c], &d)).map(|(mut m, mut rx)| (m.remove(0), rx.remove(0))).collect();
    let mut feed = Feed::new(shared.clone());
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut now = T0;
    let mut next_sweep = T0 + 1000;
    // Each sweep's events taken as they come (a full queue drops rewrites, and shards order
    // a sweep's events differently, so they would not be the same ones).
    let event = |e: Event| (e.time_ms, e.keys.clone(), e.limit, format!("{:?}", e.phase), e.value.to_bits(), e.start_ms);
    let mut got = vec![Vec::new(); 2];
    let mut want = vec![Vec::new(); 2];
    let take_events = |got: &mut Vec<Vec<_>>, want: &mut Vec<Vec<_>>| {
        for (i, (rx, (_, one_rx))) in shared_rx.iter().zip(&alone).enumerate() {
            got[i].extend(rx.try_iter().map(event));
            want[i].extend(one_rx.try_iter().map(event));
        }
    };
    for _ in 0..flows {
        now += match next(50) {
            0 => 1500 + next(3000), // quiet for a while: back-to-normal, underlimits
            _ => next(40),          // each key about 10 flows/s: near the thresholds
        };
        if now >= next_sweep {
            feed.flush();
            Mavg::sweep_group(&shared, now);
            for (m, _) in &alone {
                m.sweep(now);
            }
            take_events(&mut got, &mut want);
            next_sweep = (now / 1000 + 1) * 1000;
        }
        // Most flows to five hosts: near the thresholds.
        let host = if next(8) != 0 { 1 + next(5) } else { 1 + next(hosts) };
        let mut f = flow(host as u32, 1 + next(300) as u128);
        f.set(FieldId::Packets, 1 + next(2) as u128);
        match next(8) {
            0 => f = flow_without_proto(&f),
            1 => f.set(FieldId::Proto, 0),
            2 | 3 => f.set(FieldId::Proto, 17),
            // Protocols 32-255: on lines near the host's.
            4 => f.set(FieldId::Proto, 32 + next(224) as u128),
            _ => {}
        }
        f.time_ms = now;
        feed.push(&f);
        for (m, _) in &alone {
            m.update(&f, now);
        }
        if next(7) == 0 {
            feed.flush(); // as a new millisecond does
        }
    }
    feed.flush();
    take_events(&mut got, &mut want);
    for (i, (m, (one, _))) in shared.iter().zip(&alone).enumerate() {
        // In the order of time, then key: shards order a sweep's events differently.
        let (mut got, mut want) = (std::mem::take(&mut got[i]), std::mem::take(&mut want[i]));
        got.sort();
        want.sort();
        assert!(want.len() > 50 && want.iter().any(|e| e.3 == "Back2Norm"), "member {i}: the traffic starts and ends limits: {}", want.len());
        if let Some(k) = (0..got.len().max(want.len())).find(|&k| got.get(k) != want.get(k)) {
            panic!("member {i}: event {k} of {}/{}: {:?} != {:?} (before: {:?})", got.len(), want.len(), got.get(k), want.get(k), &want[k.saturating_sub(3)..k]);
        }
        let lines = |m: &Mavg| {
            let mut l: Vec<String> = m.dump_text(now, "t").lines().map(String::from).collect();
            l.sort();
            l
        };
        assert_eq!(lines(m), lines(one), "member {i}: the same dump lines");
        assert_eq!(m.stats.keys.load(Ordering::Relaxed), one.stats.keys.load(Ordering::Relaxed));
        assert_eq!(m.stats.active.load(Ordering::Relaxed), one.stats.active.load(Ordering::Relaxed));
    }
}

#[test]
fn a_reload_takes_over_a_shared_table_of_the_same_shape_only() {
    let d = tmp("share-reload");
    let (old, _rx) = object_mavgs(&[BPS, PPS], &d);
    let mut feed = Feed::new(old.clone());
    for i in 0..10u64 {
        let mut f = flow(7, 1000);
        f.time_ms = T0 + i;
        feed.push(&f);
    }
    feed.flush();
    let dumps: Vec<String> = old.iter().map(|m| m.dump_text(T0 + 10, "t")).collect();
    assert!(dumps[0].contains("'0.0.0.7'  :: 4986 (") && dumps[1].contains("'0.0.0.7'  :: 10 ("), "{dumps:?}");
    let (new, _rx) = object_mavgs(&[BPS, PPS], &d);
    assert!(Mavg::adopt(&new, &[&old[0], &old[1]]));
    assert_eq!(new.iter().map(|m| m.dump_text(T0 + 10, "t")).collect::<Vec<_>>(), dumps, "averages kept");
    assert_eq!(new[1].stats.keys.load(Ordering::Relaxed), 1);
    assert_eq!(new.iter().map(|m| m.stats.events.load(Ordering::Relaxed)).collect::<Vec<_>>(), old.iter().map(|m| m.stats.events.load(Ordering::Relaxed)).collect::<Vec<_>>(), "counters go on");
    // The second average gone: the first's table is no longer the same shape.
    let (alone, _rx) = object_mavgs(&[BPS], &d);
    assert!(!Mavg::adopt(&alone, &[&new[0]]), "a shared table is not taken over by a lone average");
    assert!(!alone[0].dump_text(T0 + 10, "t").contains("0.0.0.7"));
}

#[test]
fn flows_a_worker_applies_to_the_replaced_table_after_a_reload_reach_the_new_one() {
    // A worker applies flows to the previous configuration's averages until its next tick
    // moves it to the new one: those flows count in the averages kept, and a limit they start
    // is the new version's (in the table about to be dropped, it would start from zero and
    // end at the retirement: a start and a back2norm that should not be, for a key perhaps
    // still on in the new table).
    let d = tmp("reload-in-flight");
    let (old, old_rx) = object_mavgs_sharded(&[BPS, PPS], &d, 2);
    let (reference, _ref_rx) = object_mavgs_sharded(&[BPS, PPS], &d, 2);
    let (mut old_feed, mut ref_feed) = (Feed::new(old.clone()), Feed::new(reference.clone()));
    let mut both = |t: u64, host: u32, octets: u128| {
        for feed in [&mut old_feed, &mut ref_feed] {
            let mut f = flow(host, octets);
            f.time_ms = T0 + t;
            feed.push(&f);
            feed.flush();
        }
    };
    for t in 0..10 {
        both(t * 100, 7, 100);
        both(t * 100, 8, 100);
    }
    let (new, new_rx) = object_mavgs_sharded(&[BPS, PPS], &d, 2);
    assert!(Mavg::adopt(&new, &[&old[0], &old[1]]));
    // Still through the old queue: 0.0.0.8 floods (over 1500 B/s).
    for t in 10..20 {
        both(t * 100, 7, 100);
        both(t * 100, 8, 2000);
    }
    let dumps = |ms: &[Arc<Mavg>]| ms.iter().map(|m| m.dump_text(T0 + 2000, "t")).collect::<Vec<_>>();
    assert_eq!(dumps(&new), dumps(&reference), "every flow in the averages kept");
    assert!(dumps(&old).iter().all(|d| !d.contains("0.0.0.")), "none in the replaced table: {:?}", dumps(&old));
    let started = events(&new_rx[0]);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!((started[0].0, started[0].1.clone()), (Phase::Start, vec!["0.0.0.8".to_string()]));
    assert_eq!(new[0].stats.active.load(Ordering::Relaxed), 1);
    assert!(events(&old_rx[0]).is_empty() && events(&old_rx[1]).is_empty(), "the replaced versions start nothing");
    assert_eq!(new[0].stats.keys.load(Ordering::Relaxed), 2);
    // Retired once the worker moved on: the new version's alert goes on.
    assert!(old.iter().all(|m| m.retire(&[], T0 + 2000).ended.is_empty()));
    assert_eq!(new[0].stats.active.load(Ordering::Relaxed), 1);
}

/// Notification files in `d`/n, as an earlier run left them: (name, content).
fn left_files(d: &Path, files: &[(&str, &str)]) -> PathBuf {
    let n = d.join("n");
    std::fs::create_dir_all(&n).unwrap();
    for (name, text) in files {
        std::fs::write(n.join(name), text).unwrap();
    }
    n
}

#[test]
fn an_alert_left_active_is_taken_up_and_ends_after_back2norm_time() {
    let (m, rx, _d) = level1_over_1000("take-up");
    let n = left_files(
        &m.dir,
        &[
            // Stopped between a rewrite's write and its length cut: the longer text's end.
            ("obj-m-level1-0.0.0.5", "0.0.0.5 inf 1000\n"),
            ("obj-m-level1-0.0.0.6", "0.0.0.6 nan 1000\n"),
            ("obj-m-level1-0.0.0.7", "0.0.0.7 1500 1000\n000\n"),
            ("obj-m-level1-0.0.0.8", "0.0.0.8 lots 1000\n"),
            ("obj-m-level1-0.0.0.9", "0.0.0.10 1500 1000\n"),
            ("obj-m-level2-0.0.0.7", "0.0.0.7 1500 1000\n"),
            ("obj-mm-level1-0.0.0.7", "0.0.0.7 1500 1000\n"),
            ("telegram.msg", "x"),
        ],
    );
    let ours = ["obj-m-level1-0.0.0.5", "obj-m-level1-0.0.0.6", "obj-m-level1-0.0.0.7", "obj-m-level1-0.0.0.8", "obj-m-level1-0.0.0.9"];
    assert_eq!(notification_files(&n, std::slice::from_ref(&m)), ours);
    let done = take_up_alerts(&n, std::slice::from_ref(&m), T0);
    assert_eq!(done.taken, ["obj-m-level1-0.0.0.7"]);
    let left: Vec<(&str, &str)> = done.left.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let not_a_rate = |file, w: &str| (file, format!("\"{w}\" is not a number of 0 or more"));
    let want = [
        not_a_rate("obj-m-level1-0.0.0.5", "inf"),
        not_a_rate("obj-m-level1-0.0.0.6", "nan"),
        not_a_rate("obj-m-level1-0.0.0.8", "lots"),
        ("obj-m-level1-0.0.0.9", "no limit's name for its content is the file's name".to_string()),
    ];
    assert_eq!(left, want.iter().map(|(f, m)| (*f, m.as_str())).collect::<Vec<_>>());
    assert_eq!((m.stats.active.load(Ordering::Relaxed), m.stats.keys.load(Ordering::Relaxed)), (1, 1));
    assert!(m.dump_text(T0, "t").contains(" '0.0.0.7'  :: 1500 (1000 )"), "the average goes on from the file's rate");
    assert!(events(&rx).is_empty(), "nothing runs at the take-up: the alert had started");
    // No traffic: the rate is under the threshold from the first sweep on; the notification
    // is rewritten at 3 s, and back-to-normal comes 5 s after the take-up.
    for s in 1..=6 {
        m.sweep(T0 + s * 1000);
    }
    let want = [(Phase::Update, vec!["0.0.0.7".to_string()], 1500, T0 + 3000), (Phase::Back2Norm, vec!["0.0.0.7".to_string()], 0, T0 + 5000)];
    assert_eq!(events(&rx), want);
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 0);
}

#[test]
fn a_taken_up_alert_whose_flood_goes_on_does_not_start_again() {
    let (m, rx, _d) = level1_over_1000("take-up-flood");
    let n = left_files(&m.dir, &[("obj-m-level1-0.0.0.7", "0.0.0.7 1500 1000\n")]);
    assert_eq!(take_up_alerts(&n, std::slice::from_ref(&m), T0).taken.len(), 1);
    // 2000 B/s for 10 s, then quiet.
    for t in (100..=10_000).step_by(100) {
        m.update(&flow(7, 200), T0 + t);
        if t % 1000 == 0 {
            m.sweep(T0 + t);
        }
    }
    for s in 11..=16 {
        m.sweep(T0 + s * 1000);
    }
    let phases: Vec<(Phase, u64)> = events(&rx).into_iter().map(|e| (e.0, e.3)).collect();
    let updates = [3000, 6000, 9000, 12_000].map(|t| (Phase::Update, T0 + t));
    assert_eq!(phases, [&updates[..], &[(Phase::Back2Norm, T0 + 15_000)]].concat(), "no second start; back to normal 5 s after the last time over (10 s)");
}

#[test]
fn an_alert_of_the_second_average_of_a_shared_table_is_taken_up_in_its_row() {
    let d = tmp("take-up-shared");
    // Split over 16 shards, as with four workers: the row goes to its key's shard.
    let (m, rx) = object_mavgs_sharded(&[BPS, PPS], &d, 16);
    let n = left_files(&d, &[("obj-pps-b-0.0.0.7", "0.0.0.7 40 15\n")]);
    assert_eq!(take_up_alerts(&n, &m, T0).taken, ["obj-pps-b-0.0.0.7"]);
    let active: Vec<usize> = m.iter().map(|m| m.stats.active.load(Ordering::Relaxed)).collect();
    let keys: Vec<usize> = m.iter().map(|m| m.stats.keys.load(Ordering::Relaxed)).collect();
    assert_eq!((active, keys), (vec![0, 1], vec![1, 1]), "one key in the shared table, the limit active in the second average's row");
    assert!(m[1].dump_text(T0, "t").contains(" '0.0.0.7'  :: 40 (15 2 )") && !m[0].dump_text(T0, "t").contains("0.0.0.7"));
    // A flow of the key finds that row (no second one).
    let mut feed = Feed::new(m.clone());
    let mut f = flow(7, 100);
    f.time_ms = T0 + 10;
    feed.push(&f);
    feed.flush();
    assert_eq!(m.iter().map(|m| m.stats.keys.load(Ordering::Relaxed)).collect::<Vec<_>>(), [1, 1]);
    // Over at that flow (40 packets/s decayed by 1%, plus one), back to normal 2 s later.
    Mavg::sweep_group(&m, T0 + 2000);
    Mavg::sweep_group(&m, T0 + 3000);
    let ended: Vec<_> = rx[1].try_iter().filter(|e| e.limit == 0).map(|e| (e.phase, e.time_ms)).collect();
    assert_eq!(ended, [(Phase::Back2Norm, T0 + 3000)]);
    assert!(rx[0].try_iter().next().is_none());
}

#[test]
fn a_retired_average_ends_its_alerts_but_those_taken_up_and_then_sends_nothing() {
    let (m, rx, _d) = level1_over_1000("retire");
    // Two keys over (2000 B/s), one under.
    for t in (100..=1000).step_by(100) {
        for (host, octets) in [(7, 200), (8, 200), (9, 50)] {
            m.update(&flow(host, octets), T0 + t);
        }
    }
    let started: Vec<(Phase, Vec<String>)> = events(&rx).into_iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(started, [(Phase::Start, vec!["0.0.0.7".to_string()]), (Phase::Start, vec!["0.0.0.8".to_string()])]);
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 2);
    // The new configuration took up 0.0.0.8's alert: only 0.0.0.7's ends, at its rate now
    // (2000 * (1 - 0.9^10) B/s at 1 s, decayed over 500 ms: 651), with the threshold and
    // start it had (the 7th flow, 2000 * (1 - 0.9^7) = 1043 B/s, crossed 1000).
    let taken = ["obj-m-level1-0.0.0.8".to_string()];
    let Retired { held, ended } = m.retire(&taken, T0 + 1500);
    assert!(held.is_empty());
    assert_eq!(ended.len(), 1);
    let e = &ended[0];
    assert_eq!((e.phase, e.keys.clone(), e.value.round() as u64, e.threshold, e.time_ms, e.start_ms), (Phase::Back2Norm, vec!["0.0.0.7".to_string()], 651, 1000.0, T0 + 1500, T0 + 700));
    assert_eq!(e.notification_name(), "obj-m-level1-0.0.0.7");
    assert_eq!(m.stats.active.load(Ordering::Relaxed), 1, "0.0.0.8 was left to its new average");
    // A worker still on the old configuration for a moment: its flows and sweeps reach no hook.
    for t in (1600..=9000).step_by(100) {
        m.update(&flow(9, 5000), T0 + t);
        if t % 1000 == 0 {
            m.sweep(T0 + t);
        }
    }
    assert!(events(&rx).is_empty());
    assert!(m.retire(&[], T0 + 9000).ended.is_empty(), "retired once");
}

#[test]
fn a_retired_average_leaves_its_held_starts_before_the_ends() {
    let (m, rx, _d) = with_queue_of_one("retire-held");
    // A start fills the queue; the next two are held.
    for (host, t) in [(1, 100), (2, 200), (3, 300)] {
        m.update(&flow(host, 5000), T0 + t);
    }
    assert_eq!(m.held_events(), 2);
    let Retired { held, ended } = m.retire(&[], T0 + 400);
    let key = |e: &Event| (e.phase, e.keys[0].clone());
    assert_eq!(rx.try_iter().map(|e| key(&e)).collect::<Vec<_>>(), [(Phase::Start, "0.0.0.1".to_string())]);
    assert_eq!(held.iter().map(key).collect::<Vec<_>>(), [(Phase::Start, "0.0.0.2".to_string()), (Phase::Start, "0.0.0.3".to_string())]);
    let mut ends: Vec<(Phase, String)> = ended.iter().map(key).collect();
    ends.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(ends, ["0.0.0.1", "0.0.0.2", "0.0.0.3"].map(|h| (Phase::Back2Norm, h.to_string())), "every alert ends");
    assert_eq!(m.held_events(), 0);
}

#[test]
fn a_changed_average_takes_over_the_alerts_its_previous_version_has_on_not_the_files() {
    let d = tmp("take-over");
    let conf = |time: u32| format!(r#"{{"name": "m", "time": {time}, "fields": ["dst host", "octets"],
        "overlimit": [{{"name": "level1", "default": [1000], "back2norm-time": 5}}]}}"#);
    let file = d.join("mo.conf");
    let parsed = |text: &str| Arc::new(parse(&file, "obj", &d, &json::parse(text, &file).unwrap(), 0).unwrap());
    let (old, new) = (parsed(&conf(1)), parsed(&conf(2)));
    let (tx, rx) = sync_channel(100);
    old.set_events(Some(tx));
    for t in (100..=1000).step_by(100) {
        old.update(&flow(7, 200), T0 + t);
    }
    assert_eq!(events(&rx).len(), 1, "0.0.0.7 is on");
    // Files lag under a hook backlog: 0.0.0.8's end is on its way, 0.0.0.7's start not yet.
    left_files(&d, &[("obj-m-level1-0.0.0.8", "0.0.0.8 1500 1000\n")]);
    let (taken, orphans) = take_over_alerts(std::slice::from_ref(&old), std::slice::from_ref(&new), T0 + 1000);
    assert_eq!((taken.as_slice(), orphans.len()), (["obj-m-level1-0.0.0.7".to_string()].as_slice(), 0));
    assert_eq!(new.stats.active.load(Ordering::Relaxed), 1);
    // 2000 * (1 - 0.9^10) B/s in the old average: the new one goes on from it.
    assert!(new.dump_text(T0 + 1000, "t").contains(" '0.0.0.7'  :: 1303 (1000 )"), "{}", new.dump_text(T0 + 1000, "t"));
    assert!(old.retire(&taken, T0 + 1000).ended.is_empty(), "the old version ends nothing it handed over");
    // Quiet from 1 s on: back to normal 5 s after the alert was last over (1 s), not 5 s after
    // the take-over (a later one, at 4 s, keeps that).
    let later = parsed(&conf(3));
    let (tx, rx) = sync_channel(100);
    later.set_events(Some(tx));
    let (taken, _) = take_over_alerts(std::slice::from_ref(&new), std::slice::from_ref(&later), T0 + 4000);
    assert_eq!(taken, ["obj-m-level1-0.0.0.7"]);
    for s in 5..=9 {
        later.sweep(T0 + s * 1000);
    }
    let ended: Vec<(Phase, u64)> = events(&rx).into_iter().filter(|e| e.0 == Phase::Back2Norm).map(|e| (e.0, e.3)).collect();
    assert_eq!(ended, [(Phase::Back2Norm, T0 + 6000)]);
    // Another key field: nothing to take over, the files are the only source.
    let other = parsed(r#"{"name": "m", "fields": ["src host", "octets"], "overlimit": [{"name": "level1", "default": [1000]}]}"#);
    let (taken, orphans) = take_over_alerts(std::slice::from_ref(&old), std::slice::from_ref(&other), T0 + 1000);
    assert!(taken.is_empty() && orphans.len() == 1);
}

/// [`BPS`] and, nested in its table (four shards), packets per destination and protocol with
/// an overlimit and an underlimit whose `limits` files (`pps.csv`, `low.csv`) hold `over`
/// and `under`.
fn nested_with_limits(d: &Path, over: &str, under: &str) -> (Vec<Arc<Mavg>>, Vec<Receiver<Event>>) {
    std::fs::write(d.join("pps.csv"), over).unwrap();
    std::fs::write(d.join("low.csv"), under).unwrap();
    let (m, rx) = object_mavgs_sharded(&[BPS, NESTED_WITH_LIMITS], d, 4);
    assert!(m[0].group.nested());
    (m, rx)
}

const NESTED_WITH_LIMITS: &str = r#"{"name": "pps", "time": 1, "fields": ["dst host", "proto", "packets"],
    "overlimit": [{"name": "b", "default": [10], "limits": "pps.csv", "back2norm-time": 2}],
    "underlimit": [{"name": "u", "default": [0], "limits": "low.csv"}]}"#;

fn flow_proto(dst: u32, proto: u128, packets: u128, at: u64) -> Flow {
    let mut f = flow(dst, 100);
    f.time_ms = at;
    f.set(FieldId::Proto, proto);
    f.set(FieldId::Packets, packets);
    f
}

/// Start events as (first key value, second key value, seconds after T0).
fn starts_of(rx: &Receiver<Event>) -> Vec<(String, String, u64)> {
    rx.try_iter().filter(|e| e.phase == Phase::Start).map(|e| (e.keys[0].clone(), e.keys[1].clone(), (e.time_ms - T0) / 1000)).collect()
}

#[test]
fn a_nested_average_keeps_its_own_thresholds_listed_keys_and_reloads() {
    let d = tmp("nest-limits");
    let (m, rx) = nested_with_limits(&d, "0.0.0.1,17,5\n0.0.0.2,6,1\n", "0.0.0.9,1,3\n");
    let mut feed = Feed::new(m.clone());
    // Over the file's thresholds on the crossing flow: 6 > 5 for (1, 17), 2 > 1 for (2, 6);
    // (1, 6) is under the default 10.
    for f in [flow_proto(1, 17, 6, T0), flow_proto(1, 6, 6, T0), flow_proto(2, 6, 2, T0)] {
        feed.push(&f);
    }
    feed.flush();
    assert_eq!(starts_of(&rx[1]), [("0.0.0.1".into(), "17".into(), 0), ("0.0.0.2".into(), "6".into(), 0)]);
    assert_eq!((keys_and_dropped(&m[0]), keys_and_dropped(&m[1])), ((2, 0), (3, 0)), "each its own keys");
    // The listed key of the underlimit (9, ICMP) goes in, for the nested average alone, once
    // the object has had traffic for a minute; it starts at the next sweep.
    for s in 1..=62u64 {
        Mavg::sweep_group(&m, T0 + s * 1000);
        feed.push(&flow_proto(0, 6, 1, T0 + s * 1000 + 500));
        feed.flush();
    }
    assert_eq!(starts_of(&rx[1]), [("0.0.0.9".into(), "1".into(), 62)]);
    // The first forgets its idle keys; the nested one, with an underlimit, keeps them.
    assert_eq!((keys_and_dropped(&m[0]).0, keys_and_dropped(&m[1]).0), (1, 5), "0.0.0.0 in both, (9, 1) in the nested one");
    assert!(events(&rx[0]).is_empty());
    // A reload with another threshold for (1, 17): the row keeps its average and gets it.
    let dump = |m: &Mavg| m.dump_text(T0 + 62_600, "t").lines().filter(|l| l.contains("'0.0.0.1'")).map(String::from).collect::<Vec<_>>();
    assert!(dump(&m[1]).is_empty(), "(1, 17) idle for a minute: a rate of 0 is not dumped");
    feed.push(&flow_proto(1, 17, 4, T0 + 62_600));
    feed.flush();
    assert_eq!(dump(&m[1]), [" '0.0.0.1'  17  :: 4 (5 0 )"]);
    std::fs::write(d.join("pps.csv"), "0.0.0.1,17,50\n").unwrap();
    let file = d.join("mo.conf");
    m[1].reload_from(parse(&file, "obj", &d, &json::parse(NESTED_WITH_LIMITS, &file).unwrap(), 1).unwrap()).unwrap();
    assert_eq!(dump(&m[1]), [" '0.0.0.1'  17  :: 4 (50 0 )"]);
}

#[test]
fn an_alert_of_a_nested_average_is_taken_up_in_its_own_row_and_ended_by_a_retirement() {
    let d = tmp("nest-take-up");
    let (m, rx) = nested_with_limits(&d, "", "");
    let n = left_files(&d, &[("obj-pps-b-0.0.0.7-17", "0.0.0.7 17 40 10\n")]);
    assert_eq!(take_up_alerts(&n, &m, T0).taken, ["obj-pps-b-0.0.0.7-17"]);
    let counts = |f: fn(&MavgStats) -> usize| m.iter().map(|m| f(&m.stats)).collect::<Vec<_>>();
    assert_eq!((counts(|s| s.active.load(Ordering::Relaxed)), counts(|s| s.keys.load(Ordering::Relaxed))), (vec![0, 1], vec![0, 1]), "the nested average's key alone");
    assert_eq!(m[1].dump_text(T0, "t").lines().nth(2), Some(" '0.0.0.7'  17  :: 40 (10 0 )"));
    // Its flows find that row; the first average gets a row of its own.
    let mut feed = Feed::new(m.clone());
    feed.push(&flow_proto(7, 17, 1, T0 + 10));
    feed.flush();
    assert_eq!(counts(|s| s.keys.load(Ordering::Relaxed)), [1, 1]);
    assert!(starts_of(&rx[1]).is_empty(), "still the alert taken up");
    // Retired (a reload dropped it): its alert ends, with the key's text.
    let retired = m[1].retire(&[], T0 + 20);
    let ended: Vec<_> = retired.ended.iter().map(|e| (e.phase, e.keys.clone())).collect();
    assert_eq!(ended, [(Phase::Back2Norm, vec!["0.0.0.7".to_string(), "17".into()])]);
    assert!(events(&rx[0]).is_empty());
}

#[test]
fn a_reload_takes_over_a_nested_table_of_the_same_shape_only() {
    let d = tmp("nest-reload");
    let (old, _rx) = nested_with_limits(&d, "", "");
    let mut feed = Feed::new(old.clone());
    for i in 0..10u64 {
        feed.push(&flow_proto(7, 17, 2, T0 + i));
    }
    feed.flush();
    let dumps: Vec<String> = old.iter().map(|m| m.dump_text(T0 + 10, "t")).collect();
    assert!(dumps[0].contains("'0.0.0.7'  :: 499 (") && dumps[1].contains("'0.0.0.7'  17  :: 20 ("), "{dumps:?}");
    let (new, _rx) = nested_with_limits(&d, "", "");
    assert!(Mavg::adopt(&new, &[&old[0], &old[1]]));
    assert_eq!(new.iter().map(|m| m.dump_text(T0 + 10, "t")).collect::<Vec<_>>(), dumps, "averages kept");
    assert_eq!((new[0].stats.keys.load(Ordering::Relaxed), new[1].stats.keys.load(Ordering::Relaxed)), (1, 1));
    // A table of the same keys (not nested) does not take it over.
    let (same_keys, _rx) = object_mavgs_sharded(&[BPS, PPS], &d, 4);
    assert!(!Mavg::adopt(&same_keys, &[&new[0], &new[1]]));
}
