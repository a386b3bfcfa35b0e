//! Alerts end to end with --read-pcap on a crafted capture: a quiet baseline, a flood against
//! one host, quiet again. The action script gets the documented argv while the notification
//! file exists with the documented content, the back-to-normal script runs once and the file
//! is gone, and the extended window holds exactly the flood. Then live over UDP: from crafted
//! datagrams, and from real exporters (softflowd and pmacct, NetFlow v5, v9 and IPFIX)
//! metering a capture of a flood, over IPv4 and IPv6.

mod common;

use common::{free_port, http_get, metric, v9_frame, workdir, write_pcap, CraftedFlow, Frame, Running, TestDir};
use std::path::Path;
use std::process::Command;

const T0: u64 = 1_795_756_000_000; // a multiple of 10 s, in ms

fn flow(dst: [u8; 4], octets: u32) -> CraftedFlow {
    CraftedFlow { src: [198, 51, 100, 7], dst, proto: 17, dport: 53, octets, packets: 1 }
}

/// Baseline 0-20 s and 40-60 s: five hosts, 1000 bytes per second each. Flood 20-30 s: every
/// 100 ms ten flows of 100,000 bytes to 10.0.0.9. `until_s` cuts the capture short.
fn capture(until_s: u64) -> (Vec<Frame>, u64) {
    let mut frames = Vec::new();
    let mut flood_octets = 0u64;
    for s in (0..20).chain(40..60).filter(|&s| s < until_s) {
        let flows: Vec<_> = (1..=5).map(|h| flow([10, 0, 0, h], 1000)).collect();
        frames.push(v9_frame(T0 + s * 1000, &flows));
    }
    for tenth in (200..300).filter(|&t| t < until_s * 10) {
        frames.push(v9_frame(T0 + tenth * 100, &[flow([10, 0, 0, 9], 100_000); 10]));
        flood_octets += 10 * 100_000;
    }
    frames.sort_by_key(|f| (f.sec, f.usec));
    (frames, flood_octets)
}

/// An executable shell script at `path`.
fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A script `name` in `dir` that appends its argv to `<name>.log`, `XENOEYE_KIND` and
/// `XENOEYE_EVENT` to `<name>.env`, and `XENOEYE_SILENT_EXPORTERS` to `<name>.silent`;
/// returns its path.
fn script(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    let body = format!(
        "echo \"$@\" >> {}\necho \"$XENOEYE_KIND $XENOEYE_EVENT\" >> {}\necho \"$XENOEYE_SILENT_EXPORTERS\" >> {}",
        file("log"),
        file("env"),
        file("silent")
    );
    write_script(&path, &body);
    path.display().to_string()
}

/// The `victim` object in `d` (made by [`victim_dirs`]): bytes per destination over 2 s, one
/// overlimit `level1` at `threshold` B/s running `script`.
fn victim_over(d: &Path, threshold: u64, script: &Path) {
    victim_average(d, 2, &format!(r#""overlimit": [ {{"name": "level1", "default": [{threshold}], "action-script": "{}"}} ]"#, script.display()));
}

/// The `victim` object in `d` with one moving average `m` of bytes per destination over
/// `time` seconds, with `limits` (its `overlimit` or `underlimit` element, as JSON).
fn victim_average(d: &Path, time: u32, limits: &str) {
    let conf = format!(r#"{{ "filter": "dst net 10.0.0.0/24", "mavg": [ {{"name": "m", "time": {time}, "fields": ["dst host", "octets"], {limits} }} ] }}"#);
    std::fs::write(d.join("mo/victim/mo.conf"), conf).unwrap();
}

/// A test's directory with the `victim` object's directory, `exp` and `notifications`.
fn victim_dirs(tag: &str) -> TestDir {
    let d = workdir(tag);
    for sub in ["mo/victim", "exp", "notifications"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    d
}

/// A collector set-up with the `victim` object in `d` (made by [`victim_dirs`]); returns the
/// config file.
fn setup(d: &Path) -> std::path::PathBuf {
    let (on, off) = (script(d, "on-start.sh"), script(d, "on-stop.sh"));
    std::fs::write(
        d.join("mo/victim/mo.conf"),
        format!(
            r#"{{ "filter": "dst net 10.0.0.0/24",
                 "fwm": [ {{"name": "all", "fields": ["octets"], "time": 10}},
                          {{"name": "ext", "extended": true, "fields": ["octets", "src host", "dst host"], "time": 10}} ],
                 "mavg": [ {{"name": "m", "time": 2, "dump": 2, "fields": ["dst host", "octets"],
                            "overlimit": [ {{"name": "level1", "default": [100000], "back2norm-time": 5,
                                            "action-script": "{on}", "back2norm-script": "{off}", "ext": ["ext"],
                                            "action-lua": "on_overlimit", "back2norm-lua": "on_back2norm"}},
                                          {{"name": "level2", "default": [200000], "back2norm-time": 5, "action-lua": "spin"}},
                                          {{"name": "level3", "default": [300000], "back2norm-time": 5, "action-lua": "hog"}},
                                          {{"name": "level4", "default": [400000], "back2norm-time": 5, "action-lua": "slow"}} ] }} ] }}"#
        ),
    )
    .unwrap();
    // Lua hooks: two that log the event table, one that never returns.
    std::fs::write(
        d.join("mo/victim/mo.lua"),
        r#"
local function line(ev)
  return table.concat({ev.object, ev.mavg, ev.limit, ev.kind, ev.phase, table.concat(ev.keys, ","),
    ev.key["dst host"], ev.field, string.format("%d %d", ev.value, ev.threshold), ev.notification,
    string.format("%.1f %.1f", ev.time, ev.start)}, " ")
end
function on_overlimit(ev) xe.append_file(xe.dir .. "/lua.log", line(ev) .. "\n") end
function on_back2norm(ev) xe.append_file(xe.dir .. "/lua.log", line(ev) .. "\n") end
function spin(ev) while true do end end
function hog(ev) local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end end
function slow(ev)
  local code, err = xe.run({"/bin/sleep", "30"}, 0.2)
  error("sleep ended: " .. tostring(code) .. " " .. tostring(err))
end
"#,
    )
    .unwrap();
    // Dump triggers: rewrite m.dump and append to m.adump every 2 s.
    std::fs::write(d.join("mo/victim/m.d"), "").unwrap();
    std::fs::write(d.join("mo/victim/m.a"), "").unwrap();
    collector_conf(d)
}

/// xenoeye.conf (and an empty devices.conf) for the objects under `d`/mo; returns its path.
fn collector_conf(d: &Path) -> std::path::PathBuf {
    std::fs::write(d.join("devices.conf"), "[]").unwrap();
    let conf = d.join("xenoeye.conf");
    std::fs::write(
        &conf,
        r#"{ "capture": [ {"socket": {"port": 2055}} ], "templates": {"db": "t.db"}, "devices": "devices.conf",
             "mo-dir": "mo", "export-dir": "exp", "notifications-dir": "notifications" }"#,
    )
    .unwrap();
    conf
}

/// `xenoeye --check-config` on `conf`: its exit status and its log.
fn check_config(conf: &Path) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(conf).arg("--check-config").output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn replay(conf: &Path, frames: &[Frame]) -> String {
    let pcap = conf.with_file_name("capture.pcap");
    write_pcap(&pcap, frames);
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(conf).arg("--read-pcap").arg(&pcap).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn notification_file_exists_during_the_flood() {
    let d = victim_dirs("alerts-during");
    let conf = setup(&d);
    // The capture stops in the middle of the flood.
    replay(&conf, &capture(25).0);
    let notif = d.join("notifications/victim-m-level1-10.0.0.9");
    let text = std::fs::read_to_string(&notif).unwrap();
    // Key, current rate (rewritten every 3 s: last at 24 s, 5 MB/s flood averaged over 2 s
    // windows of 100 ms steps), threshold.
    let f: Vec<&str> = text.trim_end().split(' ').collect();
    assert_eq!((f.len(), f[0], f[2]), (3, "10.0.0.9", "100000"), "{text}");
    assert!(f[1].parse::<u64>().unwrap() > 1_000_000, "{text}");
    assert!(std::fs::read_to_string(d.join("on-stop.sh.log")).is_err(), "no back-to-normal yet");
}

#[test]
fn flood_runs_the_scripts_with_the_documented_argv() {
    let d = victim_dirs("alerts");
    let conf = setup(&d);
    let (frames, flood_octets) = capture(60);
    let err = replay(&conf, &frames);
    let notif = d.join("notifications/victim-m-level1-10.0.0.9");
    // The third flow of the first flood datagram crosses: 3 x 100,000 bytes in 2 s = 150,000 B/s.
    let started = std::fs::read_to_string(d.join("on-start.sh.log")).unwrap();
    assert_eq!(started, format!("victim m level1 {} 10.0.0.9 150000 100000\n", notif.display()), "ran once, this argv");
    // Back to normal once, at the first datagram 5 s after the flood (40 s): rate 0.
    let stopped = std::fs::read_to_string(d.join("on-stop.sh.log")).unwrap();
    assert_eq!(stopped, format!("victim m level1 {} 10.0.0.9 0 100000\n", notif.display()), "ran once, this argv");
    let env = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
    assert_eq!((env("on-start.sh.env"), env("on-stop.sh.env")), ("overlimit start\n".into(), "overlimit back2norm\n".into()), "XENOEYE_KIND, XENOEYE_EVENT");
    assert_eq!(env("on-start.sh.silent"), "\n", "XENOEYE_SILENT_EXPORTERS: none in a replay");
    assert!(!notif.exists(), "the notification file is removed at back-to-normal");

    // The extended window: only while the limit held (20.0 s .. 40 s). The crossing (third flow
    // of the first flood datagram) is found when that datagram is done, so the extended window
    // counts the flood from the second flood datagram on.
    let mut ext_octets = 0u64;
    let mut ext_windows = Vec::new();
    for e in std::fs::read_dir(d.join("exp")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("victim_ext_") {
            continue;
        }
        ext_windows.push(name.clone());
        let text = std::fs::read_to_string(d.join("exp").join(&name)).unwrap();
        for line in text.lines().filter(|l| l.contains("to_timestamp(")) {
            assert!(line.contains("'10.0.0.9'"), "only flood rows: {line}");
            ext_octets += line.split(',').nth(1).unwrap().trim().parse::<u64>().unwrap();
        }
    }
    ext_windows.sort();
    assert_eq!(ext_windows, vec![format!("victim_ext_{}.sql", T0 / 1000 + 20)]);
    assert_eq!(ext_octets, flood_octets - 1_000_000);
    assert!(err.contains("alert events"), "{err}");

    // Dumps: the last one (capture end, quiet again: five hosts at 1000 B/s each); the appended
    // ones include the flood.
    let dump = std::fs::read_to_string(d.join("mo/victim/m.dump")).unwrap();
    eprintln!("DUMP{dump}");
    let lines: Vec<&str> = dump.lines().collect();
    assert!(lines[1].starts_with("mem used/avail: 0M/256M ("), "{dump}");
    let mut hosts: Vec<&str> = lines[2..].to_vec();
    hosts.sort();
    assert_eq!(hosts, (1..=5).map(|h| format!(" '10.0.0.{h}'  :: 1000 (100000 200000 300000 400000 )")).collect::<Vec<_>>(), "{dump}");
    let adump = std::fs::read_to_string(d.join("mo/victim/m.adump")).unwrap();
    assert!(adump.matches("mem used/avail:").count() >= 25, "one dump every 2 s of capture");
    assert!(adump.lines().any(|l| l.starts_with(" '10.0.0.9'  :: ") && l.ends_with(" (100000 200000 300000 400000 )")), "{adump}");

    // The Lua hooks got the exact event fields; the looping one was cut, the memory hog and the
    // one whose program outlived its timeout failed, all counted and logged, and everything
    // above (scripts, files, exports) is complete all the same.
    let t = T0 / 1000;
    let lua = std::fs::read_to_string(d.join("mo/victim/lua.log")).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(
        lua,
        format!(
            "victim m level1 overlimit start 10.0.0.9 10.0.0.9 octets 150000 100000 {n} {a}.0 {a}.0\n\
             victim m level1 overlimit back2norm 10.0.0.9 10.0.0.9 octets 0 100000 {n} {b}.0 {a}.0\n",
            n = notif.display(),
            a = t + 20,
            b = t + 40
        )
    );
    assert!(err.contains("lua hooks 5 (errors 2, cut 1, dropped 0)"), "{err}");
    assert!(err.contains("lua hook victim/m/level2 spin: ") && err.contains("instruction limit"), "{err}");
    assert!(err.contains("lua hook victim/m/level3 hog: ") && err.contains("memory"), "{err}");
    assert!(err.contains("lua hook victim/m/level4 slow: ") && err.contains("sleep ended: nil /bin/sleep: killed after 0.2 s"), "{err}");
    assert!(err.contains("mo.lua:"), "errors carry the Lua file and line: {err}");
}

#[test]
fn two_averages_sharing_a_table_each_alert_with_their_own_scripts() {
    // Bytes and packets per destination over different windows: the same keys, so one table.
    pair_alerts("alerts-shared", "", "share a table (the same keys)");
}

#[test]
fn the_guides_pair_nested_in_one_table_each_alert_with_their_own_scripts() {
    // Bytes per destination, packets per destination and protocol: the second nested in the
    // first's table, its key the address and the protocol.
    pair_alerts("alerts-nested", "proto", "share a table (nested: the same keys and one field more)");
}

/// The `pair` object's two averages, bytes per `dst host` over 2 s and packets per `dst host`
/// (and `extra`, if not empty) over 1 s, each with its own scripts, through the flood capture:
/// the log says how they share a table (`sharing`), each alerts and ends as alone.
fn pair_alerts(tag: &str, extra: &str, sharing: &str) {
    let d = workdir(tag);
    for sub in ["mo/pair", "exp", "notifications"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let limit = |name: &str, threshold: u64| {
        let (on, off) = (script(&d, &format!("{name}-start.sh")), script(&d, &format!("{name}-stop.sh")));
        format!(r#"[ {{"name": "level1", "default": [{threshold}], "back2norm-time": 5, "action-script": "{on}", "back2norm-script": "{off}"}} ]"#)
    };
    let pps_keys = if extra.is_empty() { r#""dst host""#.to_string() } else { format!(r#""dst host", "{extra}""#) };
    std::fs::write(
        d.join("mo/pair/mo.conf"),
        format!(
            r#"{{ "filter": "dst net 10.0.0.0/24",
                 "mavg": [ {{"name": "bps", "time": 2, "fields": ["dst host", "octets"], "overlimit": {bps}}},
                           {{"name": "pps", "time": 1, "fields": [{pps_keys}, "packets"], "overlimit": {pps}}} ] }}"#,
            bps = limit("bps", 100_000),
            pps = limit("pps", 50)
        ),
    )
    .unwrap();
    let conf = collector_conf(&d);
    let err = replay(&conf, &capture(60).0);
    assert!(err.contains(&format!("pair: moving averages bps and pps {sharing}")), "{err}");
    let log = |name: &str| std::fs::read_to_string(d.join(format!("{name}.sh.log"))).unwrap_or_else(|e| panic!("{name}: {e}: {err}"));
    // The flood's flows are UDP (17): the nested average's key is the address and 17.
    let (pps_key, pps_args) = if extra.is_empty() { ("10.0.0.9", "10.0.0.9") } else { ("10.0.0.9-17", "10.0.0.9 17") };
    let notif = |m: &str, key: &str| d.join(format!("notifications/pair-{m}-level1-{key}")).display().to_string();
    // Bytes: as with a table of its own (the third flow of the first flood datagram crosses).
    assert_eq!(log("bps-start"), format!("pair bps level1 {} 10.0.0.9 150000 100000\n", notif("bps", "10.0.0.9")));
    // Packets: ten per 100 ms over 1 s windows (N = 0.9 N + 10 per datagram) crosses 50 on the
    // eighth flow of the seventh datagram: 0.9 * 46.86 + 8 = 50.2 packets/s.
    assert_eq!(log("pps-start"), format!("pair pps level1 {} {pps_args} 50 50\n", notif("pps", pps_key)));
    assert_eq!(log("bps-stop"), format!("pair bps level1 {} 10.0.0.9 0 100000\n", notif("bps", "10.0.0.9")));
    assert_eq!(log("pps-stop"), format!("pair pps level1 {} {pps_args} 0 50\n", notif("pps", pps_key)));
    let left: Vec<_> = std::fs::read_dir(d.join("notifications")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "notification files gone at back-to-normal: {left:?}");
}

/// An uplink's traffic: 10.0.0.2 gets 10,000 bytes at every whole second (its average never
/// below 5,000 B/s), 10.0.0.1 gets 1,000 bytes every 100 ms at .05, .15, ... s, except from
/// 20 s to 30 s (the drop). `until_s` cuts the capture short.
fn uplink_capture(until_s: u64) -> Vec<Frame> {
    let mut frames: Vec<Frame> = (0..=until_s).map(|s| v9_frame(T0 + s * 1000, &[flow([10, 0, 0, 2], 10_000)])).collect();
    let busy = (0..200).chain(300..until_s * 10).filter(|&t| t < until_s * 10);
    frames.extend(busy.map(|tenth| v9_frame(T0 + tenth * 100 + 50, &[flow([10, 0, 0, 1], 1000)])));
    frames.sort_by_key(|f| (f.sec, f.usec));
    frames
}

#[test]
fn a_traffic_drop_starts_an_underlimit_and_its_return_ends_it() {
    let d = victim_dirs("alerts-under");
    let (on, off) = (script(&d, "on-start.sh"), script(&d, "on-stop.sh"));
    victim_average(
        &d,
        2,
        &format!(
            r#""underlimit": [ {{"name": "drop", "default": [2000], "back2norm-time": 3,
                                "action-script": "{on}", "back2norm-script": "{off}",
                                "action-lua": "hook", "back2norm-lua": "hook"}} ]"#
        ),
    );
    // The Lua hooks log what they are told.
    std::fs::write(
        d.join("mo/victim/mo.lua"),
        r#"function hook(ev) xe.append_file(xe.dir .. "/lua.log", string.format("%s %s %s %.0f %.0f\n", ev.kind, ev.phase, ev.key["dst host"], ev.value, ev.threshold)) end"#,
    )
    .unwrap();
    let conf = collector_conf(&d);
    let notif = d.join("notifications/victim-m-drop-10.0.0.1");

    // Cut during the drop. The sweeps run at whole seconds (at the datagram of 10.0.0.2, before
    // its flow). At 21 s the last flow (19.95 s) is 1.05 s old: 10.0.0.1's sum, 20,000 in the
    // steady state, decayed to 9,500 (4,750 B/s). At 22 s it is a whole window old: 0 B/s.
    replay(&conf, &uplink_capture(27));
    assert_eq!(std::fs::read_to_string(&notif).unwrap(), "10.0.0.1 0 2000\n");
    assert_eq!(std::fs::read_dir(d.join("notifications")).unwrap().count(), 1, "10.0.0.2 never under");
    std::fs::remove_file(&notif).unwrap();
    std::fs::remove_file(d.join("on-start.sh.log")).unwrap();
    std::fs::remove_file(d.join("mo/victim/lua.log")).unwrap();

    let err = replay(&conf, &uplink_capture(46));
    let started = std::fs::read_to_string(d.join("on-start.sh.log")).unwrap();
    assert_eq!(started, format!("victim m drop {} 10.0.0.1 0 2000\n", notif.display()), "ran once, this argv");
    assert!(err.contains("underlimit victim/m/drop 10.0.0.1: 0 < 2000"), "{err}");
    // Last under at the 30 s sweep (the traffic comes back at 30.05 s); back to normal at the
    // first sweep 3 s later, with the rate then: 30 flows of 1,000 bytes 100 ms apart over a
    // 2 s window (the first one starting the sum anew), decayed for the 50 ms to 33 s.
    let mut n = 0.0f64;
    for i in 0..30 {
        n = if i == 0 { 1000.0 } else { n - 0.05 * n + 1000.0 };
    }
    let rate = ((n - 0.025 * n) / 2.0).round();
    assert_eq!(rate, 7657.0, "the direct computation");
    let stopped = std::fs::read_to_string(d.join("on-stop.sh.log")).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(stopped, format!("victim m drop {} 10.0.0.1 {rate} 2000\n", notif.display()), "ran once, this argv");
    assert!(err.contains("back to normal victim/m/drop 10.0.0.1"), "{err}");
    // The scripts are told the limit's kind and the event in their environment.
    assert_eq!(std::fs::read_to_string(d.join("on-stop.sh.env")).unwrap(), "underlimit back2norm\n");
    assert_eq!(std::fs::read_to_string(d.join("on-start.sh.env")).unwrap(), "underlimit start\nunderlimit start\n", "both replays");
    assert!(!notif.exists(), "the notification file is removed at back-to-normal");
    let lua = std::fs::read_to_string(d.join("mo/victim/lua.log")).unwrap();
    assert_eq!(lua, format!("underlimit start 10.0.0.1 0 2000\nunderlimit back2norm 10.0.0.1 {rate} 2000\n"), "the Lua hooks");
}

#[test]
fn an_underlimit_is_not_started_by_averages_still_filling_after_the_start() {
    let d = victim_dirs("alerts-under-fill");
    let on = script(&d, "on-start.sh");
    // A 10 s window and a threshold at half the steady rates: both hosts' averages read under
    // it for their first seconds, while they fill.
    victim_average(&d, 10, &format!(r#""underlimit": [ {{"name": "drop", "default": [5000], "back2norm-time": 3, "action-script": "{on}"}} ]"#));
    let conf = collector_conf(&d);
    let err = replay(&conf, &uplink_capture(27));
    // 10.0.0.1's traffic stops at 19.95 s; its sum then, by the formula, decayed to the sweep
    // at 25 s (at 24 s it is still over 5,000 B/s).
    let mut n = 0.0f64;
    for i in 0..200 {
        n = if i == 0 { 1000.0 } else { n - 0.01 * n + 1000.0 };
    }
    let rate = ((n - 0.505 * n) / 10.0).round();
    assert_eq!(rate, 4287.0, "the direct computation");
    let notif = d.join("notifications/victim-m-drop-10.0.0.1");
    let started = std::fs::read_to_string(d.join("on-start.sh.log")).unwrap_or_default();
    assert_eq!(started, format!("victim m drop {} 10.0.0.1 {rate} 5000\n", notif.display()), "only the drop, once: {err}");
    assert!(err.contains(&format!("underlimit victim/m/drop 10.0.0.1: {rate} < 5000")), "{err}");
    assert_eq!(std::fs::read_dir(d.join("notifications")).unwrap().count(), 1, "10.0.0.2 never under");
}

#[test]
fn a_host_listed_for_an_underlimit_and_silent_from_the_start_is_alerted_after_a_minute_of_traffic() {
    let d = victim_dirs("alerts-under-listed");
    let on = script(&d, "on-start.sh");
    std::fs::write(d.join("mo/victim/drop.csv"), "# host, bytes/s\n10.0.0.1,2000\n10.0.0.7,2000\n").unwrap();
    victim_average(&d, 2, &format!(r#""underlimit": [ {{"name": "drop", "limits": "drop.csv", "back2norm-time": 3, "action-script": "{on}"}} ]"#));
    let conf = collector_conf(&d);
    // 10.0.0.1: 1,000 bytes every 100 ms (10,000 B/s) for `until_s`; 10.0.0.7 never.
    let capture = |until_s: u64| -> Vec<Frame> { (0..until_s * 10).map(|tenth| v9_frame(T0 + tenth * 100 + 50, &[flow([10, 0, 0, 1], 1000)])).collect() };
    let notif = d.join("notifications/victim-m-drop-10.0.0.7");

    // Under a minute of traffic: a listed host not seen yet may still come.
    let err = replay(&conf, &capture(55));
    assert!(!d.join("on-start.sh.log").exists() && !notif.exists(), "{err}");

    // The sweep at 1 s finds traffic; 10.0.0.7 is watched from 61 s and under 2,000 B/s at
    // the next sweep, with a rate of 0. 10.0.0.1 is never under.
    let err = replay(&conf, &capture(70));
    assert!(err.contains("victim/m: 1 keys listed for underlimits and not seen since traffic began are watched from now"), "{err}");
    let started = std::fs::read_to_string(d.join("on-start.sh.log")).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(started, format!("victim m drop {} 10.0.0.7 0 2000\n", notif.display()), "ran once, this argv");
    assert_eq!(std::fs::read_to_string(&notif).unwrap(), "10.0.0.7 0 2000\n");
    assert_eq!(std::fs::read_dir(d.join("notifications")).unwrap().count(), 1, "10.0.0.1 never under");
}

#[test]
fn a_full_mem_m_skips_new_keys_with_a_warning_and_known_keys_still_alert() {
    let d = victim_dirs("alerts-mem-m");
    let on = script(&d, "on-start.sh");
    std::fs::write(
        d.join("mo/victim/mo.conf"),
        format!(
            r#"{{ "filter": "dst net 10.0.0.0/16",
                 "mavg": [ {{"name": "m", "time": 2, "mem-m": 1, "fields": ["dst host", "octets"],
                            "overlimit": [ {{"name": "level1", "default": [50000], "action-script": "{on}"}} ] }} ] }}"#
        ),
    )
    .unwrap();
    // 1 MiB holds 10,280 keys of 102 bytes (README: a 32-byte slot, 3.2 slots per key).
    // 10,400 addresses of 200 bytes each in the first 200 ms: the last 120 are not tracked.
    let hosts: Vec<[u8; 4]> = (0..10_400u32).map(|i| [10, 0, (i >> 8) as u8, i as u8]).collect();
    let mut frames: Vec<Frame> = hosts.chunks(60).enumerate().map(|(i, c)| v9_frame(T0 + i as u64, &c.iter().map(|&h| flow(h, 200)).collect::<Vec<_>>())).collect();
    // The sweep at 1 s warns. At 1.5 s a flood to the first address (tracked) and to the last
    // (not tracked).
    frames.push(v9_frame(T0 + 1000, &[flow(hosts[1], 200)]));
    frames.push(v9_frame(T0 + 1500, &[flow(hosts[0], 1_000_000), flow(hosts[10_399], 1_000_000)]));
    let err = replay(&collector_conf(&d), &frames);
    assert!(
        err.contains("victim/m: mem-m (1 MiB) full with 10280 keys: 120 flows of new keys not tracked since the last warning (120 in all); known keys go on"),
        "{err}"
    );
    // 10.0.0.0: 200 bytes at 0 ms, decayed over 1.5 s of a 2 s window, plus 1,000,000.
    let started = std::fs::read_to_string(d.join("on-start.sh.log")).unwrap_or_else(|e| panic!("{e}: {err}"));
    let notif = d.join("notifications/victim-m-level1-10.0.0.0");
    assert_eq!(started, format!("victim m level1 {} 10.0.0.0 500025 50000\n", notif.display()), "only the tracked key");
}

#[test]
fn an_alert_switches_on_another_objects_extended_window_named_object_slash_name() {
    let d = victim_dirs("alerts-ext-other");
    std::fs::create_dir_all(d.join("mo/forensics")).unwrap();
    std::fs::write(
        d.join("mo/forensics/mo.conf"),
        r#"{ "filter": "dst net 10.0.0.0/24",
             "fwm": [ {"name": "talkers", "extended": true, "fields": ["octets", "src host", "dst host"], "time": 10} ] }"#,
    )
    .unwrap();
    let victim = |ext: &str| {
        let text = format!(
            r#"{{ "filter": "dst net 10.0.0.0/24",
                 "mavg": [ {{"name": "m", "time": 2, "fields": ["dst host", "octets"],
                            "overlimit": [ {{"name": "level1", "default": [100000], "back2norm-time": 5,
                                            "ext": ["{ext}"]}} ] }} ] }}"#
        );
        std::fs::write(d.join("mo/victim/mo.conf"), text).unwrap();
    };
    let conf = collector_conf(&d);

    // A window that is not there: the error names the file, line, column and key.
    victim("nosuch/talkers");
    let (status, err) = check_config(&conf);
    assert_eq!(status.code(), Some(2), "{err}");
    let file = d.join("mo/victim/mo.conf");
    assert!(err.contains(&format!("{}:4:53: 'mavg[0].overlimit[0].ext[0]': no window \"talkers\" in object \"nosuch\"", file.display())), "{err}");
    // An ordinary window: a warning (it is always on).
    std::fs::write(d.join("mo/forensics/mo.conf"), r#"{ "filter": "dst net 10.0.0.0/24", "fwm": [ {"name": "talkers", "fields": ["octets", "dst host"]} ] }"#).unwrap();
    victim("forensics/talkers");
    let (status, err) = check_config(&conf);
    assert!(status.success(), "a warning, not an error: {err}");
    let want = "4:53: 'mavg[0].overlimit[0].ext[0]': window \"talkers\" of object \"forensics\" is not \"extended\": it collects all the time, alerts change nothing";
    assert!(err.contains(&format!("{}:{want}", file.display())), "{err}");
    std::fs::write(
        d.join("mo/forensics/mo.conf"),
        r#"{ "filter": "dst net 10.0.0.0/24",
             "fwm": [ {"name": "talkers", "extended": true, "fields": ["octets", "src host", "dst host"], "time": 10} ] }"#,
    )
    .unwrap();

    // The flood of `capture`: the other object's window has rows only while the alert holds,
    // from the flood datagram after the crossing one (as for an object's own window).
    victim("forensics/talkers");
    let (frames, flood_octets) = capture(60);
    replay(&conf, &frames);
    let mut files: Vec<String> = std::fs::read_dir(d.join("exp")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.starts_with("forensics_talkers_")).collect();
    files.sort();
    assert_eq!(files, vec![format!("forensics_talkers_{}.sql", T0 / 1000 + 20)]);
    let text = std::fs::read_to_string(d.join("exp").join(&files[0])).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("to_timestamp(")).collect();
    assert_eq!(rows.len(), 1, "one talker: {text}");
    assert!(rows[0].contains("'198.51.100.7'") && rows[0].contains("'10.0.0.9'"), "{text}");
    assert_eq!(rows[0].split(',').nth(1).unwrap().trim().parse::<u64>().unwrap(), flood_octets - 1_000_000);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Lines of a script log once it has at least `n` (bounded wait).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// xenoeye.conf (and an empty devices.conf) for the objects under `d`/mo, listening on
/// 127.0.0.1:`port`; returns its path.
fn live_conf(d: &Path, port: u16) -> std::path::PathBuf {
    live_conf_on(d, &[port])
}

/// Adds a top-level `"key": value` entry to the xenoeye.conf `conf`.
fn add_to_conf(conf: &Path, entry: &str) {
    let text = std::fs::read_to_string(conf).unwrap().replacen("{ ", &format!("{{ {entry}, "), 1);
    std::fs::write(conf, text).unwrap();
}

/// [`live_conf`] with a capture worker per port.
fn live_conf_on(d: &Path, ports: &[u16]) -> std::path::PathBuf {
    std::fs::write(d.join("devices.conf"), "[]").unwrap();
    let conf = d.join("xenoeye.conf");
    let sockets: Vec<String> = ports.iter().map(|p| format!(r#"{{"socket": {{"listen-on": "127.0.0.1", "port": {p}}}}}"#)).collect();
    std::fs::write(
        &conf,
        format!(
            r#"{{ "capture": [ {} ], "templates": {{"db": "t.db"}},
                 "devices": "devices.conf", "mo-dir": "mo", "export-dir": "exp", "notifications-dir": "notifications" }}"#,
            sockets.join(", ")
        ),
    )
    .unwrap();
    conf
}

/// Starts the collector on `conf` and waits until it is ready, as systemd does: READY=1 comes
/// once the UDP socket is bound (a fixed sleep here lost the flood on a slow start).
fn start_live(d: &Path, conf: &Path) -> Running {
    start_live_with(d, conf, std::process::Stdio::piped())
}

/// [`start_live`] with the collector's log written to the file `err` as it goes.
fn start_live_logging(d: &Path, conf: &Path, err: &Path) -> Running {
    start_live_with(d, conf, std::fs::File::create(err).unwrap().into())
}

fn start_live_with(d: &Path, conf: &Path, stderr: std::process::Stdio) -> Running {
    let sock = d.join("notify.sock");
    let _ = std::fs::remove_file(&sock);
    let ready = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    ready.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let child = Running::spawn(Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(conf).env("NOTIFY_SOCKET", &sock).stderr(stderr));
    let mut buf = [0u8; 256];
    let n = ready.recv(&mut buf).expect("READY=1 within 30 s");
    assert!(buf[..n].starts_with(b"READY=1"), "{}", String::from_utf8_lossy(&buf[..n]));
    child
}

/// Stops the collector (SIGTERM); returns its log, after checking it exited cleanly.
fn stop_live(child: Running) -> String {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// Sends flows to the collector on 127.0.0.1:`port`, as one NetFlow v9 datagram stamped now.
struct Exporter {
    socket: std::net::UdpSocket,
    port: u16,
}

impl Exporter {
    fn new(port: u16) -> Exporter {
        Exporter::from_address("127.0.0.1", port)
    }

    /// An exporter sending from `address` (a loopback address other than 127.0.0.1 is another
    /// exporter to the collector).
    fn from_address(address: &str, port: u16) -> Exporter {
        Exporter { socket: std::net::UdpSocket::bind((address, 0)).unwrap(), port }
    }

    fn send(&self, flows: &[CraftedFlow]) {
        let f = v9_frame(now_ms(), flows);
        self.socket.send_to(common::Frame::payload(&f), ("127.0.0.1", self.port)).unwrap();
    }

    /// A flood against 10.0.0.9 (10 MB/s): ten flows of 100,000 bytes every 100 ms, `times`
    /// times; returns the octets sent.
    fn flood(&self, times: usize) -> u64 {
        for _ in 0..times {
            self.send(&[flow([10, 0, 0, 9], 100_000); 10]);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        times as u64 * 10 * 100_000
    }

    /// The flood until the script log `log` has `n` lines (at most 10 s).
    fn flood_until(&self, log: &Path, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wait_lines(log, 0).len() < n && std::time::Instant::now() < deadline {
            self.flood(1);
        }
    }
}

/// The rows of the export files of `table` (names starting with it) in the directory `exp`:
/// each row's columns after its time, as written (addresses quoted).
fn export_rows(exp: &Path, table: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(exp).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with(table) {
            for l in std::fs::read_to_string(&p).unwrap().lines().filter(|l| l.contains("to_timestamp(")) {
                let columns = l.split(',').skip(1).map(|c| c.trim().trim_end_matches([')', ';']).trim()).filter(|c| !c.is_empty());
                rows.push(columns.map(String::from).collect());
            }
        }
    }
    rows
}

/// Octets (the first column) of the rows of the export files of `table` in `d`/exp.
fn exported(d: &Path, table: &str) -> u64 {
    export_rows(&d.join("exp"), table).iter().map(|row| row[0].parse::<u64>().unwrap()).sum()
}

#[test]
fn one_average_per_key_whatever_worker_its_flows_come_through() {
    // Two capture workers (a socket each), an exporter on each. A flow of 160,000 bytes
    // alone makes 80,000 B/s over the 2 s window, under the 120,000 threshold; the same from
    // both exporters within a moment crosses it, as the two workers update one average.
    let d = victim_dirs("alerts-two-workers");
    let script = d.join("on-start.sh");
    write_script(&script, &format!("echo \"$@\" >> {}", d.join("started.log").display()));
    victim_over(&d, 120_000, &script);
    let ports = [free_port(), free_port()];
    let conf = live_conf_on(&d, &ports);
    // With the metrics endpoint: the alert is counted there too.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    add_to_conf(&conf, &format!(r#""metrics-listen": "{metrics}""#));
    let child = start_live(&d, &conf);
    let (a, b) = (Exporter::new(ports[0]), Exporter::new(ports[1]));
    a.send(&[flow([10, 0, 0, 7], 160_000)]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    a.send(&[flow([10, 0, 0, 9], 160_000)]);
    b.send(&[flow([10, 0, 0, 9], 160_000)]);
    let started = wait_lines(&d.join("started.log"), 1);
    // Counters are published twice a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut page = String::new();
    while metric(&page, "xenoeye_hook_scripts_total{outcome=\"ok\"}") != Some(1) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        page = http_get(&metrics, "/metrics").unwrap_or_default();
    }
    let err = stop_live(child);
    assert_eq!(metric(&page, "xenoeye_hook_scripts_total{outcome=\"ok\"}"), Some(1), "{page}");
    assert_eq!((metric(&page, "xenoeye_hook_scripts_waiting"), metric(&page, "xenoeye_hook_scripts_running")), (Some(0), Some(0)), "{page}");
    assert_eq!((metric(&page, "xenoeye_hook_events_waiting"), metric(&page, "xenoeye_hook_oldest_wait_seconds"), metric(&page, "xenoeye_lua_hook_calls_waiting")), (Some(0), Some(0), Some(0)), "{page}");
    assert_eq!(metric(&page, "xenoeye_mavg_active_limits{object=\"victim\",mavg=\"m\"}"), Some(1), "{page}");
    assert_eq!(metric(&page, "xenoeye_mavg_keys{object=\"victim\",mavg=\"m\"}"), Some(2), "{page}");
    for p in ports {
        assert!(err.contains(&format!("listening: udp 127.0.0.1:{p}")), "a worker per socket: {err}");
    }
    assert_eq!(started.len(), 1, "only 10.0.0.9 crossed: {started:?}\n{err}");
    let notif = d.join("notifications/victim-m-level1-10.0.0.9");
    let prefix = format!("victim m level1 {} 10.0.0.9 ", notif.display());
    let value: u64 = started[0].strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(" 120000")).unwrap_or_else(|| panic!("{}", started[0])).parse().unwrap();
    // Both flows, the first decayed by the moment between them: at most 160,000 B/s.
    assert!((120_000..=160_000).contains(&value), "{value}");
}

#[test]
fn an_underlimit_started_while_an_exporter_is_silent_says_so_in_the_log_and_to_its_script() {
    // Two exporters, a host behind each; the second exporter stops. Its silence is told after
    // a second; its host's average reads 0 a window (4 s) after its last flow, and that
    // underlimit's start names the silent exporter. The busy host stays over its threshold.
    let d = victim_dirs("alerts-silent-exporter");
    let on = script(&d, "on-start.sh");
    victim_average(&d, 4, &format!(r#""underlimit": [ {{"name": "drop", "default": [100], "back2norm-time": 3, "action-script": "{on}", "action-lua": "hook"}} ]"#));
    std::fs::write(d.join("mo/victim/mo.lua"), r#"function hook(ev) xe.append_file(xe.dir .. "/lua.log", table.concat(ev.silent_exporters, " ") .. "\n") end"#).unwrap();
    let port = free_port();
    let conf = live_conf(&d, port);
    add_to_conf(&conf, r#""exporter-silence": 1"#);
    let err_log = d.join("stderr.log");
    let child = start_live_logging(&d, &conf, &err_log);
    let (a, b) = (Exporter::from_address("127.0.0.2", port), Exporter::from_address("127.0.0.3", port));
    // 1,000 bytes every 100 ms to each host (10,000 B/s); the second exporter for 2 s only.
    let started = d.join("on-start.sh.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    for tenth in 0.. {
        a.send(&[flow([10, 0, 0, 1], 1000)]);
        if tenth < 20 {
            b.send(&[flow([10, 0, 0, 2], 1000)]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        if started.exists() || std::time::Instant::now() > deadline {
            break;
        }
    }
    let lines = wait_lines(&started, 1);
    let err = stop_live(child) + &std::fs::read_to_string(&err_log).unwrap();
    let notif = d.join("notifications/victim-m-drop-10.0.0.2");
    assert_eq!(lines, vec![format!("victim m drop {} 10.0.0.2 0 100", notif.display())], "{err}");
    assert!(err.contains("exporter 127.0.0.3 silent for "), "{err}");
    let told = err.lines().find(|l| l.contains("underlimit victim/m/drop 10.0.0.2: 0 < 100")).unwrap_or_else(|| panic!("{err}"));
    assert!(told.contains(" (exporters silent: 127.0.0.3 (") && told.ends_with(" s); the drop may be theirs)"), "{told}");
    // The script and the Lua hook are told which exporters were silent (only the second).
    assert_eq!(std::fs::read_to_string(d.join("on-start.sh.silent")).unwrap(), "127.0.0.3\n");
    assert_eq!(std::fs::read_to_string(d.join("mo/victim/lua.log")).unwrap(), "127.0.0.3\n");
}

#[test]
fn live_flood_starts_the_script_within_a_second_and_sighup_applies_new_limits() {
    let d = victim_dirs("alerts-live");
    // The script logs the time it started (ms) and its argv.
    let script = d.join("on-start.sh");
    write_script(&script, &format!("echo \"$(date +%s%3N) $@\" >> {}", d.join("started.log").display()));
    std::fs::write(d.join("mo/victim/limits.csv"), "# host, bytes/s\n10.0.0.8,100000000\n").unwrap();
    std::fs::write(
        d.join("mo/victim/mo.conf"),
        format!(
            r#"{{ "filter": "dst net 10.0.0.0/24",
                 "mavg": [ {{"name": "m", "time": 2, "fields": ["dst host", "octets"],
                            "overlimit": [ {{"name": "level1", "default": [100000], "limits": "limits.csv",
                                            "back2norm-time": 2, "action-script": "{}"}} ] }} ] }}"#,
            script.display()
        ),
    )
    .unwrap();
    // An object that a reload removes: its window is written at the reload.
    std::fs::create_dir_all(d.join("mo/gone")).unwrap();
    std::fs::write(d.join("mo/gone/mo.conf"), r#"{"fwm": [{"name": "total", "fields": ["octets"], "time": 3600}]}"#).unwrap();
    let port = free_port();
    let conf = live_conf(&d, port);
    let child = start_live(&d, &conf);
    let exporter = Exporter::new(port);
    let send = |flows: &[CraftedFlow]| exporter.send(flows);
    // A quiet flow first: it makes its notification-free way through.
    send(&[flow([10, 0, 0, 1], 100)]);
    std::thread::sleep(std::time::Duration::from_millis(200));

    let flood_ms = now_ms();
    for _ in 0..5 {
        send(&[flow([10, 0, 0, 9], 100_000); 10]);
    }
    let started = wait_lines(&d.join("started.log"), 1);
    assert_eq!(started.len(), 1, "the action script ran");
    let script_ms: u64 = started[0].split(' ').next().unwrap().parse().unwrap();
    assert!(script_ms.saturating_sub(flood_ms) < 1000, "started {} ms after the flood", script_ms - flood_ms);
    assert!(started[0].contains(" victim m level1 ") && started[0].contains(" 10.0.0.9 "), "{}", started[0]);

    // 10.0.0.8 sends 20 kB every 100 ms (100 kB/s average): under its 100 MB/s limit. After the
    // limit is lowered and SIGHUP sent, the same traffic crosses it, averages kept.
    std::fs::write(d.join("mo/victim/limits.csv"), "10.0.0.8,1000\n").unwrap();
    // The same reload removes `gone` and adds `added`.
    std::fs::remove_dir_all(d.join("mo/gone")).unwrap();
    std::fs::create_dir_all(d.join("mo/added")).unwrap();
    std::fs::write(d.join("mo/added/mo.conf"), r#"{"filter": "dst host 10.0.0.8", "fwm": [{"name": "total", "fields": ["octets"], "time": 3600}]}"#).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut sent_to_8 = 0u64;
    while wait_lines(&d.join("started.log"), 0).len() < 2 && std::time::Instant::now() < deadline {
        send(&[flow([10, 0, 0, 8], 20_000)]);
        sent_to_8 += 20_000;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let started = wait_lines(&d.join("started.log"), 2);
    assert!(started.len() == 2 && started[1].contains(" 10.0.0.8 ") && started[1].ends_with(" 1000"), "{started:?}");

    let err = stop_live(child);
    assert!(err.contains("reload: 2 monitoring objects, 1 fixed window, 1 moving average (1 kept their averages)"), "{err}");
    // `gone` was written out at the reload with the flows before it; `added` counted 10.0.0.8
    // from the reload on and was written at exit.
    let exported = |table: &str| exported(&d, table);
    // Flows to 10.0.0.8 sent before the reload took effect count in `gone`, the rest in `added`.
    let (gone, added) = (exported("gone_total_"), exported("added_total_"));
    let before_reload = gone - (100 + 5 * 10 * 100_000);
    assert_eq!(before_reload + added, sent_to_8, "gone {gone}, added {added}");
    assert!(added > 0, "added counts from the reload on");
}

/// The addresses of a capture for real exporters: a protected network (10.0.0.0/24, or
/// 2001:db8::/64) and remote hosts sending to it.
#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// Host `h` of the protected network, as the collector writes it.
    fn host(self, h: u8) -> String {
        match self {
            Family::V4 => format!("10.0.0.{h}"),
            Family::V6 => format!("2001:db8::{h}"),
        }
    }

    /// The destination address field, in a key.
    fn dst_host(self) -> &'static str {
        match self {
            Family::V4 => "dst host",
            Family::V6 => "dst host6",
        }
    }

    /// A filter for the traffic to the protected network.
    fn to_network(self) -> &'static str {
        match self {
            Family::V4 => "dst net 10.0.0.0/24",
            Family::V6 => "dst net6 2001:db8::/64",
        }
    }

    /// A UDP frame from remote host `from` (port 40000 + `from`) to host `to` of the
    /// protected network, port 53.
    fn frame(self, from: u8, to: u8, payload: &[u8]) -> Vec<u8> {
        let ports = (40000 + from as u16, 53);
        match self {
            Family::V4 => common::udp_frame_between(([198, 51, 100, from], ports.0), ([10, 0, 0, to], ports.1), payload),
            Family::V6 => {
                let addr = |net: [u8; 6], h: u8| {
                    let mut a = [0u8; 16];
                    a[..6].copy_from_slice(&net);
                    a[15] = h;
                    a
                };
                common::udp6_frame_between((addr([0x20, 1, 0xd, 0xb8, 0, 0xff], from), ports.0), (addr([0x20, 1, 0xd, 0xb8, 0, 0], to), ports.1), payload)
            }
        }
    }
}

/// Raw traffic for a real exporter to meter: hosts 1-5 of the protected network get ten
/// packets of 100 bytes of UDP payload each over 2 s; host 9 gets 2,000 packets of 1,000
/// bytes (one 5-tuple) in 2 s, from 1 s on. Returns the bytes (IP lengths) each quiet host
/// gets, and the flood's.
fn raw_flood_capture(path: &Path, family: Family) -> (u64, u64) {
    let at = |ms: u64, data: Vec<u8>| Frame { sec: (T0 / 1000 + ms / 1000) as u32, usec: (ms % 1000 * 1000) as u32, data };
    let ip_length = |frame: &Frame| frame.data.len() as u64 - 14; // the frame less its Ethernet header
    let mut frames = Vec::new();
    let mut quiet_octets = 0;
    for h in 1..=5u8 {
        for i in 0..10 {
            frames.push(at(i * 200 + h as u64, family.frame(8, h, &[b'y'; 100])));
            quiet_octets += if h == 1 { ip_length(frames.last().unwrap()) } else { 0 };
        }
    }
    let mut flood_octets = 0;
    for i in 0..2000 {
        frames.push(at(1000 + i, family.frame(7, 9, &[b'x'; 1000])));
        flood_octets += ip_length(frames.last().unwrap());
    }
    frames.sort_by_key(|f| (f.sec, f.usec));
    write_pcap(path, &frames);
    (quiet_octets, flood_octets)
}

/// Runs softflowd on `capture`, exporting `version` (5, 9 or 10: NetFlow v5, v9 or IPFIX) to
/// 127.0.0.1:`port`, until it has sent every flow and exited. softflowd 1.1 reading a file
/// waits on its control socket between reads, so it is asked for its statistics
/// (softflowctl) until it reaches the end of the file, where it exports what it holds and
/// exits.
fn softflowd_export(d: &Path, capture: &Path, port: u16, version: &str) {
    let ctl = d.join("softflowd.ctl");
    let mut softflowd = Command::new("softflowd");
    softflowd.args(["-d", "-v", version, "-n", &format!("127.0.0.1:{port}"), "-r"]).arg(capture).arg("-p").arg(d.join("softflowd.pid")).arg("-c").arg(&ctl);
    run_exporter(&mut softflowd, "softflowd", || {
        let _ = Command::new("softflowctl").arg("-c").arg(&ctl).arg("statistics").output();
    });
}

/// Runs pmacct's pmacctd on `capture` with its NetFlow probe exporting `version` (9 or 10)
/// to 127.0.0.1:`port`: it reads the file, exports every flow and exits by itself.
fn pmacct_export(d: &Path, capture: &Path, port: u16, version: &str) {
    let conf = d.join("pmacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\npcap_savefile: {}\npcap_savefile_wait: false\nplugins: nfprobe\n\
             nfprobe_receiver: 127.0.0.1:{port}\nnfprobe_version: {version}\n\
             aggregate: src_host, dst_host, src_port, dst_port, proto\n",
            capture.display()
        ),
    )
    .unwrap();
    run_exporter(Command::new("pmacctd").arg("-f").arg(&conf), "pmacct", || {});
}

/// Runs the exporter `cmd` (of Debian package `package`) until it exits, calling `poke`
/// every 50 ms meanwhile; fails after 30 s.
fn run_exporter(cmd: &mut Command, package: &str, mut poke: impl FnMut()) {
    let null = std::process::Stdio::null;
    let mut child = cmd.stdout(null()).stderr(null()).spawn().unwrap_or_else(|e| panic!("{e}: Debian package {package} (scripts/test.sh installs it)"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "{package}: the exporter did not finish its capture");
        poke();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs a real exporter (test dir, capture, collector port, export version) until it has
/// sent every flow of the capture.
type Export = fn(&Path, &Path, u16, &str);

#[test]
fn a_flood_metered_by_real_exporters_starts_the_alert_with_the_rate_of_its_bytes() {
    let runs: [(&str, Export, &str); 5] =
        [("softflowd", softflowd_export, "5"), ("softflowd", softflowd_export, "9"), ("softflowd", softflowd_export, "10"), ("pmacct", pmacct_export, "9"), ("pmacct", pmacct_export, "10")];
    for (exporter, export, version) in runs {
        flood_metered_by(exporter, export, version, Family::V4);
    }
}

/// The same over IPv6 (NetFlow v5 cannot carry it): the key, the limits file's address, the
/// notification file's name, the argv and the window's rows are IPv6 addresses.
#[test]
fn a_flood_to_an_ipv6_host_metered_by_real_exporters_starts_its_alert_too() {
    let runs: [(&str, Export, &str); 4] = [("softflowd", softflowd_export, "9"), ("softflowd", softflowd_export, "10"), ("pmacct", pmacct_export, "9"), ("pmacct", pmacct_export, "10")];
    for (exporter, export, version) in runs {
        flood_metered_by(exporter, export, version, Family::V6);
    }
}

/// [`a_flood_metered_by_real_exporters_starts_the_alert_with_the_rate_of_its_bytes`] with
/// `exporter` (run by `export`) exporting `version`, the capture's addresses of `family`. The
/// victim's threshold comes from a limits file (the other hosts have the default).
fn flood_metered_by(exporter: &str, export: Export, version: &str, family: Family) {
    let tag = format!("{exporter} v{version} {family:?}");
    let d = victim_dirs(&format!("alerts-{exporter}-v{version}-{family:?}"));
    let capture = d.join("flood.pcap");
    let (quiet_octets, flood_octets) = raw_flood_capture(&capture, family);
    let on = script(&d, "on-start.sh");
    let (victim, key) = (family.host(9), family.dst_host());
    std::fs::write(d.join("mo/victim/limits.csv"), format!("# host, bytes/s\n{victim},500000\n")).unwrap();
    std::fs::write(
        d.join("mo/victim/mo.conf"),
        format!(
            r#"{{ "filter": "{}",
                 "fwm": [ {{"name": "by_dst", "fields": ["{key}", "octets", "packets"], "time": 3600}} ],
                 "mavg": [ {{"name": "m", "time": 2, "fields": ["{key}", "octets"],
                            "overlimit": [ {{"name": "level1", "default": [100000], "limits": "limits.csv", "back2norm-time": 60, "action-script": "{on}"}} ] }} ] }}"#,
            family.to_network()
        ),
    )
    .unwrap();
    let port = free_port();
    let conf = live_conf(&d, port);
    let child = start_live(&d, &conf);
    export(&d, &capture, port, version);
    // Each flow is sent once, at the end of the capture: the flood arrives as one record of
    // all its bytes, which alone puts the 2 s average at bytes / 2.
    let notif = d.join(format!("notifications/victim-m-level1-{victim}"));
    let started = wait_lines(&d.join("on-start.sh.log"), 1);
    assert_eq!(started, vec![format!("victim m level1 {} {victim} {} 500000", notif.display(), flood_octets / 2)], "{tag}: ran once, this argv");
    let text = std::fs::read_to_string(&notif).unwrap();
    assert!(text.starts_with(&format!("{victim} ")) && text.ends_with(" 500000\n"), "{tag}: {text}");
    let err = stop_live(child);
    assert!(err.contains(&format!("overlimit victim/m/level1 {victim}: {} > 500000", flood_octets / 2)), "{tag}: {err}");
    // The window: every host with the bytes and packets the exporter metered (IP lengths).
    let mut rows: Vec<String> = export_rows(&d.join("exp"), "victim_by_dst_").iter().map(|row| row.join(" ")).collect();
    rows.sort();
    let mut want: Vec<String> = (1..=5).map(|h| format!("'{}' {quiet_octets} 10", family.host(h))).collect();
    want.push(format!("'{victim}' {flood_octets} 2000"));
    assert_eq!(rows, want, "{tag}");
}

#[test]
fn an_alert_active_at_a_restart_or_a_reload_is_taken_up_and_ended_later() {
    let d = victim_dirs("alerts-restart");
    let (on, off) = (script(&d, "on-start.sh"), script(&d, "on-stop.sh"));
    // The moving average's window `time` (a change of it at a reload starts it from zero).
    let write_conf = |time: u32| {
        std::fs::write(
            d.join("mo/victim/mo.conf"),
            format!(
                r#"{{ "filter": "dst net 10.0.0.0/24",
                     "fwm": [ {{"name": "ext", "extended": true, "fields": ["octets", "dst host"], "time": 3600}} ],
                     "mavg": [ {{"name": "m", "time": {time}, "fields": ["dst host", "octets"],
                                "overlimit": [ {{"name": "level1", "default": [100000], "back2norm-time": 2,
                                                "action-script": "{on}", "back2norm-script": "{off}", "ext": ["ext"]}} ] }} ] }}"#
            ),
        )
        .unwrap()
    };
    write_conf(2);
    let port = free_port();
    let conf = live_conf(&d, port);

    // First run: a flood (10 MB/s against 100 kB/s), and a stop while it goes on.
    let child = start_live(&d, &conf);
    let exporter = Exporter::new(port);
    exporter.flood_until(&d.join("on-start.sh.log"), 1);
    exporter.flood(5);
    stop_live(child);
    let notif = d.join("notifications/victim-m-level1-10.0.0.9");
    let left = std::fs::read_to_string(&notif).expect("the notification stays at a stop");
    assert!(left.starts_with("10.0.0.9 ") && left.ends_with(" 100000\n"), "{left}");
    assert!(!d.join("on-stop.sh.log").exists());
    for e in std::fs::read_dir(d.join("exp")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }

    // Second run: the flood goes on for a second, then stops.
    let child = start_live(&d, &conf);
    let exporter = Exporter::new(port);
    let sent = exporter.flood(10);
    let stopped = wait_lines(&d.join("on-stop.sh.log"), 1);
    let err = stop_live(child);
    assert!(err.contains("1 alerts active before this start or reload taken up again (their back2norm scripts run once they end): victim-m-level1-10.0.0.9"), "{err}");
    assert_eq!(wait_lines(&d.join("on-start.sh.log"), 0).len(), 1, "the action script is not run again: {err}");
    assert_eq!(stopped, [format!("victim m level1 {} 10.0.0.9 0 100000", notif.display())], "{err}");
    assert!(!notif.exists(), "removed at back-to-normal");
    // The extended window was held from the start of the second run: it has the whole flood.
    assert_eq!(exported(&d, "victim_ext_"), sent, "{err}");

    // Third run: a flood starts an alert, and a reload changes the moving average (its time),
    // which then starts from zero: its new version takes the alert over, so the flood going
    // on after the reload starts nothing again, and the alert ends once.
    let child = start_live(&d, &conf);
    let exporter = Exporter::new(port);
    exporter.flood_until(&d.join("on-start.sh.log"), 2);
    write_conf(3);
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    exporter.flood(10);
    let stopped = wait_lines(&d.join("on-stop.sh.log"), 2);
    let err = stop_live(child);
    let taken_over = "reload: 1 active alerts taken over by the new versions of their moving averages: victim-m-level1-10.0.0.9";
    assert!(err.contains("moving average (0 kept their averages)") && err.contains(taken_over), "{err}");
    assert_eq!(wait_lines(&d.join("on-start.sh.log"), 0).len(), 2, "one start in this run: {err}");
    assert_eq!(stopped.len(), 2, "and one end: {err}");
    assert!(!notif.exists());
}

#[test]
fn an_end_whose_script_a_kill_left_unstarted_runs_its_script_after_the_restart() {
    // One script at a time, the action script taking 8 s: the alert's end waits behind it
    // when the collector is killed (kill -9). Its notification file must still be there, so
    // that the next start takes the alert up and ends it with its back2norm script.
    let d = victim_dirs("alerts-kill");
    let log = |name: &str| d.join(format!("{name}.log"));
    write_script(&d.join("on-start.sh"), &format!("echo \"$5\" >> {}; sleep 8", log("on-start.sh").display()));
    let off = script(&d, "on-stop.sh");
    let on = d.join("on-start.sh");
    let limits = format!(r#""overlimit": [ {{"name": "level1", "default": [100000], "back2norm-time": 1, "action-script": "{}", "back2norm-script": "{off}"}} ]"#, on.display());
    victim_average(&d, 1, &limits);
    let port = free_port();
    let conf = live_conf(&d, port);
    add_to_conf(&conf, r#""max-scripts": 1"#);
    let err_log = d.join("run1.err");
    let child = start_live_logging(&d, &conf, &err_log);
    Exporter::new(port).flood_until(&log("on-start.sh"), 1);
    // The flood is over: the end is found a few seconds later, while the action script sleeps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !std::fs::read_to_string(&err_log).unwrap().contains("back to normal victim/m/level1 10.0.0.9") {
        assert!(std::time::Instant::now() < deadline, "no end found");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait_with_output().unwrap();
    let notif = d.join("notifications/victim-m-level1-10.0.0.9");
    assert!(notif.exists(), "its back2norm script has not started: the file stays");
    assert!(!log("on-stop.sh").exists());

    let child = start_live(&d, &conf);
    let stopped = wait_lines(&log("on-stop.sh"), 1);
    let err = stop_live(child);
    assert!(err.contains("1 alerts active before this start or reload taken up again"), "{err}");
    assert_eq!(stopped, [format!("victim m level1 {} 10.0.0.9 0 100000", notif.display())], "{err}");
    assert!(!notif.exists(), "{err}");
    assert_eq!(wait_lines(&log("on-start.sh"), 0).len(), 1, "no second start: {err}");
}

/// A scan and a flood, live: 2,000 hosts of object `scan` (10.1.0.0/16, bytes per host over
/// 2 s, threshold 1,000 B/s) cross at once; once `d`/started.log has two lines, a flood
/// against 10.0.0.9 of `victim` (threshold 100,000 B/s). Both overlimits have `hooks` (the
/// keys naming their scripts or Lua functions), which append `MS OBJECT KEY` to
/// `d`/started.log as they start (the scan's then take a while); `conf` is added to
/// xenoeye.conf. Returns
/// the log's lines once the victim's is there (or after 10 s), the time of the flood, and
/// the collector's log.
fn scan_then_flood(d: &Path, hooks: &str, conf: &str) -> (Vec<String>, u64, String) {
    let started = d.join("started.log");
    victim_average(d, 2, &format!(r#""overlimit": [ {{"name": "level1", "default": [100000], {hooks}}} ]"#));
    std::fs::create_dir_all(d.join("mo/scan")).unwrap();
    std::fs::write(
        d.join("mo/scan/mo.conf"),
        format!(
            r#"{{ "filter": "dst net 10.1.0.0/16", "mavg": [ {{"name": "m", "time": 2, "fields": ["dst host", "octets"],
                 "overlimit": [ {{"name": "level1", "default": [1000], {hooks}}} ] }} ] }}"#
        ),
    )
    .unwrap();
    let port = free_port();
    let conf_file = live_conf(d, port);
    add_to_conf(&conf_file, conf);
    // The log goes to a file: 2,000 lines would fill a pipe read only at the end.
    let err_log = d.join("collector.err");
    let child = start_live_logging(d, &conf_file, &err_log);
    let exporter = Exporter::new(port);
    let scanned: Vec<CraftedFlow> = (0..2000u32).map(|h| flow([10, 1, (h / 250) as u8, (h % 250) as u8 + 1], 100_000)).collect();
    for chunk in scanned.chunks(20) {
        exporter.send(chunk);
    }
    assert!(wait_lines(&started, 2).len() >= 2, "the scan's hooks run");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let flood_ms = now_ms();
    exporter.flood(3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let lines = wait_lines(&started, 0);
        if lines.iter().any(|l| l.contains(" victim ")) || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    stop_live(child);
    (lines, flood_ms, std::fs::read_to_string(&err_log).unwrap())
}

/// Checks that the victim's hook (in `lines` of [`scan_then_flood`]) ran within a second of
/// the flood, after fewer than 20 of the scan's 2,000.
fn victim_ran_in_its_turn(lines: &[String], flood_ms: u64, err: &str) {
    let at = lines.iter().position(|l| l.ends_with(" victim 10.0.0.9")).unwrap_or_else(|| {
        let not_scan: Vec<&str> = err.lines().filter(|l| !l.contains(" scan/")).collect();
        panic!("the flood's hook did not run: {not_scan:?}")
    });
    let hook_ms: u64 = lines[at].split(' ').next().unwrap().parse().unwrap();
    assert!(hook_ms.saturating_sub(flood_ms) < 1000, "started {} ms after the flood", hook_ms - flood_ms);
    assert!(at < 20, "{at} of the scan's hooks ran before it");
}

#[test]
fn a_storm_of_alerts_in_one_object_does_not_delay_another_objects_script() {
    // Four scripts at a time, the scan's taking 3 s each (a slow mitigation API): over half
    // an hour of them. They wait behind the flood's, and one slot is kept for a limit with no
    // script running, so the flood's does not wait for one of theirs to end either.
    let d = victim_dirs("alerts-turns");
    let script = d.join("on-start.sh");
    write_script(&script, &format!("echo \"$(date +%s%3N) $1 $5\" >> {}; [ $1 = scan ] && sleep 3; true", d.join("started.log").display()));
    let (lines, flood_ms, err) = scan_then_flood(&d, &format!(r#""action-script": "{}""#, script.display()), r#""max-scripts": 4"#);
    victim_ran_in_its_turn(&lines, flood_ms, &err);
    // The scan's alerts were still waiting: the stop left them (their files removed, as if
    // not started; their traffic starts them again).
    assert!(err.contains("scripts still waiting were not started"), "{err}");
}

#[test]
fn a_storm_of_slow_lua_hooks_in_one_object_does_not_delay_another_objects_hook() {
    // One Lua thread for both objects: 400 s of the scan's hooks.
    let d = victim_dirs("alerts-lua-turns");
    let hook = format!(
        r#"function on(ev)
             if ev.object == "scan" then xe.run({{"sleep", "0.2"}}, 5) end
             xe.append_file("{}", string.format("%d %s %s\n", math.floor(xe.time() * 1000), ev.object, ev.keys[1]))
           end"#,
        d.join("started.log").display()
    );
    std::fs::create_dir_all(d.join("mo/scan")).unwrap();
    for object in ["scan", "victim"] {
        std::fs::write(d.join("mo").join(object).join("mo.lua"), &hook).unwrap();
    }
    let lua = format!(r#""lua": {{"threads": 1, "write-dirs": ["{}"]}}"#, d.display());
    let (lines, flood_ms, err) = scan_then_flood(&d, r#""action-lua": "on""#, &lua);
    victim_ran_in_its_turn(&lines, flood_ms, &err);
    assert!(err.contains("Lua hook calls still waiting are dropped"), "the stop left the scan's: {err}");
}

#[test]
fn a_reload_that_removes_a_moving_average_ends_its_alerts() {
    let d = victim_dirs("alerts-retired");
    let (on, off) = (script(&d, "on-start.sh"), script(&d, "on-stop.sh"));
    let mavg = format!(
        r#""mavg": [ {{"name": "m", "time": 2, "fields": ["dst host", "octets"],
                      "overlimit": [ {{"name": "level1", "default": [100000], "back2norm-time": 2,
                                      "action-script": "{on}", "back2norm-script": "{off}"}} ] }} ]"#
    );
    let write_conf = |mavg: &str| {
        let conf = format!(r#"{{ "filter": "dst net 10.0.0.0/24", "fwm": [ {{"name": "all", "fields": ["octets"], "time": 3600}} ] {mavg} }}"#);
        std::fs::write(d.join("mo/victim/mo.conf"), conf).unwrap()
    };
    write_conf(&format!(", {mavg}"));
    let port = free_port();
    let conf = live_conf(&d, port);
    let child = start_live(&d, &conf);
    let exporter = Exporter::new(port);
    exporter.flood_until(&d.join("on-start.sh.log"), 1);
    let notif = d.join("notifications/victim-m-level1-10.0.0.9");
    assert!(notif.exists(), "the alert is on");
    // The moving average goes at a reload while the flood goes on: its alert ends at once,
    // and the flood after it starts nothing.
    write_conf("");
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let stopped = wait_lines(&d.join("on-stop.sh.log"), 1);
    exporter.flood(10);
    let err = stop_live(child);
    assert!(err.contains("reload: 1 alerts of moving averages or limits removed or started anew ended (their back2norm scripts run): victim-m-level1-10.0.0.9"), "{err}");
    assert_eq!(stopped.len(), 1, "{err}");
    let prefix = format!("victim m level1 {} 10.0.0.9 ", notif.display());
    assert!(stopped[0].starts_with(&prefix) && stopped[0].ends_with(" 100000"), "{stopped:?}");
    let rate: u64 = stopped[0][prefix.len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(rate > 100_000, "the rate when it ended, still over: {rate}");
    assert!(!notif.exists(), "the notification goes");
    assert_eq!(wait_lines(&d.join("on-start.sh.log"), 0).len(), 1, "started once: {err}");
    assert_eq!(wait_lines(&d.join("on-stop.sh.log"), 0).len(), 1, "ended once: {err}");
}

#[test]
fn bundled_lua_example_loads_and_runs() {
    // The example of lua/ as an object's mo.lua: its hooks run on an event.
    let d = workdir("lua-example");
    std::fs::create_dir_all(d.join("mo/o")).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("lua/examples/alert-log.lua"), d.join("mo/o/mo.lua")).unwrap();
    std::fs::write(
        d.join("mo/o/mo.conf"),
        // A 3 s window: rates with fractions, as real traffic gives them.
        r#"{"mavg": [{"name": "m", "time": 3, "fields": ["dst host", "octets"],
             "overlimit": [{"name": "level1", "default": [100000], "back2norm-time": 5,
                            "action-lua": "on_overlimit", "back2norm-lua": "on_back2norm"}]}]}"#,
    )
    .unwrap();
    std::fs::create_dir_all(d.join("notifications")).unwrap();
    std::fs::write(d.join("devices.conf"), "[]").unwrap();
    let conf = d.join("xenoeye.conf");
    std::fs::write(&conf, r#"{ "capture": [ {"socket": {"port": 2055}} ], "templates": {"db": "t.db"}, "devices": "devices.conf", "mo-dir": "mo", "notifications-dir": "notifications" }"#).unwrap();
    let err = replay(&conf, &capture(60).0);
    let log = std::fs::read_to_string(d.join("mo/o/alerts.log")).unwrap_or_else(|e| panic!("{e}: {err}"));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].ends_with("start o/m/level1 overlimit 10.0.0.9: 133333 (threshold 100000)"), "{log}");
    assert!(lines[1].ends_with("back2norm o/m/level1 overlimit 10.0.0.9: 0 (threshold 100000)"), "{log}");
}

#[test]
fn the_clock_stepping_back_starts_no_alert_and_loses_no_flow() {
    let d = victim_dirs("alerts-step");
    let conf = setup(&d);
    // 60,000 B/s to 10.0.0.1 (level1 at 100,000): 30 s, then the clock goes back 20 s, 20 s more.
    let steady = |from_ms: u64, tenths: u64| (0..tenths).map(move |t| v9_frame(from_ms + t * 100, &[flow([10, 0, 0, 1], 6000)]));
    let frames: Vec<Frame> = steady(T0, 300).chain(steady(T0 + 10_000, 200)).collect();
    let err = replay(&conf, &frames);
    assert!(err.contains("worker 0: the clock went back 19.9 s"), "{err}");
    assert!(!err.contains("overlimit"), "{err}");
    assert!(!d.join("on-start.sh.log").exists() && std::fs::read_dir(d.join("notifications")).unwrap().count() == 0);
    // The average read 60,000 B/s all along: the last dump (every 2 s) says so.
    let dump = std::fs::read_to_string(d.join("mo/victim/m.dump")).unwrap();
    let rate: f64 = dump.lines().find(|l| l.contains("'10.0.0.1'")).unwrap().split("::").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // (0.4% high at most while the clock works off the step.)
    assert!((60_000.0..=60_000.0 * 1.005).contains(&rate), "{dump}");
    // Windows keep the system's time: the one open at the step took the 20 s again.
    assert_eq!(exported(&d, "victim_all_"), 500 * 6000);
}

#[test]
fn a_flood_of_failing_scripts_is_logged_in_part_and_summed_up() {
    let d = victim_dirs("alerts-failing");
    let failing = d.join("fail.sh");
    write_script(&failing, "exit 3");
    victim_over(&d, 1000, &failing);
    let conf = collector_conf(&d);
    // 50 hosts cross the threshold at once: 50 action scripts, each exiting with 3.
    let flows: Vec<CraftedFlow> = (1..=50).map(|h| flow([10, 0, 0, h], 100_000)).collect();
    let err = replay(&conf, &[v9_frame(T0, &flows[..25]), v9_frame(T0 + 1, &flows[25..])]);
    let logged = err.lines().filter(|l| l.contains("fail.sh victim m level1 ") && l.ends_with("exited with exit status: 3")).count();
    let summed: usize = err
        .lines()
        .find_map(|l| l.strip_suffix(" more script failures not logged"))
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap());
    assert!(logged <= 40 && logged + summed == 50, "{logged} logged, {summed} summed up: {err}");
}

#[test]
fn the_bundled_flood_object_alerts_and_collects_the_flood_sources() {
    let d = workdir("alerts-bundled");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    assert!(Command::new("cp").arg("-r").arg(&src).arg(d.join("conf")).status().unwrap().success());
    // 10 s of 2 GB/s from five sources to 10.11.12.9 (of the bundled my-nets), then 70 s in
    // which only traffic that no object matches advances the clock.
    let sources: Vec<[u8; 4]> = (1..=5).map(|i| [203, 0, 113, i]).collect();
    let mut frames = Vec::new();
    let mut flood_octets = 0u64;
    for tenth in 0..100u64 {
        let flows: Vec<CraftedFlow> = (0..10).map(|i| CraftedFlow { src: sources[i % 5], dst: [10, 11, 12, 9], proto: 17, dport: 123, octets: 20_000_000, packets: 20_000 }).collect();
        frames.push(v9_frame(T0 + tenth * 100, &flows));
        flood_octets += 10 * 20_000_000;
    }
    for s in 10..80 {
        frames.push(v9_frame(T0 + s * 1000, &[flow([198, 51, 100, 1], 100)]));
    }
    let err = replay(&d.join("conf/xenoeye.conf"), &frames);
    assert!(err.contains("overlimit flood/bps/level1 10.11.12.9: "), "{err}");
    assert!(err.contains("back to normal flood/bps/level1 10.11.12.9"), "{err}");
    assert_eq!(std::fs::read_dir(d.join("run/notifications")).unwrap().count(), 0, "the notification file is gone");
    // The extended window: the five sources, from the crossing on (within the first 400 ms).
    let rows: Vec<(String, u64)> =
        export_rows(&d.join("run/exp"), "flood_sources_").iter().map(|cols| (cols[2].trim_matches('\'').to_string(), cols[0].parse().unwrap())).collect();
    let mut hosts: Vec<&str> = rows.iter().map(|(h, _)| h.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts, ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"], "{rows:?}");
    let collected: u64 = rows.iter().map(|(_, o)| o).sum();
    assert!(collected <= flood_octets && collected >= flood_octets - 4 * 10 * 20_000_000, "{collected} of {flood_octets}");
}

#[test]
fn check_config_warns_of_a_script_that_cannot_run() {
    let d = victim_dirs("alerts-scripts");
    let conf = setup(&d);
    std::fs::remove_file(d.join("on-start.sh")).unwrap();
    std::fs::set_permissions(d.join("on-stop.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (status, err) = check_config(&conf);
    assert!(status.success(), "a warning, not an error: {err}");
    // Where each value stands in mo.conf (1-based line and column of its opening quote).
    let mo = d.join("mo/victim/mo.conf");
    let text = std::fs::read_to_string(&mo).unwrap();
    let at = |key: &str| {
        let (i, line) = text.lines().enumerate().find(|(_, l)| l.contains(key)).unwrap();
        let from = line.find(key).unwrap() + key.len();
        (i + 1, from + line[from..].find('"').unwrap() + 1)
    };
    for (key, path, why) in [("\"action-script\":", "on-start.sh", "does not exist"), ("\"back2norm-script\":", "on-stop.sh", "is not an executable file")] {
        let (line, col) = at(key);
        let name = key.trim_matches(|c| c == '"' || c == ':');
        let want = format!("{}:{line}:{col}: 'mavg[0].overlimit[0].{name}': {} {why}: alerts cannot run it", mo.display(), d.join(path).display());
        assert!(err.contains(&want), "{err}\nwanted: {want}");
    }
}
