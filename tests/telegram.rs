//! The classic alert scripts and the Telegram bot against a local stand-in of the Bot API:
//! on-start.sh / on-stop.sh leave message files, xe-tele-bot.py sends them (red, then a green
//! reply; yellow when both arrive between two polls) and answers /id.

mod common;

use common::workdir;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A Bot API stand-in: records (method, JSON body, HTTP status) and answers like Telegram.
struct StandIn {
    url: String,
    calls: Arc<Mutex<Vec<(String, String, u16)>>>,
}

fn stand_in(updates: &'static str) -> StandIn {
    stand_in_failing(updates, |_| None)
}

/// A stand-in whose answer to the n-th sendMessage (from 1) may be an error instead: `fail(n)`
/// gives its HTTP status and body. Message ids count the messages sent, from 101.
fn stand_in_failing(updates: &'static str, fail: fn(usize) -> Option<(u16, &'static str)>) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let rec = calls.clone();
    std::thread::spawn(move || {
        let (mut next_id, mut sends) = (100, 0);
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let method = request_line.split_whitespace().nth(1).unwrap().rsplit('/').next().unwrap().to_string();
            let failure = if method == "sendMessage" {
                sends += 1;
                fail(sends)
            } else {
                None
            };
            let (status, reply) = match failure {
                Some((status, body)) => (status, body.to_string()),
                None if method == "getUpdates" => (200, format!("{{\"ok\":true,\"result\":{updates}}}")),
                None => {
                    next_id += 1;
                    (200, format!("{{\"ok\":true,\"result\":{{\"message_id\":{next_id}}}}}"))
                }
            };
            rec.lock().unwrap().push((method, String::from_utf8(body).unwrap(), status));
            write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).unwrap();
        }
    });
    StandIn { url, calls }
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/telegram-bot")
}

fn run_script(name: &str, msgs: &Path, args: &[&str]) {
    let out = Command::new(scripts().join(name)).args(args).env("TELEMSG_DIR", msgs).output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// xenoeye.conf in `d` (with an empty devices.conf) for the objects under `d`/mo, its
/// notifications in `notifications` (made here), Lua hooks allowed to write to `lua_dir` and
/// given the shipped Lua modules; returns its path.
fn collector_conf(d: &Path, notifications: &Path, lua_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(notifications).unwrap();
    std::fs::write(d.join("devices.conf"), "[]").unwrap();
    let conf = d.join("xenoeye.conf");
    std::fs::write(
        &conf,
        format!(
            r#"{{ "capture": [ {{"socket": {{"port": 2055}}}} ], "templates": {{"db": "t.db"}}, "devices": "devices.conf",
                 "mo-dir": "mo", "notifications-dir": "{}",
                 "lua": {{"write-dirs": ["{}"], "lib-dir": "{}"}} }}"#,
            notifications.display(),
            lua_dir.display(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("lua").display()
        ),
    )
    .unwrap();
    conf
}

fn bot_once(api: &StandIn, msgs: &Path) {
    let out = bot_poll(api, msgs);
    assert!(out.status.success(), "bot: {}", String::from_utf8_lossy(&out.stderr));
}

/// One poll of the bot (`--once`) for chats 111 and 222.
fn bot_poll(api: &StandIn, msgs: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(scripts().join("xe-tele-bot.py"))
        .arg("--once")
        .env("XE_TG_TOKEN", "123:abc")
        .env("XE_TG_CHATS", "111,222")
        .env("XE_TG_API", &api.url)
        .env("TELEMSG_DIR", msgs)
        .output()
        .unwrap()
}

/// The messages sent since the last call (the JSON bodies of the sendMessage calls answered
/// with success).
fn sends(api: &StandIn) -> Vec<String> {
    api.calls.lock().unwrap().drain(..).filter(|(m, _, status)| m == "sendMessage" && *status == 200).map(|(_, b, _)| b).collect()
}

const ARGV: [&str; 8] = ["victim", "m", "level1", "/var/lib/xenoeye/notifications/victim-m-level1-10.0.0.9-6", "10.0.0.9", "6", "150000", "100000"];

#[test]
fn red_then_green_reply() {
    let d = workdir("tg-red");
    let api = stand_in("[]");
    run_script("on-start.sh", &d, &ARGV);
    bot_once(&api, &d);
    let red = sends(&api);
    assert_eq!(red.len(), 2, "one per chat: {red:?}");
    for (body, chat) in red.iter().zip(["111", "222"]) {
        assert!(body.contains(&format!("\"chat_id\": \"{chat}\"")), "{body}");
        assert!(body.contains("\"text\": \"\\ud83d\\udd34 Overlimit detected at '<b>"), "{body}");
        assert!(body.contains("object '<b>victim</b>', IP <b>10.0.0.9</b>, proto <b>6</b>, BPS <b>1200000</b>, limit 800000 BPS"), "{body}");
    }
    run_script("on-stop.sh", &d, &ARGV);
    bot_once(&api, &d);
    let green = sends(&api);
    assert_eq!(green.len(), 2);
    assert!(green[0].contains("\\ud83d\\udfe2 Overlimit is over at") && green[0].contains("\"reply_to_message_id\": 101"), "{}", green[0]);
    assert!(green[1].contains("\"chat_id\": \"222\"") && green[1].contains("\"reply_to_message_id\": 102"), "{}", green[1]);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "every message file consumed");
}

#[test]
fn yellow_when_start_and_end_arrive_together_and_id_command() {
    let d = workdir("tg-yellow");
    let api = stand_in(r#"[{"update_id": 7, "message": {"chat": {"id": 333}, "text": "/id"}}]"#);
    run_script("on-start.sh", &d, &ARGV);
    run_script("on-stop.sh", &d, &ARGV);
    bot_once(&api, &d);
    let msgs = sends(&api);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[0].starts_with("{\"chat_id\": \"111\", \"text\": \"\\ud83d\\udfe1 Overlimit detected at"), "{}", msgs[0]);
    assert!(msgs[0].contains("\\nOverlimit is over at"), "{}", msgs[0]);
    assert!(msgs[2].contains("\"chat_id\": 333") && msgs[2].contains("Chat id: 333"), "{}", msgs[2]);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
}

#[test]
fn lua_module_writes_the_same_messages_as_the_shell_scripts() {
    let d = workdir("tg-lua");
    let shell = d.join("shell");
    let lua = d.join("lua");
    std::fs::create_dir_all(&shell).unwrap();
    std::fs::create_dir_all(&lua).unwrap();
    // The shell scripts with the argv xenoeye gives them (its notifications directory here).
    let notifications = d.join("notifications");
    let file = notifications.join("victim-m-level1-10.0.0.9-6");
    let mut argv = ARGV;
    argv[3] = file.to_str().unwrap();
    run_script("on-start.sh", &shell, &argv);
    run_script("on-stop.sh", &shell, &argv);
    // And an underlimit's start (the rate below the threshold).
    let under_file = notifications.join("victim-u-low-10.0.0.9-6");
    let under_argv = ["victim", "u", "low", under_file.to_str().unwrap(), "10.0.0.9", "6", "0", "1000"];
    run_script("on-start.sh", &shell, &under_argv);
    // The Lua module from a hook of an object, for the same events, through the collector.
    std::fs::create_dir_all(d.join("mo/victim")).unwrap();
    std::fs::write(
        d.join("mo/victim/mo.conf"),
        r#"{"mavg": [{"name": "m", "time": 2, "fields": ["dst host", "proto", "octets"],
             "overlimit": [{"name": "level1", "default": [100000], "back2norm-time": 5,
                            "action-lua": "on", "back2norm-lua": "off"}]},
                    {"name": "u", "time": 2, "fields": ["dst host", "proto", "octets"],
             "underlimit": [{"name": "low", "default": [1000], "action-lua": "on"}]}]}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("mo/victim/mo.lua"),
        format!(
            "local tg = xe.module('telegram')\ntg.dir = '{}'\nfunction on(ev) tg.on_start(ev) end\nfunction off(ev) tg.on_stop(ev) end\n",
            lua.display()
        ),
    )
    .unwrap();
    let conf = collector_conf(&d, &notifications, &lua);
    // 10.0.0.9 proto 6: 150,000 B/s against 100,000 at the crossing, then quiet: back to
    // normal, and under 1,000 B/s (0 at the sweep at 20 s, ten windows after its first flow).
    let t0 = 1_795_756_000_000u64;
    let flow = |octets| common::CraftedFlow { src: [198, 51, 100, 7], dst: [10, 0, 0, 9], proto: 6, dport: 443, octets, packets: 1 };
    let frames = vec![common::v9_frame(t0, &[flow(100_000), flow(100_000), flow(100_000)]), common::v9_frame(t0 + 20_000, &[flow(1)])];
    common::write_pcap(&d.join("c.pcap"), &frames);
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(&conf).arg("--read-pcap").arg(d.join("c.pcap")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Same file names, same text but for the time stamp.
    let mask = |s: String| match (s.split_once(" at '<b>"), s.split_once("</b>'")) {
        (Some((what, _)), Some((_, rest))) => format!("{what} at ...{rest}"),
        _ => s,
    };
    // The shell scripts' underlimit end (the rate back over the threshold, or not: the start
    // said it was an underlimit).
    run_script("on-stop.sh", &shell, &under_argv);
    assert!(std::fs::read_to_string(shell.join("victim-u-low-10.0.0.9-6.s")).unwrap().starts_with("Underlimit is over at"));
    assert!(!shell.join("victim-u-low-10.0.0.9-6.under").exists(), "the end removes the marker");
    for name in ["victim-m-level1-10.0.0.9-6.n", "victim-m-level1-10.0.0.9-6.s", "victim-u-low-10.0.0.9-6.n"] {
        let ext = &name[name.len() - 2..];
        let from_shell = mask(std::fs::read_to_string(shell.join(name)).unwrap());
        let from_lua = mask(std::fs::read_to_string(lua.join(name)).unwrap_or_else(|e| panic!("{name}: {e}; {}", String::from_utf8_lossy(&out.stderr))));
        assert_eq!(from_lua, from_shell.replace("BPS <b>1200000</b>", if ext == ".n" { "BPS <b>1200000</b>" } else { "BPS <b>0</b>" }), "{ext}");
    }
}

/// on-start.sh's argv for an anomaly of 10.0.1.`i`.
#[test]
fn an_underlimit_started_by_the_lua_module_and_ended_by_on_stop_sh_is_told_as_an_underlimit() {
    // The start goes through Lua (no NAME.under marker is left), the end through the shell
    // script: it learns the kind from XENOEYE_KIND.
    let d = workdir("tg-mixed");
    let msgs = d.join("msgs");
    std::fs::create_dir_all(d.join("mo/victim")).unwrap();
    std::fs::create_dir_all(&msgs).unwrap();
    std::fs::write(
        d.join("mo/victim/mo.conf"),
        format!(
            r#"{{"mavg": [{{"name": "u", "time": 2, "fields": ["dst host", "proto", "octets"],
                 "underlimit": [{{"name": "low", "default": [1000], "back2norm-time": 3,
                                 "action-lua": "on", "back2norm-script": "{}"}}]}}]}}"#,
            scripts().join("on-stop.sh").display()
        ),
    )
    .unwrap();
    std::fs::write(d.join("mo/victim/mo.lua"), format!("local tg = xe.module('telegram')\ntg.dir = '{}'\nfunction on(ev) tg.on_start(ev) end\n", msgs.display())).unwrap();
    let conf = collector_conf(&d, &d.join("notifications"), &msgs);
    // 10.0.0.9 proto 6: 10,000 B/s (1,000 bytes every 100 ms) for 30 s, none for 5 s (under
    // 1,000 B/s), then again to 50 s (back to normal 3 s on).
    let t0 = 1_795_756_000_000u64;
    let flow = common::CraftedFlow { src: [198, 51, 100, 7], dst: [10, 0, 0, 9], proto: 6, dport: 443, octets: 1000, packets: 1 };
    let frames: Vec<_> = (0..500).filter(|t| !(300..350).contains(t)).map(|t| common::v9_frame(t0 + t * 100, &[flow])).collect();
    common::write_pcap(&d.join("c.pcap"), &frames);
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(&conf).arg("--read-pcap").arg(d.join("c.pcap")).env("TELEMSG_DIR", &msgs).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let read = |ext: &str| std::fs::read_to_string(msgs.join(format!("victim-u-low-10.0.0.9-6{ext}"))).unwrap_or_else(|e| panic!("{ext}: {e}: {err}"));
    assert!(read(".n").starts_with("Underlimit detected at"), "{}", read(".n"));
    assert!(read(".s").starts_with("Underlimit is over at"), "{}", read(".s"));
}

fn storm_argv(i: usize) -> Vec<String> {
    let ip = format!("10.0.1.{i}");
    let mut argv: Vec<String> = ARGV.iter().map(|s| s.to_string()).collect();
    argv[3] = format!("/var/lib/xenoeye/notifications/victim-m-level1-{ip}-6");
    argv[4] = ip;
    argv
}

/// The hosts (10.0.1.x) a message body names.
fn hosts_in(body: &str) -> Vec<usize> {
    body.split("IP <b>10.0.1.").skip(1).map(|rest| rest.split('<').next().unwrap().parse().unwrap()).collect()
}

/// A body's chat and the message it replies to.
fn chat_and_reply(body: &str) -> (String, Option<u64>) {
    let v = |key: &str| body.split(&format!("\"{key}\": ")).nth(1).map(|rest| rest.split([',', '}']).next().unwrap().trim_matches('"').to_string());
    (v("chat_id").unwrap(), v("reply_to_message_id").map(|id| id.parse().unwrap()))
}

#[test]
fn a_storm_is_combined_and_a_rate_limit_waited_out() {
    let d = workdir("tg-storm");
    // The second message is answered "Too Many Requests, retry after 1 s", once.
    let api = stand_in_failing("[]", |n| {
        (n == 2).then_some((429, r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#))
    });
    for i in 1..=30 {
        let argv = storm_argv(i);
        run_script("on-start.sh", &d, &argv.iter().map(String::as_str).collect::<Vec<_>>());
    }
    bot_once(&api, &d);
    // 30 anomalies, about 150 characters each: two messages per chat, each host in one.
    let red = sends(&api);
    let mut announced = std::collections::HashMap::new();
    for (id, body) in (101..).zip(&red) {
        let (chat, reply) = chat_and_reply(body);
        assert_eq!(reply, None);
        assert!(body.contains("\"text\": \"\\ud83d\\udd34 Overlimit detected at"), "{body}");
        for host in hosts_in(body) {
            assert!(announced.insert((chat.clone(), host), id).is_none(), "{host} twice to {chat}");
        }
    }
    assert_eq!(red.len(), 4, "{red:?}");
    assert_eq!(announced.len(), 60, "every host to both chats");
    // They end together: the green replies are combined the same way, each to its red message.
    for i in 1..=30 {
        let argv = storm_argv(i);
        run_script("on-stop.sh", &d, &argv.iter().map(String::as_str).collect::<Vec<_>>());
    }
    bot_once(&api, &d);
    let green = sends(&api);
    assert_eq!(green.len(), 4, "{green:?}");
    let mut ended = 0;
    for body in &green {
        let (chat, reply) = chat_and_reply(body);
        assert!(body.contains("\"text\": \"\\ud83d\\udfe2 Overlimit is over at"), "{body}");
        for host in hosts_in(body) {
            assert_eq!(reply, Some(announced[&(chat.clone(), host)]), "{host} in {body}");
            ended += 1;
        }
    }
    assert_eq!(ended, 60);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "every message file consumed");
}

#[test]
fn a_poll_cut_short_is_finished_by_the_next_with_nothing_sent_twice() {
    let d = workdir("tg-cut");
    // The red to chat 222 and, later, the green to chat 222 fail (Telegram or the network
    // down) at the first try.
    let api = stand_in_failing("[]", |n| (n == 2 || n == 5).then_some((502, r#"{"ok":false,"error_code":502,"description":"Bad Gateway"}"#)));
    run_script("on-start.sh", &d, &ARGV);
    assert!(!bot_poll(&api, &d).status.success(), "the poll reports the failure");
    let first: Vec<_> = sends(&api).iter().map(|b| chat_and_reply(b)).collect();
    assert_eq!(first, vec![("111".to_string(), None)]);
    bot_once(&api, &d);
    let second: Vec<_> = sends(&api).iter().map(|b| chat_and_reply(b)).collect();
    assert_eq!(second, vec![("222".to_string(), None)], "only the chat that missed it");
    run_script("on-stop.sh", &d, &ARGV);
    assert!(!bot_poll(&api, &d).status.success());
    bot_once(&api, &d);
    let green: Vec<_> = sends(&api).iter().map(|b| chat_and_reply(b)).collect();
    assert_eq!(green, vec![("111".to_string(), Some(101)), ("222".to_string(), Some(102))], "each reply once, to its red");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "every message file consumed");
}
