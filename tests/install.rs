//! The install script into a temporary root: the documented tree, edited configuration kept
//! on a second run, and systemd units that `systemd-analyze verify` accepts.

mod common;

use common::workdir;
use std::path::Path;
use std::process::Command;

fn install(root: &Path) -> String {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh")).env("DESTDIR", root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn installs_the_tree_and_keeps_edited_configs() {
    let root = workdir("install");
    install(&root);
    for f in [
        "usr/local/bin/xenoeye",
        "usr/local/share/xenoeye/fill-db.sh",
        "usr/local/share/xenoeye/xe-dbexport-pg.sh",
        "usr/local/share/xenoeye/iana-protocols.sh",
        "usr/local/share/xenoeye/mkchart-matplotlib-ts.py",
        "usr/local/share/xenoeye/xe_charts.py",
        "usr/local/share/xenoeye/sql/protocol-numbers-1.csv",
        "usr/local/share/xenoeye/sql/xe_rep.sql",
        "usr/local/share/xenoeye/grafana/provisioning/datasource.yaml",
        "usr/local/share/xenoeye/telegram-bot/on-start.sh",
        "usr/local/share/xenoeye/telegram-bot/xe-tele-bot.py",
        "usr/local/share/xenoeye/examples/mo/ingress/mo.conf",
        "usr/local/share/xenoeye/lua/telegram.lua",
        "usr/local/share/doc/xenoeye/README.md",
        "etc/xenoeye/xenoeye.conf",
        "etc/xenoeye/devices.conf",
        "etc/xenoeye/export.env",
        "etc/xenoeye/telegram.env",
        "etc/systemd/system/xenoeye.service",
        "etc/systemd/system/xenoeye-telegram.service",
        "etc/systemd/system/xenoeye-export.service",
        "etc/systemd/system/xenoeye-export.timer",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    for d in ["mo", "exp", "expfailed", "iplists", "notifications", "telemsg"] {
        assert!(root.join("var/lib/xenoeye").join(d).is_dir(), "{d}");
    }
    use std::os::unix::fs::PermissionsExt;
    let token_file = std::fs::metadata(root.join("etc/xenoeye/telegram.env")).unwrap();
    assert_eq!(token_file.permissions().mode() & 0o777, 0o600, "the bot's token is readable by root alone");
    // The installed configuration is valid (its absolute paths moved under the root).
    let conf = std::fs::read_to_string(root.join("etc/xenoeye/xenoeye.conf")).unwrap();
    let rooted = conf.replace("\"/etc/", &format!("\"{}/etc/", root.display())).replace("\"/var/", &format!("\"{}/var/", root.display()));
    std::fs::write(root.join("check.conf"), rooted).unwrap();
    let out = Command::new(root.join("usr/local/bin/xenoeye")).arg("-c").arg(root.join("check.conf")).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // An operator edits the configuration; installing again keeps it.
    let edited = conf.replace("\"port\": 2055", "\"port\": 9995");
    std::fs::write(root.join("etc/xenoeye/xenoeye.conf"), &edited).unwrap();
    let said = install(&root);
    assert_eq!(std::fs::read_to_string(root.join("etc/xenoeye/xenoeye.conf")).unwrap(), edited);
    assert_eq!(std::fs::read_to_string(root.join("etc/xenoeye/xenoeye.conf.dist")).unwrap(), conf);
    assert!(said.contains("kept your"), "{said}");
    assert!(!root.join("etc/xenoeye/devices.conf.dist").exists(), "unchanged files get no .dist");
}

#[test]
fn systemd_units_verify() {
    let root = workdir("units");
    install(&root);
    // Verify against the installed binaries: point the units' paths into the root.
    let units = root.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let mut args = vec!["verify".to_string()];
    for u in ["xenoeye.service", "xenoeye-export.service", "xenoeye-export.timer", "xenoeye-telegram.service"] {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(u)).unwrap();
        assert!(!text.contains("/tmp/"), "installed units name the real paths");
        let p = units.join(u);
        std::fs::write(&p, text.replace("/usr/local", &format!("{}/usr/local", root.display()))).unwrap();
        args.push(p.display().to_string());
    }
    let service = std::fs::read_to_string(root.join("etc/systemd/system/xenoeye.service")).unwrap();
    for line in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "User=xenoeye", "AmbientCapabilities=CAP_NET_RAW", "NoNewPrivileges=yes", "ProtectSystem=strict", "KillMode=mixed", "TimeoutStopSec=60"] {
        assert!(service.contains(line), "{line}");
    }
    let out = Command::new("systemd-analyze").args(&args).output().expect("systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}
