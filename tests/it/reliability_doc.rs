//! docs/reliability.md is an index of guarantees, each naming the tests that prove it. This
//! keeps the index true: every named test must exist, and every guarantee must name one.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The file that must define test `name` named by `path` (`FILE::TEST` in tests/it, or a
/// module path in src/, with `tests` segments left out).
fn file_of(path: &[&str]) -> Option<PathBuf> {
    let it = root().join("tests/it").join(format!("{}.rs", path[0]));
    if path.len() == 1 && it.exists() {
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
            let defined = file_of(path)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .is_some_and(|text| text.contains(&format!("fn {name}(")));
            if !defined {
                wrong.push(format!("`{t}` names no test"));
            }
        }
    }
    assert!(named >= 30, "only {named} tests named");
    assert!(wrong.is_empty(), "docs/reliability.md:\n{}", wrong.join("\n"));
}
