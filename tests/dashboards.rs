//! The shipped Grafana dashboards against Grafana's own published schema (@grafana/schema,
//! pinned in tests/grafana): scripts/check-grafana-dashboards.sh accepts them, and rejects a
//! copy with a mistyped dashboard key and a panel value outside its enum, naming both.
//! (Every panel's SQL is run against a real PostgreSQL in tests/reports.rs.)

use std::path::Path;
use std::process::Command;

fn check(files: &[&Path]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/check-grafana-dashboards.sh")).args(files).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn shipped_dashboards_match_grafanas_schema_and_mistakes_are_named() {
    let (ok, text) = check(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("2 dashboards match Grafana's schema"), "{text}");

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/grafana/dashboards/ingress.json");
    let json = std::fs::read_to_string(&shipped).unwrap();
    let broken = json.replacen("\"refresh\"", "\"refersh\"", 1).replacen("\"drawStyle\": \"bars\"", "\"drawStyle\": \"bar\"", 1);
    assert_ne!(broken, json);
    let dir = xenoeye::testdir::TestDir::new("dashboards");
    let bad = dir.join("typo.json");
    std::fs::write(&bad, broken).unwrap();
    let (ok, text) = check(&[&bad]);
    assert!(!ok, "{text}");
    assert!(text.contains("typo.check.ts") && text.contains("'\"refersh\"' does not exist in type 'Dashboard'"), "{text}");
    assert!(text.contains("Type '\"bar\"' is not assignable to type '\"bars\" | \"line\" | \"points\" | undefined'"), "{text}");
}
