//! docs/reliability.md is an index of guarantees, each naming the tests that prove it. This
//! keeps the index true: every named test must exist, and every guarantee must name one.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The file that must define a test named by `path` (its name left off): `tests/it/FILE.rs`
/// for `FILE::TEST`, else the module under `src/` with `tests` segments left out (a unit test
/// is named through its `tests` module, which tells `events::tests::x` in `src/events/` from
/// `events::x` in `tests/it/events.rs`).
fn file_of(path: &[&str], unit: bool) -> Option<PathBuf> {
    let it = root().join("tests/it").join(format!("{}.rs", path[0]));
    if path.len() == 1 && it.exists() && !unit {
        return Some(it);
    }
    let dir = root().join("src").join(path.join("/"));
    [dir.with_extension("rs"), dir.join("mod.rs")].into_iter().find(|p| p.exists())
}

/// Backticked `a::b::c` names in a line.
fn named_tests(line: &str) -> Vec<String> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains("::") && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .map(str::to_string)
        .collect()
}

/// Whether `text` defines `name` as a test that runs: a `#[test]` or `#[tokio::test]`
/// attribute above its `fn`, and no `#[ignore]`.
fn runs_as_test(text: &str, name: &str) -> Result<(), &'static str> {
    let at = text.find(&format!("fn {name}(")).ok_or("names no test")?;
    // The lines above the fn's own line (which may start `async `, `pub `).
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let attrs: Vec<&str> = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
        .collect();
    if !attrs.iter().any(|a| a.starts_with("#[test]") || a.starts_with("#[tokio::test")) {
        return Err("is not a test (no #[test] above it)");
    }
    if attrs.iter().any(|a| a.starts_with("#[ignore")) {
        return Err("is ignored");
    }
    Ok(())
}

#[test]
fn a_named_test_must_run() {
    let ok = "/// doc\n#[tokio::test(flavor = \"multi_thread\")]\nasync fn a() {}\n";
    assert_eq!(runs_as_test(ok, "a"), Ok(()));
    assert!(runs_as_test("fn helper() {}\n", "helper").is_err());
    assert!(runs_as_test("#[test]\n#[ignore]\nfn b() {}\n", "b").is_err());
    assert!(runs_as_test("#[test]\nfn c() {}\n", "d").is_err());
}

#[test]
fn every_named_test_exists() {
    let doc = std::fs::read_to_string(root().join("docs/reliability.md")).unwrap();
    let rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| guarantee |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(rows.len() >= 15, "found {} guarantees", rows.len());
    let mut wrong = Vec::new();
    let mut named = 0;
    for row in rows {
        let tests = named_tests(row.rsplit('|').nth(1).unwrap_or(""));
        if tests.is_empty() {
            wrong.push(format!("no test named for: {}", row.split('|').nth(1).unwrap_or(row).trim()));
        }
        for t in tests {
            named += 1;
            let parts: Vec<&str> = t.split("::").filter(|p| *p != "tests").collect();
            let (name, path) = parts.split_last().unwrap();
            let text = file_of(path, t.contains("::tests::"))
                .and_then(|f| std::fs::read_to_string(f).ok())
                .unwrap_or_default();
            match runs_as_test(&text, name) {
                Ok(()) => {}
                Err(why) => wrong.push(format!("`{t}` {why}")),
            }
        }
    }
    assert!(named >= 30, "only {named} tests named");
    assert!(wrong.is_empty(), "docs/reliability.md:\n{}", wrong.join("\n"));
}
