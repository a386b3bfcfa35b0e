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
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn children_generated_from_a_customers_file() {
    let d = workdir("luaobj-children");
    setup(&d);
    std::fs::write(d.join("mo/ingress/customers"), "# name network\nalpha 192.0.2.0/26\nbeta 192.0.2.64/26\n").unwrap();
    std::fs::write(
        d.join("mo/ingress/mo.lua"),
        r#"
local children = {}
for _, line in ipairs(xe.read_lines("customers")) do
  local name, net = line:match("^(%w+)%s+(%S+)$")
  if name then
    children[name] = { filter = "dst net " .. net, fwm = { { name = "all", fields = { "octets" } } } }
  end
end
return { filter = "dst net 192.0.2.0/24", fwm = { { name = "all", fields = { "octets" } } }, children = children }
"#,
    )
    .unwrap();
    let (ok, err) = run(&d, &["--check-config"]);
    assert!(ok, "{err}");
    let (ok, err) = run(&d, &["--read-pcap", data_dir().join("exporters/softflowd-v9.pcap").to_str().unwrap()]);
    assert!(ok, "{err}");
    let sum = |prefix: &str| -> u64 {
        exports(&d)
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .flat_map(|(_, t)| t.lines().filter(|l| l.contains("to_timestamp(")).map(|l| l.split(',').nth(1).unwrap().trim_matches([' ', ')', ';']).parse::<u64>().unwrap()).collect::<Vec<_>>())
            .sum()
    };
    // The truth: bytes to each customer's network (softflowd exports every flow of the capture).
    let truth = std::fs::read_to_string(data_dir().join("exporters/traffic.truth.json")).unwrap();
    let root = xenoeye::config::json::parse(&truth, Path::new("truth")).unwrap();
    let (mut want, mut all) = ([0u64; 2], 0u64);
    for f in root.get("flows").unwrap().as_array(Path::new("t"), "").unwrap() {
        let dst = match &f.get("dst").unwrap().value {
            xenoeye::config::json::Value::String(s) => s.clone(),
            _ => continue,
        };
        let bytes = f.get("bytes").unwrap().as_u64(Path::new("t"), "").unwrap();
        if let Some(last) = dst.strip_prefix("192.0.2.").and_then(|x| x.parse::<u32>().ok()) {
            all += bytes;
            if last < 128 {
                want[(last / 64) as usize] += bytes;
            }
        }
    }
    assert!(want[0] > 0 && want[1] > 0);
    assert_eq!(sum("ingress_alpha_all_"), want[0]);
    assert_eq!(sum("ingress_beta_all_"), want[1]);
    assert_eq!(sum("ingress_all_"), all, "the parent sees all of 192.0.2.0/24");
    std::fs::remove_dir_all(&d).unwrap();
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
    std::fs::remove_dir_all(&d).unwrap();
}
