//! The `xenoeye` binary end to end: configuration checks, offline replay with dump-flows,
//! templates surviving a restart, and live UDP reception until SIGTERM.

mod common;

use common::{data_dir, free_port, http_get, metric, read_frames, workdir, write_pcap, Running};
use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenoeye"))
}

/// A config in `dir` listening on `port`, dumping flows to `dir/dump.txt`, with one object
/// summing every flow in hour-long windows (written at shutdown).
fn config(dir: &Path, port: u16) -> PathBuf {
    std::fs::write(dir.join("devices.conf"), "[]").unwrap();
    std::fs::create_dir_all(dir.join("mo/all")).unwrap();
    std::fs::create_dir_all(dir.join("exp")).unwrap();
    std::fs::write(dir.join("mo/all/mo.conf"), r#"{"fwm": [{"name": "total", "fields": ["octets", "packets"], "time": 3600}]}"#).unwrap();
    let text = format!(
        r#"{{ "capture": [ {{"socket": {{"listen-on": "127.0.0.1", "port": "{port}"}}}} ],
             "templates": {{"db": "templates.tkvdb"}},
             "debug": {{"dump-flows": "dump.txt"}},
             "devices": "devices.conf", "mo-dir": "mo", "export-dir": "exp" }}"#
    );
    let f = dir.join("xenoeye.conf");
    std::fs::write(&f, text).unwrap();
    f
}

/// Octets summed over every export file of `dir/exp` and over the `Bytes:` of the dump.
fn exported_and_dumped_octets(dir: &Path) -> (u64, u64) {
    let mut exported = 0;
    for e in std::fs::read_dir(dir.join("exp")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| l.contains("to_timestamp(")) {
            exported += line.split(',').nth(1).unwrap().trim().parse::<u64>().unwrap();
        }
    }
    let dumped = dump_lines(dir)
        .iter()
        .map(|l| l.split("; Bytes: ").nth(1).unwrap().split(';').next().unwrap().parse::<u64>().unwrap())
        .sum();
    (exported, dumped)
}

fn dump_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("dump.txt")).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn bundled_config_is_valid() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/xenoeye.conf");
    let out = bin().arg("-c").arg(&conf).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK (5 monitoring objects, 11 fixed windows, 1 moving average)"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("unknown key") && !stderr.contains("does not support"), "{stderr}");
}

#[test]
fn bundled_objects_export_the_guide_tables() {
    let d = workdir("bundled");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let status = Command::new("cp").arg("-r").arg(&src).arg(d.join("conf")).status().unwrap();
    assert!(status.success());
    // Our networks are the capture's clients.
    std::fs::write(d.join("conf/iplists/my-nets"), "192.0.2.0/24\n2001:db8:1::/48\n").unwrap();
    std::fs::create_dir_all(d.join("run/exp")).unwrap();
    let out = bin()
        .arg("-c")
        .arg(d.join("conf/xenoeye.conf"))
        .arg("--read-pcap")
        .arg(data_dir().join("exporters/softflowd-v10.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut tables: Vec<String> = std::fs::read_dir(d.join("run/exp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap().rsplit_once('_').unwrap().0.to_string())
        .collect();
    tables.sort();
    assert_eq!(
        tables,
        ["egress_all", "egress_by_proto", "egress_by_src", "egress_octets_by_dst", "ingress_all", "ingress_by_dst",
         "ingress_octets_by_src", "ingress_proto", "mail_spam_hosts", "ssh_scanners_hosts"]
    );
    // The capture's three SMTP senders of our networks, none of them a listed mail server.
    let spam = std::fs::read_dir(d.join("run/exp")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("mail_spam")).unwrap();
    let spam = std::fs::read_to_string(spam).unwrap();
    assert_eq!(spam.matches("to_timestamp(").count(), 3, "{spam}");
    for host in ["'192.0.2.28'", "'192.0.2.25'", "'192.0.2.16'"] {
        assert!(spam.contains(host), "{host}: {spam}");
    }
    assert!(d.join("run/templates.tkvdb").exists());
}

/// Where `needle` starts in `text`: (line, column), 1-based.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle} not in {text}"));
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    (text[..at].matches('\n').count() + 1, at - line_start + 1)
}

#[test]
fn misspelt_keys_are_warned_of_with_their_likely_meaning_and_the_originals_unsupported_ones_named() {
    let d = workdir("unknown-keys");
    let f = config(&d, 2055);
    let conf = std::fs::read_to_string(&f).unwrap().replacen('{', r#"{ "rcvbufsize-m": 8, "clsf-dir": "/x", "#, 1);
    std::fs::write(&f, &conf).unwrap();
    let devices = r#"[ {"ip": "192.0.2.1", "sampling_rate": 10, "mark": "proto 6"} ]"#;
    std::fs::write(d.join("devices.conf"), devices).unwrap();
    std::fs::create_dir_all(d.join("mo/victim")).unwrap();
    let mo = r#"{ "filter": "dst net 10.0.0.0/8", "classification": [ {"id": 1, "fields": ["proto"]} ],
  "fwm": [ {"name": "w", "fields": ["octets", "dst host"], "limt": 10, "time": 0} ],
  "mavg": [ {"name": "m", "fields": ["dst host", "octets"], "mem_m": 16,
             "overlimit": [ {"name": "l1", "default": [1000], "action_script": "/bin/true"} ] } ] }"#;
    std::fs::write(d.join("mo/victim/mo.conf"), mo).unwrap();
    let out = bin().arg("-c").arg(&f).arg("--check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "warnings only: {err}");
    let mo_file = d.join("mo/victim/mo.conf");
    let devices_file = d.join("devices.conf");
    let want = [
        (&f, &conf, "\"rcvbufsize-m\"", "'rcvbufsize-m': unknown key, ignored (did you mean 'rcvbufsize_m'?)"),
        (&devices_file, &devices.to_string(), "\"sampling_rate\"", "'[0].sampling_rate': unknown key, ignored (did you mean 'sampling-rate'?)"),
        (&devices_file, &devices.to_string(), "\"mark\"", "'[0].mark': a setting of the original collector that this version does not support: ignored"),
        (&mo_file, &mo.to_string(), "\"classification\"", "'classification': a setting of the original collector that this version does not support: ignored"),
        (&mo_file, &mo.to_string(), "\"limt\"", "'fwm[0].limt': unknown key, ignored (did you mean 'limit'?)"),
        (&mo_file, &mo.to_string(), "\"mem_m\"", "'mavg[0].mem_m': unknown key, ignored (did you mean 'mem-m'?)"),
        (&mo_file, &mo.to_string(), "\"action_script\"", "'mavg[0].overlimit[0].action_script': unknown key, ignored (did you mean 'action-script'?)"),
    ];
    for (file, text, key, msg) in want {
        let (line, col) = position(text, key);
        let line_text = format!("warning: {}:{line}:{col}: {msg}", file.display());
        assert!(err.contains(&line_text), "{line_text}\nnot in:\n{err}");
    }
    // A time of 0 is the default, with a warning at the value, as the original does.
    let (line, col) = position(mo, "\"time\": 0");
    let zero = format!("warning: {}:{line}:{}: 'fwm[0].time': 0 s: the default, 30 s, is used (as the original does)", mo_file.display(), col + 8);
    assert!(err.contains(&zero), "{zero}\nnot in:\n{err}");
    // The original's keys for features this version does not have are listed with -v only.
    assert_eq!(err.lines().filter(|l| l.contains("unknown key") || l.contains("does not support")).count(), want.len(), "{err}");
    assert!(!err.contains("clsf-dir"), "{err}");
    let out = bin().arg("-v").arg("-c").arg(&f).arg("--check-config").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("clsf-dir"));
}

#[test]
fn dump_flows_to_stdout_as_the_original_can() {
    let d = workdir("dump-stdout");
    let f = config(&d, 2055);
    let text = std::fs::read_to_string(&f).unwrap().replace(r#""dump-flows": "dump.txt""#, r#""dump-flows": "stdout""#);
    std::fs::write(&f, text).unwrap();
    // The object dumps its own flows to stdout too: each flow twice.
    std::fs::write(d.join("mo/all/mo.conf"), r#"{"debug": {"dump-flows": "stdout"}, "fwm": [{"name": "total", "fields": ["octets"], "time": 3600}]}"#).unwrap();
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(data_dir().join("exporters/softflowd-v9.pcap")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // softflowd's export of the known capture: 100 flows.
    assert_eq!(lines.len(), 2 * 100, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("IPv") && l.contains("; *dev-ip: ")), "{stdout}");
    assert!(!d.join("stdout").exists(), "not a file named stdout");
}

#[test]
fn check_config_names_file_line_column_and_key() {
    let d = workdir("check");
    let f = config(&d, 2055);
    std::fs::write(&f, "{\n  \"capture\": [ {\"socket\": {\"port\": \"x2055\"}} ],\n  \"devices\": \"devices.conf\"\n}").unwrap();
    let out = bin().arg("-c").arg(&f).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:36: 'capture[0].socket.port': expected a non-negative integer", f.display())),
        "{err}"
    );
    // A syntax error.
    std::fs::write(&f, "{ \"capture\": [ } ").unwrap();
    let out = bin().arg("-c").arg(&f).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:1:16:", f.display())));
}

#[test]
fn output_directories_are_made_a_blocked_one_stops_the_start_and_no_file_is_overwritten() {
    let d = workdir("outdirs");
    let f = config(&d, 2055);
    std::fs::remove_dir_all(d.join("exp")).unwrap();
    let text = std::fs::read_to_string(&f).unwrap().replace(r#""export-dir": "exp""#, r#""export-dir": "out/exp", "notifications-dir": "out/notes""#);
    std::fs::write(&f, &text).unwrap();
    // A check says what start will make, and makes nothing.
    let out = bin().arg("-c").arg(&f).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("directory {} does not exist; it will be made at start", d.join("out/exp").display())), "{err}");
    assert!(!d.join("out").exists());
    // A replay makes them and writes its exports there: the capture's 100 flows in one row.
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(data_dir().join("exporters/softflowd-v9.pcap")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("directory {} made", d.join("out/exp").display())), "{err}");
    assert!(err.contains("export files 1, rows 1") && !err.contains("lost"), "{err}");
    assert!(!d.join("out/notes").exists(), "no moving average: notifications-dir is not used");
    assert_eq!(std::fs::read_dir(d.join("out/exp")).unwrap().count(), 1);
    // The same window written again (as after a restart) goes beside the file not loaded yet.
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(data_dir().join("exporters/softflowd-v9.pcap")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is there still (a window closed twice: restart or reload)"));
    let mut rows: Vec<String> = std::fs::read_dir(d.join("out/exp"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().filter(|l| l.contains("to_timestamp(")).collect::<String>())
        .collect();
    rows.dedup();
    assert_eq!(rows.len(), 1, "two files, the same window's row in each: {rows:?}");
    assert_eq!(std::fs::read_dir(d.join("out/exp")).unwrap().count(), 2);
    // A file where the directory should be: both a check and a start stop with the key named.
    std::fs::write(d.join("blocked"), "").unwrap();
    std::fs::write(&f, text.replace("out/exp", "blocked/exp")).unwrap();
    let col = std::fs::read_to_string(&f).unwrap().lines().find(|l| l.contains("blocked/exp")).unwrap().find(r#""blocked/exp""#).unwrap() + 1;
    let line = std::fs::read_to_string(&f).unwrap().lines().position(|l| l.contains("blocked/exp")).unwrap() + 1;
    for args in [vec!["--check-config"], vec!["--read-pcap", data_dir().join("exporters/softflowd-v9.pcap").to_str().unwrap()]] {
        let out = bin().arg("-c").arg(&f).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:{line}:{col}: 'export-dir': directory {} does not exist and cannot be made", f.display(), d.join("blocked/exp").display());
        assert!(err.contains(&want), "{args:?}: {err}\nwanted {want}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = bin().args(["-c", "/nonexistent/xenoeye.conf", "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/xenoeye.conf"));
}

#[test]
fn a_device_or_fifo_given_as_a_file_is_an_error_not_a_hang() {
    let d = workdir("notfile");
    let f = config(&d, 2055);
    let text = std::fs::read_to_string(&f).unwrap();
    // `timeout`: with the old reads this test would hang, not fail.
    let check = || {
        let out = Command::new("timeout").arg("30").arg(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(&f).arg("--check-config").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "an error, and in time");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(&f, text.replace(r#""devices": "devices.conf""#, r#""devices": "/dev/zero""#)).unwrap();
    let err = check();
    assert!(err.contains("/dev/zero: cannot read: a device, not a regular file"), "{err}");
    // An object's mo.conf made a FIFO that no one writes.
    std::fs::write(&f, &text).unwrap();
    let mo = d.join("mo/all/mo.conf");
    std::fs::remove_file(&mo).unwrap();
    assert!(Command::new("mkfifo").arg(&mo).status().unwrap().success());
    let err = check();
    assert!(err.contains(&format!("{}: cannot read: a FIFO, not a regular file", mo.display())), "{err}");
}

/// True when a v9 datagram holds a template flowset (id 0).
fn has_v9_template(p: &[u8]) -> bool {
    let mut pos = 20;
    while pos + 4 <= p.len() {
        let id = u16::from_be_bytes([p[pos], p[pos + 1]]);
        let len = u16::from_be_bytes([p[pos + 2], p[pos + 3]]) as usize;
        if id == 0 {
            return true;
        }
        if len < 4 {
            break;
        }
        pos += len;
    }
    false
}

#[test]
fn replay_dumps_flows_and_templates_survive_a_restart() {
    let d = workdir("replay");
    let f = config(&d, 2055);
    let capture = data_dir().join("exporters/softflowd-v9.pcap");
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(&capture).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines = dump_lines(&d);
    assert_eq!(lines.len(), 100, "one dump line per flow");
    assert!(err.contains("flows 100,"), "{err}");
    let first = &lines[0];
    assert!(first.starts_with("IPv4 src addr: ") || first.starts_with("IPv6 src addr: "), "{first}");
    assert!(first.contains("; Bytes: ") && first.contains("; Packets: "), "{first}");
    assert!(first.ends_with("*dev-ip: 127.0.0.1; *dev-id: 0, *rate: 1"), "{first}");
    assert!(d.join("templates.tkvdb").exists());

    // Second run: data only. The templates come from templates.tkvdb.
    let data_only = d.join("data-only.pcap");
    let frames: Vec<_> = read_frames(&capture).into_iter().filter(|f| !has_v9_template(f.payload())).collect();
    assert!(!frames.is_empty());
    write_pcap(&data_only, &frames);
    std::fs::remove_file(d.join("dump.txt")).unwrap();
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(&data_only).output().unwrap();
    assert!(out.status.success());
    let decoded_without_templates = dump_lines(&d).len();
    // Without the file nothing would decode.
    std::fs::remove_file(d.join("templates.tkvdb")).unwrap();
    std::fs::remove_file(d.join("dump.txt")).unwrap();
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(&data_only).output().unwrap();
    assert!(out.status.success());
    assert_eq!(dump_lines(&d).len(), 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_template"));
    assert!(decoded_without_templates > 0 && decoded_without_templates <= 100, "{decoded_without_templates}");
}

/// Sends a capture's datagrams to `port` round after round until the dump holds `want` lines
/// (the collector may still be starting); bounded to 20 seconds. Returns the rounds sent.
fn send_until(d: &Path, capture: &Path, port: u16, want: usize) -> usize {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_from_until(d, capture, &tx, ([127, 0, 0, 1], port).into(), want)
}

/// Sends the UDP payloads of `capture` from `tx` to `to`, again every 300 ms until the dump
/// of `d` has `want` lines (20 s at most); returns how many rounds it took.
fn send_from_until(d: &Path, capture: &Path, tx: &UdpSocket, to: std::net::SocketAddr, want: usize) -> usize {
    let packets: Vec<Vec<u8>> = read_frames(capture).iter().map(|f| f.payload().to_vec()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rounds = 0;
    while dump_lines(d).len() < want && Instant::now() < deadline {
        for p in &packets {
            let _ = tx.send_to(p, to);
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    rounds
}

#[test]
fn live_udp_until_sigterm() {
    let d = workdir("live");
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let f = config(&d, port);
    let child = Running::spawn(bin().arg("-c").arg(&f).stderr(Stdio::piped()));
    let rounds = send_until(&d, &data_dir().join("exporters/softflowd-v10.pcap"), port, 100);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines = dump_lines(&d);
    // The first round may partly arrive before the socket is bound; later ones arrive whole.
    assert!(lines.len() >= 100, "{} flows after {rounds} rounds", lines.len());
    assert!(err.contains(&format!("flows {},", lines.len())), "{err}");
    // SIGTERM wrote the open hour-long window: every dumped flow is in it.
    let (exported, dumped) = exported_and_dumped_octets(&d);
    assert_eq!(exported, dumped);
    assert!(exported > 0);
}

#[test]
fn live_pcap_capture_on_loopback() {
    // Live capture needs root or CAP_NET_RAW (CI runs as root).
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("live_pcap_capture_on_loopback: not root, cannot open a capture; not run");
        return;
    }
    let d = workdir("pcap");
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let f = config(&d, port);
    let text = std::fs::read_to_string(&f).unwrap().replace(
        &format!(r#"{{"socket": {{"listen-on": "127.0.0.1", "port": "{port}"}}}}"#),
        &format!(r#"{{"pcap": {{"interface": "lo", "filter": "udp and dst port {port}"}}}}"#),
    );
    std::fs::write(&f, text).unwrap();
    let child = Running::spawn(bin().arg("-c").arg(&f).stderr(Stdio::piped()));
    // Nobody listens on the port: the capture sees the datagrams all the same.
    send_until(&d, &data_dir().join("exporters/softflowd-v5.pcap"), port, 76);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines = dump_lines(&d);
    assert!(lines.len() >= 76, "{} flows; {err}", lines.len());
    assert!(lines[0].contains("*dev-ip: 127.0.0.1;"), "{}", lines[0]);
}

/// A network namespace of the test's own, deleted when dropped.
struct Netns(String);

impl Netns {
    /// None where one cannot be made (not root, no iproute2).
    fn new(tag: &str) -> Option<Netns> {
        let name = format!("xe-{tag}-{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        made.then_some(Netns(name))
    }

    /// Runs `ip ARGS` in the namespace.
    fn ip(&self, args: &str) {
        let status = Command::new("ip").arg("-n").arg(&self.0).args(args.split(' ')).status().unwrap();
        assert!(status.success(), "ip {args}");
    }

    /// A command run in the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    /// A UDP socket of the namespace (made by a thread that joined it: a socket belongs to
    /// the namespace it was made in).
    fn udp_socket(&self) -> UdpSocket {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            let joined = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
            UdpSocket::bind("0.0.0.0:0").unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// In `ns`: an interface `xeva` (10.99.0.1/24, with a neighbour 10.99.0.3 that datagrams are
/// sent out to), made anew if it was there.
fn make_capture_interface(ns: &Netns) {
    ns.ip("link add xeva type veth peer name xevb");
    ns.ip("addr add 10.99.0.1/24 dev xeva");
    ns.ip("link set xeva up");
    ns.ip("link set xevb up");
    ns.ip("neigh replace 10.99.0.3 lladdr 02:00:00:00:00:03 dev xeva");
}

#[test]
fn live_pcap_capture_goes_on_when_its_interface_is_made_anew() {
    // Needs root (CI runs as root) for a network namespace of its own and the capture.
    let Some(ns) = Netns::new("pcap-anew") else {
        eprintln!("live_pcap_capture_goes_on_when_its_interface_is_made_anew: cannot make a network namespace (not root?); not run");
        return;
    };
    make_capture_interface(&ns);
    let d = workdir("pcap-anew");
    let f = config(&d, 2055);
    let text = std::fs::read_to_string(&f).unwrap().replace(
        r#"{"socket": {"listen-on": "127.0.0.1", "port": "2055"}}"#,
        r#"{"pcap": {"interface": "xeva", "filter": "udp and dst port 2055"}}"#,
    );
    std::fs::write(&f, text).unwrap();
    let child = Running::spawn(ns.command(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(&f).stderr(Stdio::piped()));
    let (tx, to) = (ns.udp_socket(), ([10, 99, 0, 3], 2055).into());
    let capture = data_dir().join("exporters/softflowd-v5.pcap");
    send_from_until(&d, &capture, &tx, to, 76);
    let before = dump_lines(&d).len();
    assert!(before >= 76, "{before} flows before");
    // The interface is deleted and made again at once: the old handle fails for good, or
    // stays silent, bound to the interface that is gone (its index tells).
    ns.ip("link del xeva");
    make_capture_interface(&ns);
    send_from_until(&d, &capture, &tx, to, before + 76);
    let anew = dump_lines(&d).len();
    // Renamed away (its address taken off, not set down) while an interface of the name is
    // made: the old handle is bound to an interface that still exists and never fails, it
    // only falls silent.
    ns.ip("link set xeva name xevold");
    ns.ip("link set xevb name xevbold");
    ns.ip("addr flush dev xevold");
    make_capture_interface(&ns);
    send_from_until(&d, &capture, &tx, to, anew + 76);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(anew >= before + 76, "{before} flows before, {anew} after the interface was made anew; {err}");
    let renamed = dump_lines(&d).len();
    assert!(renamed >= anew + 76, "{anew} flows before, {renamed} after the interface was renamed and another made; {err}");
    assert!(err.contains("pcap xeva: pcap on xeva: the interface was deleted or made anew; the capture is opened again every 1 s"), "{err}");
    assert!(err.contains("pcap xeva: works again after "), "{err}");
    // What the collector summed is what it dumped, from every capture.
    let (exported, dumped) = exported_and_dumped_octets(&d);
    assert_eq!(exported, dumped);
}

/// A child's standard error, read as it comes by a thread of its own.
struct Stderr {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Stderr {
    fn of(child: &mut std::process::Child) -> Stderr {
        use std::io::BufRead;
        let pipe = std::io::BufReader::new(child.stderr.take().expect("stderr piped"));
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                let mut t = sink.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        Stderr { text, reader }
    }

    /// Waits (10 s at most) until `what` has been written; returns whether it was.
    fn wait_for(&self, what: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text.lock().unwrap().contains(what) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.text.lock().unwrap().contains(what)
    }

    /// All of it, once the child has ended.
    fn all(self) -> String {
        self.reader.join().unwrap();
        std::sync::Arc::try_unwrap(self.text).unwrap().into_inner().unwrap()
    }
}

#[test]
fn a_socket_listens_on_an_address_the_host_gets_only_later() {
    // Needs root (CI runs as root) for a network namespace of its own.
    let Some(ns) = Netns::new("later") else {
        eprintln!("a_socket_listens_on_an_address_the_host_gets_only_later: cannot make a network namespace (not root?); not run");
        return;
    };
    ns.ip("link set lo up");
    let d = workdir("later");
    let f = config(&d, 2055);
    let text = std::fs::read_to_string(&f).unwrap().replace(r#""listen-on": "127.0.0.1""#, r#""listen-on": "10.99.0.9""#);
    std::fs::write(&f, text).unwrap();
    let mut child = Running::spawn(ns.command(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(&f).stderr(Stdio::piped()));
    let stderr = Stderr::of(&mut child);
    // As at boot, before the interface is configured: the collector starts and says so.
    assert!(stderr.wait_for("listening: udp 10.99.0.9:2055"), "{}", stderr.all());
    ns.ip("addr add 10.99.0.9/32 dev lo");
    // ... and says when the address is up (it looks once a second).
    assert!(stderr.wait_for("udp 10.99.0.9:2055#0: listen-on 10.99.0.9: the address is on this host now"), "{}", stderr.all());
    let tx = ns.udp_socket();
    send_from_until(&d, &data_dir().join("exporters/softflowd-v5.pcap"), &tx, ([10, 99, 0, 9], 2055).into(), 76);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let err = stderr.all();
    assert!(status.success(), "{err}");
    assert!(
        err.contains("listen-on 10.99.0.9: not an address of this host (yet); listening on port 2055 all the same, datagrams arrive once the address is up"),
        "{err}"
    );
    let lines = dump_lines(&d);
    assert!(lines.len() >= 76, "{} flows; {err}", lines.len());
}

#[test]
fn object_dump_flows_holds_only_its_flows_and_object_errors_fail_the_check() {
    let d = workdir("objdump");
    let f = config(&d, 2055);
    std::fs::create_dir_all(d.join("mo/ssh")).unwrap();
    std::fs::write(d.join("mo/ssh/mo.conf"), r#"{"filter": "dst port 22", "debug": {"dump-flows": "ssh.txt"}}"#).unwrap();
    let out = bin().arg("-c").arg(&f).arg("--read-pcap").arg(data_dir().join("exporters/softflowd-v9.pcap")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ssh = std::fs::read_to_string(d.join("mo/ssh/ssh.txt")).unwrap();
    let all = dump_lines(&d);
    let want: Vec<&String> = all.iter().filter(|l| l.contains("; Dst port: 22;")).collect();
    assert!(!want.is_empty());
    assert_eq!(ssh.lines().collect::<Vec<_>>(), want.iter().map(|s| s.as_str()).collect::<Vec<_>>());

    std::fs::write(d.join("mo/ssh/mo.conf"), "{\"filter\": \"dst port 22 and\"}").unwrap();
    let out = bin().arg("-c").arg(&f).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mo/ssh/mo.conf:1:28: 'filter': column 16: unexpected end of filter"), "{err}");
}

#[test]
fn tells_systemd_ready_reloading_watchdog_and_stopping() {
    let d = workdir("notify");
    let port = free_port();
    let f = config(&d, port);
    let sock_path = d.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let child = Running::spawn(bin().arg("-c").arg(&f).env("NOTIFY_SOCKET", &sock_path).env("WATCHDOG_USEC", "200000").stderr(Stdio::piped()));
    let next = || {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\nSTATUS=1 worker, 1 monitoring object, 1 fixed window, 0 moving averages");
    assert_eq!(next(), "WATCHDOG=1");
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let mut seen = Vec::new();
    while !seen.contains(&"READY=1".to_string()) {
        let m = next();
        if m != "WATCHDOG=1" {
            seen.push(m);
        }
    }
    assert_eq!(seen, vec!["RELOADING=1".to_string(), "READY=1".to_string()]);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
    assert!(child.wait_with_output().unwrap().status.success());
}

#[test]
fn metrics_count_what_was_sent() {
    let d = workdir("metrics");
    let port = free_port();
    let mport = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = config(&d, port);
    let text = std::fs::read_to_string(&f).unwrap().replacen('{', &format!("{{ \"metrics-listen\": \"127.0.0.1:{mport}\","), 1);
    std::fs::write(&f, text).unwrap();
    // A moving average, for the sweep's metrics.
    std::fs::create_dir_all(d.join("mo/hosts")).unwrap();
    std::fs::write(d.join("mo/hosts/mo.conf"), r#"{"mavg": [{"name": "m", "fields": ["src host", "octets"], "overlimit": [{"name": "l", "default": [1000000000]}]}]}"#).unwrap();
    let child = Running::spawn(bin().arg("-c").arg(&f).stderr(Stdio::piped()));
    let maddr = format!("127.0.0.1:{mport}");
    // The metrics server starts after the sockets are bound: once it answers, nothing is lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&maddr, "/metrics").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let frames = read_frames(&data_dir().join("exporters/softflowd-v9.pcap"));
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        for fr in &frames {
            tx.send_to(fr.payload(), ("127.0.0.1", port)).unwrap();
        }
    }
    let sent = 3 * frames.len() as u64;
    let mut page = String::new();
    while Instant::now() < deadline + Duration::from_secs(10) {
        page = http_get(&maddr, "/metrics").unwrap_or_default();
        if metric(&page, "xenoeye_datagrams_total{exporter=\"127.0.0.1\"}") == Some(sent) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&page, "xenoeye_datagrams_total{exporter=\"127.0.0.1\"}"), Some(sent), "{page}");
    assert_eq!(metric(&page, "xenoeye_flows_total{exporter=\"127.0.0.1\"}"), Some(300));
    assert_eq!(metric(&page, "xenoeye_object_flows_total{object=\"all\"}"), Some(300));
    assert_eq!(metric(&page, "xenoeye_decode_errors_total{reason=\"no_template\"}"), Some(0));
    assert_eq!(metric(&page, "xenoeye_kernel_drops_total{worker="), Some(0), "{page}");
    let dumped: u64 = dump_lines(&d).iter().map(|l| l.split("; Bytes: ").nth(1).unwrap().split(';').next().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(metric(&page, "xenoeye_flow_octets_total{exporter=\"127.0.0.1\"}"), Some(dumped));
    let status = http_get(&maddr, "/").unwrap();
    assert!(status.contains("<td>all</td><td>300</td>") && status.contains("<td>127.0.0.1</td>"), "{status}");
    // The once-a-second sweep goes on while nothing arrives (at the workers' idle ticks).
    while metric(&page, "xenoeye_mavg_sweeps_total ").unwrap_or(0) < 2 && Instant::now() < deadline + Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        page = http_get(&maddr, "/metrics").unwrap_or_default();
    }
    assert!(metric(&page, "xenoeye_mavg_sweeps_total ").unwrap_or(0) >= 2, "{page}");
    // The exporter sent seconds ago (its silences are watched once a second).
    assert!(metric(&page, "xenoeye_exporter_idle_seconds{exporter=\"127.0.0.1\"}").is_some_and(|s| s < 30), "{page}");
    assert!(http_get(&maddr, "/").unwrap().contains("<th>idle s</th>"));
    assert!(metric(&page, "xenoeye_mavg_sweep_last_microseconds ").is_some(), "{page}");
    assert!(metric(&page, "xenoeye_mavg_keys{object=\"hosts\",mavg=\"m\"}").unwrap_or(0) > 0, "{page}");
    assert_eq!(metric(&page, "xenoeye_mavg_events_held{object=\"hosts\",mavg=\"m\"}"), Some(0), "{page}");
    // Tables this small are never made ahead.
    assert_eq!(metric(&page, "xenoeye_prefault_bytes_total "), Some(0), "{page}");
    assert_eq!(metric(&page, "xenoeye_prefault_skipped_total "), Some(0), "{page}");
    // The README's table names every metric the page has, and no other.
    let served: BTreeSet<String> = page.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_string()).collect();
    let documented = readme_metrics();
    let names: BTreeSet<String> = documented.keys().cloned().collect();
    let (undocumented, gone): (Vec<_>, Vec<_>) = (served.difference(&names).collect(), names.difference(&served).collect());
    assert!(undocumented.is_empty() && gone.is_empty(), "served, not in the README: {undocumented:?}; in the README, not served: {gone:?}");
    // And the values of the labels that name what was counted (every one is on the page, at 0
    // if nothing happened), as alert rules and dashboards match them.
    for (name, values) in documented.iter().filter(|(_, values)| !values.is_empty()) {
        let label = ["reason", "event", "outcome"].into_iter().find(|l| page.contains(&format!("{name}{{{l}="))).unwrap_or_else(|| panic!("{name}: no such label on the page"));
        assert_eq!(&label_values(&page, name, label), values, "{name}: the values of its label {label}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait_with_output().unwrap().status.success());
}

/// The metrics of the README's table (*Metrics and status page*), each with the values its
/// row gives for a `reason`, `event` or `outcome` label (none for other labels). A cell lists
/// names after its first in short, from their second `_` on: `xenoeye_mavg_keys`,
/// `_memory_bytes`. Values are in backticks, or words in a list: `new, changed, withdrawn`,
/// `called, error, cut (instruction limit), dropped (...)`.
fn readme_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("### Metrics and status page").nth(1).expect("the metrics section").split("\n## ").next().unwrap();
    let mut metrics = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, label, what) = (cells[1], cells[2], cells[3]);
        let values: BTreeSet<String> = match label {
            "`reason`" | "`event`" | "`outcome`" if what.contains('`') => what.split('`').skip(1).step_by(2).map(String::from).collect(),
            "`reason`" | "`event`" | "`outcome`" => without_parentheses(what).split(", ").map(|v| v.split(' ').next().unwrap().to_string()).collect(),
            _ => BTreeSet::new(),
        };
        let mut prefix = String::new();
        for name in names.split('`').skip(1).step_by(2) {
            let full = if name.starts_with('_') {
                assert!(!prefix.is_empty(), "a short name first in: {row}");
                format!("{prefix}{name}")
            } else {
                prefix = name.splitn(3, '_').take(2).collect::<Vec<_>>().join("_");
                name.to_string()
            };
            metrics.insert(full, values.clone());
        }
    }
    metrics
}

/// `text` with what it says in parentheses left out.
fn without_parentheses(text: &str) -> String {
    let mut depth = 0;
    text.chars()
        .filter(|&c| {
            depth += (c == '(') as i32 - (c == ')') as i32;
            depth == 0 && c != ')'
        })
        .collect()
}

/// The values of label `label` of metric `name` on a metrics page.
fn label_values(page: &str, name: &str, label: &str) -> BTreeSet<String> {
    let start = format!("{name}{{{label}=\"");
    page.lines().filter_map(|l| l.strip_prefix(start.as_str())).map(|l| l.split('"').next().unwrap().to_string()).collect()
}

#[test]
fn metrics_during_a_replay_from_standard_input() {
    use std::io::Write;
    let d = workdir("metrics-replay");
    let mport = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = config(&d, 2055);
    let text = std::fs::read_to_string(&f).unwrap().replacen('{', &format!("{{ \"metrics-listen\": \"127.0.0.1:{mport}\","), 1);
    std::fs::write(&f, text).unwrap();
    let mut child = Running::spawn(bin().arg("-c").arg(&f).args(["--read-pcap", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()));
    // The capture is written into the pipe: header, then three rounds of softflowd's export,
    // the first stamped 5 s later (so the clock goes back 5 s once).
    let frames = read_frames(&data_dir().join("exporters/softflowd-v9.pcap"));
    let pcap = d.join("rounds.pcap");
    let later = |r: u32| if r == 0 { 5 } else { 0 };
    let rounds: Vec<_> = (0..3).flat_map(|r| frames.iter().map(move |f| common::Frame { sec: f.sec + later(r), usec: f.usec, data: f.data.clone() })).collect();
    write_pcap(&pcap, &rounds);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&pcap).unwrap()).unwrap();
    stdin.flush().unwrap();
    // While the collector waits for more input, the counters show what it has read.
    let maddr = format!("127.0.0.1:{mport}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut page = String::new();
    while Instant::now() < deadline {
        page = http_get(&maddr, "/metrics").unwrap_or_default();
        if metric(&page, "xenoeye_datagrams_total{exporter=\"127.0.0.1\"}") == Some(12) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&page, "xenoeye_datagrams_total{exporter=\"127.0.0.1\"}"), Some(12), "{page}");
    assert_eq!(metric(&page, "xenoeye_flows_total{exporter=\"127.0.0.1\"}"), Some(300));
    assert_eq!(metric(&page, "xenoeye_object_flows_total{object=\"all\"}"), Some(300));
    assert_eq!(metric(&page, "xenoeye_lua_hook_calls_total{outcome=\"dropped\"}"), Some(0));
    assert_eq!(metric(&page, "xenoeye_clock_steps_total{worker=\"replay\"}"), Some(1));
    // The window of `all` is written at the end of the replay; before that, none is listed.
    let status = http_get(&maddr, "/").unwrap();
    assert!(status.contains("files 0, rows 0") && status.contains("alert events 0, parked 0; scripts running 0, waiting 0 (oldest 0 s), started 0"), "{status}");
    drop(stdin); // end of the capture: the replay finishes and exits
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flows 300,"));
}

#[test]
fn a_window_at_its_memory_bound_sums_new_keys_into_the_null_row() {
    // A spoofed-source flood: 100,000 sources, 1,000 bytes each, into a window by source of
    // "mem-m": 1 (16-byte rows: 65,536 slots, full at 49,152 keys).
    let d = workdir("fwm-bound");
    std::fs::create_dir_all(d.join("mo/spoofed")).unwrap();
    std::fs::write(d.join("mo/spoofed/mo.conf"), r#"{"fwm": [{"name": "by_src", "fields": ["octets", "src host"], "time": 3600, "mem-m": 1}]}"#).unwrap();
    let conf = config(&d, 2055);
    let flows: Vec<common::CraftedFlow> = (0..100_000u32)
        .map(|i| common::CraftedFlow { src: (0x0a00_0000 + i).to_be_bytes(), dst: [192, 0, 2, 1], proto: 17, dport: 53, octets: 1000, packets: 1 })
        .collect();
    let frames: Vec<common::Frame> = flows.chunks(200).map(|c| common::v9_frame(1_795_756_000_000, c)).collect();
    write_pcap(&d.join("flood.pcap"), &frames);
    std::fs::write(&conf, std::fs::read_to_string(&conf).unwrap().replace(r#""debug": {"dump-flows": "dump.txt"},"#, "")).unwrap();
    let out = bin().arg("-c").arg(&conf).arg("--read-pcap").arg(d.join("flood.pcap")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let file = std::fs::read_dir(d.join("exp")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("spoofed_by_src_")).unwrap();
    let rows: Vec<(u64, String)> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| l.contains("to_timestamp("))
        .map(|l| {
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            (cols[1].parse().unwrap(), cols[2].trim_end_matches([')', ';', ' ']).to_string())
        })
        .collect();
    assert_eq!(rows.len(), 49_152 + 1, "the rows the bound holds, and the NULL row");
    assert_eq!(rows.iter().map(|r| r.0).sum::<u64>(), 100_000 * 1000, "every byte counted");
    let null: Vec<u64> = rows.iter().filter(|r| r.1 == "NULL").map(|r| r.0).collect();
    assert_eq!(null, [(100_000 - 49_152) * 1000]);
    assert!(err.contains("spoofed_by_src window 1795755600: a worker's map reached mem-m (1 MiB): 50848 flows of keys not in it were summed into the row whose key fields are NULL"), "{err}");
}
