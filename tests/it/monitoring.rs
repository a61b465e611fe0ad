//! The alert rules and the dashboard shipped in `etc/`: the rules pass their `promtool` unit
//! tests, and every metric the rules or the dashboard query is one the daemon exports.

use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The `s3syncd_*` names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("s3syncd_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

/// What `src/metrics.rs` describes: the names the daemon's `/metrics` exports, with the
/// series a histogram adds (the exporter renders it as a summary: quantiles, `_sum`, `_count`).
fn exported() -> BTreeSet<String> {
    let src = repo("src/metrics.rs");
    let mut out = BTreeSet::new();
    for (kind, body) in ["describe_counter!(", "describe_gauge!(", "describe_histogram!("]
        .iter()
        .flat_map(|k| src.split(k).skip(1).map(move |b| (*k, b)))
    {
        let name = metric_names(body.split(',').next().unwrap()).into_iter().next().unwrap();
        if kind == "describe_histogram!(" {
            for suffix in ["_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
        out.insert(name);
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_query_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("s3syncd_run_duration_seconds_count"), "{exported:?}");
    let dashboard: serde_json::Value = serde_json::from_str(&repo("etc/grafana/s3syncd.json")).unwrap();
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            queries += t["expr"].as_str().unwrap();
            queries += "\n";
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        queries += v["query"].as_str().unwrap_or_default();
    }
    for (what, text) in [("dashboard", queries), ("rules", repo("etc/prometheus/s3syncd-rules.yml"))] {
        let used = metric_names(&text);
        assert!(used.len() >= 8, "{what} queries {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {what} queries metrics the daemon does not export: {unknown:?}"
        );
    }
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/prometheus");
    let out = match std::process::Command::new("promtool")
        .args(["test", "rules", "s3syncd-rules.test.yml"])
        .current_dir(&dir)
        .output()
    {
        Ok(out) => out,
        // CI installs promtool and sets this, so that the test can never pass by skipping there.
        Err(e) if std::env::var_os("S3SYNCD_TESTS_TOOLS").is_none() => {
            return eprintln!("promtool not found ({e}): install Debian's prometheus package to run this test");
        }
        Err(e) => panic!("promtool: {e}"),
    };
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}
