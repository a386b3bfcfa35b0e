//! Monitoring objects defined in Lua: a mo.lua returning the configuration exports exactly
//! what the same mo.conf exports; children made in code export their own tables; errors name
//! the file and line, and a looping mo.lua cannot hang start-up.

mod common;

use common::{data_dir, workdir};
use std::path::Path;
use std::process::Command;

fn setup(d: &Path) {
    std::fs::create_dir_all(d.join("mo/ingress")).unwrap();
    std::fs::create_dir_all(d.join("exp")).unwrap();
    std::fs::write(d.join("devices.conf"), "[]").unwrap();
    std::fs::write(
        d.join("xenoeye.conf"),
        r#"{ "capture": [ {"socket": {"port": 2055}} ], "templates": {"db": "t.db"}, "devices": "devices.conf", "mo-dir": "mo", "export-dir": "exp" }"#,
    )
    .unwrap();
}

fn run(d: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xenoeye")).arg("-c").arg(d.join("xenoeye.conf")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn exports(d: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(d.join("exp"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

const CONF: &str = r#"{ "filter": "dst net 192.0.2.0/24",
  "fwm": [ {"name": "all", "fields": ["packets", "octets"]},
           {"name": "by_dst", "fields": ["octets desc", "dst host", "proto"], "limit": 5},
           {"name": "by_port", "fields": ["packets", "dst port", "src host"]} ] }"#;

const LUA: &str = r#"
-- the same object, in code
return {
  filter = "dst net 192.0.2.0/24",
  fwm = {
    { name = "all", fields = { "packets", "octets" } },
    { name = "by_dst", fields = { "octets desc", "dst host", "proto" }, limit = 5 },
    { name = "by_port", fields = { "packets", "dst port", "src host" } },
  },
}
"#;

#[test]
fn lua_object_exports_byte_identical_to_mo_conf() {
    let capture = data_dir().join("exporters/softflowd-v9.pcap");
    let a = workdir("luaobj-conf");
    setup(&a);
    std::fs::write(a.join("mo/ingress/mo.conf"), CONF).unwrap();
    let (ok, err) = run(&a, &["--read-pcap", capture.to_str().unwrap()]);
    assert!(ok, "{err}");
    let b = workdir("luaobj-lua");
    setup(&b);
    std::fs::write(b.join("mo/ingress/mo.lua"), LUA).unwrap();
    let (ok, err) = run(&b, &["--read-pcap", capture.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ea, eb) = (exports(&a), exports(&b));
    assert_eq!(ea.len(), 3);
    assert_eq!(ea, eb, "byte-identical export files");
}

/// An ingress object made by a mo.lua with a child per line of a customers file (`name
/// network`), each child and the parent with a window of octets, filtered by `side net`
/// (`dst net`, or `net` for either side); the capture replayed.
fn customers_replayed(d: &Path, customers: &str, side: &str) {
    setup(d);
    std::fs::write(d.join("mo/ingress/customers"), customers).unwrap();
    let lua = r#"
local children = {}
for _, line in ipairs(xe.read_lines("customers")) do
  local name, net = line:match("^(%w+)%s+(%S+)$")
  if name then
    children[name] = { filter = "SIDE " .. net, fwm = { { name = "all", fields = { "octets" } } } }
  end
end
return { filter = "SIDE 192.0.2.0/24", fwm = { { name = "all", fields = { "octets" } } }, children = children }
"#;
    std::fs::write(d.join("mo/ingress/mo.lua"), lua.replace("SIDE", side)).unwrap();
    let (ok, err) = run(d, &["--check-config"]);
    assert!(ok, "{err}");
    let (ok, err) = run(d, &["--read-pcap", data_dir().join("exporters/softflowd-v9.pcap").to_str().unwrap()]);
    assert!(ok, "{err}");
}

/// Octets of the export files whose names start with `prefix`.
fn exported_octets(d: &Path, prefix: &str) -> u64 {
    exports(d)
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .flat_map(|(_, t)| t.lines().filter(|l| l.contains("to_timestamp(")).map(|l| l.split(',').nth(1).unwrap().trim_matches([' ', ')', ';']).parse::<u64>().unwrap()).collect::<Vec<_>>())
        .sum()
}

/// The truth (softflowd exports every flow of the capture): per flow, the last byte of its
/// source and of its destination when in 192.0.2.0/24, and its bytes.
fn truth_flows_192_0_2() -> Vec<(Option<usize>, Option<usize>, u64)> {
    let truth = std::fs::read_to_string(data_dir().join("exporters/traffic.truth.json")).unwrap();
    let root = xenoeye::config::json::parse(&truth, Path::new("truth")).unwrap();
    let last_byte = |f: &xenoeye::config::json::Node, key: &str| match &f.get(key).unwrap().value {
        xenoeye::config::json::Value::String(s) => s.strip_prefix("192.0.2.").and_then(|x| x.parse::<usize>().ok()),
        _ => None,
    };
    let flows = root.get("flows").unwrap().as_array(Path::new("t"), "").unwrap();
    flows.iter().map(|f| (last_byte(f, "src"), last_byte(f, "dst"), f.get("bytes").unwrap().as_u64(Path::new("t"), "").unwrap())).collect()
}

/// Bytes of the flows to addresses of 192.0.2.0/24 whose last byte `to` accepts.
fn truth_bytes_to(to: impl Fn(usize) -> bool) -> u64 {
    truth_flows_192_0_2().iter().filter(|(_, dst, _)| dst.is_some_and(&to)).map(|f| f.2).sum()
}

#[test]
fn children_generated_from_a_customers_file() {
    let d = workdir("luaobj-children");
    customers_replayed(&d, "# name network\nalpha 192.0.2.0/26\nbeta 192.0.2.64/26\n", "dst net");
    let want = [truth_bytes_to(|a| a < 64), truth_bytes_to(|a| (64..128).contains(&a))];
    assert!(want[0] > 0 && want[1] > 0);
    assert_eq!(exported_octets(&d, "ingress_alpha_all_"), want[0]);
    assert_eq!(exported_octets(&d, "ingress_beta_all_"), want[1]);
    assert_eq!(exported_octets(&d, "ingress_all_"), truth_bytes_to(|_| true), "the parent sees all of 192.0.2.0/24");
}

/// 64 customers of a /30 filtered by `side net`: found through the index of siblings rather
/// than tried one by one (filter::index), each still gets exactly its own traffic, once.
fn many_customers_each_get_exactly_their_traffic(side: &str) {
    let d = workdir(&format!("luaobj-many-{}", side.replace(' ', "-")));
    let customers: String = (0..64).map(|i| format!("c{i} 192.0.2.{}/30\n", i * 4)).collect();
    customers_replayed(&d, &customers, side);
    let either = side == "net";
    let bytes = |inside: &dyn Fn(usize) -> bool| -> u64 {
        truth_flows_192_0_2().iter().filter(|(src, dst, _)| dst.is_some_and(inside) || (either && src.is_some_and(inside))).map(|f| f.2).sum()
    };
    let busy = (0..64).filter(|i| bytes(&|a| a / 4 == *i) > 0).count();
    assert!(busy >= 2, "the capture reaches several customers ({busy})");
    for i in 0..64 {
        assert_eq!(exported_octets(&d, &format!("ingress_c{i}_all_")), bytes(&|a| a / 4 == i), "customer c{i} ({side})");
    }
    assert_eq!(exported_octets(&d, "ingress_all_"), bytes(&|_| true));
}

#[test]
fn many_customers_by_destination_each_get_exactly_their_traffic() {
    many_customers_each_get_exactly_their_traffic("dst net");
}

#[test]
fn many_customers_by_either_side_each_get_exactly_their_traffic() {
    many_customers_each_get_exactly_their_traffic("net");
}

#[test]
fn lua_errors_name_file_and_line_and_loops_do_not_hang() {
    let d = workdir("luaobj-errors");
    setup(&d);
    std::fs::write(d.join("mo/ingress/mo.lua"), "local x = 1\nreturn { filter = nosuchvar.field }\n").unwrap();
    let (ok, err) = run(&d, &["--check-config"]);
    assert!(!ok);
    let file = d.join("mo/ingress/mo.lua");
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    std::fs::write(d.join("mo/ingress/mo.lua"), "while true do end\n").unwrap();
    let t = std::time::Instant::now();
    let (ok, err) = run(&d, &["--check-config"]);
    assert!(!ok && err.contains("instruction limit"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    // A bad field in the returned configuration is a configuration error of mo.lua.
    std::fs::write(d.join("mo/ingress/mo.lua"), "return { fwm = { { name = 'x', fields = { 'octets', 'host' } } } }\n").unwrap();
    let (ok, err) = run(&d, &["--check-config"]);
    assert!(!ok && err.contains("mo.lua") && err.contains("needs \"src\" or \"dst\""), "{err}");
    // One table in two places is fine; a table in itself, or one placed twice at each of 40
    // levels (2^40 values), is an error, not a hang.
    let shared = "local f = { 'src host', 'octets' }\nreturn { fwm = { { name = 'a', fields = f }, { name = 'b', fields = f } } }\n";
    std::fs::write(d.join("mo/ingress/mo.lua"), shared).unwrap();
    let (ok, err) = run(&d, &["--check-config"]);
    assert!(ok, "{err}");
    for (lua, want) in [
        ("local t = { 'x' }\nt[2] = t\nreturn { fwm = t }\n", "a table of the configuration holds itself"),
        ("local t = { 1 }\nfor i = 1, 40 do t = { t, t } end\nreturn { fwm = t }\n", "the configuration holds more than 2000000 values"),
    ] {
        std::fs::write(d.join("mo/ingress/mo.lua"), lua).unwrap();
        let (ok, err) = run(&d, &["--check-config"]);
        assert!(!ok && err.contains(&format!("{}: {want}", file.display())), "{err}");
    }
    // A misspelt key is warned of, with its key path: a Lua table has no position.
    std::fs::write(d.join("mo/ingress/mo.lua"), "return { fwm = { { name = 'a', fields = { 'octets' }, limt = 5 } } }\n").unwrap();
    let (ok, err) = run(&d, &["--check-config"]);
    assert!(ok && err.contains(&format!("{}: 'fwm[0].limt': unknown key, ignored (did you mean 'limit'?)", file.display())), "{err}");
}

#[test]
fn export_hook_gets_the_rows_as_exported() {
    let d = workdir("luaobj-export");
    setup(&d);
    std::fs::create_dir_all(d.join("mo/ssh_scanners")).unwrap();
    std::fs::write(
        d.join("mo/ssh_scanners/mo.conf"),
        r#"{ "filter": "src net 192.0.2.0/24 and dst port 22",
             "fwm": [ {"name": "hosts", "fields": ["packets", "src host", "dst host"], "export-lua": "scanners"} ] }"#,
    )
    .unwrap();
    // Alert when a host of ours contacts at least `n` destinations on ssh in one window.
    std::fs::write(
        d.join("mo/ssh_scanners/mo.lua"),
        r#"
function scanners(ex)
  local dsts = {}
  for _, row in ipairs(ex.rows) do
    dsts[row.src_host] = (dsts[row.src_host] or 0) + 1
  end
  local out = {}
  for src, n in pairs(dsts) do out[#out + 1] = src .. " " .. n end
  table.sort(out)
  xe.write_file(xe.dir .. "/scanners.txt", ex.table .. " " .. #ex.rows .. "\n" .. table.concat(out, "\n") .. "\n")
end
"#,
    )
    .unwrap();
    let (ok, err) = run(&d, &["--read-pcap", data_dir().join("exporters/softflowd-v9.pcap").to_str().unwrap()]);
    assert!(ok, "{err}");
    // The same from the export file itself.
    let file = exports(&d).into_iter().find(|(n, _)| n.starts_with("ssh_scanners_hosts_")).unwrap().1;
    let rows: Vec<&str> = file.lines().filter(|l| l.contains("to_timestamp(")).collect();
    let mut per_src: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &rows {
        let src = r.split('\'').nth(1).unwrap().to_string();
        *per_src.entry(src).or_default() += 1;
    }
    let mut want = format!("ssh_scanners_hosts {}\n", rows.len());
    for (src, n) in &per_src {
        want += &format!("{src} {n}\n");
    }
    assert!(!per_src.is_empty());
    let got = std::fs::read_to_string(d.join("mo/ssh_scanners/scanners.txt")).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(got, want);
    assert!(err.contains("lua hooks 1 (errors 0, cut 0, dropped 0)"), "{err}");
}
