//! The layers of the crate run one way (docs/architecture.md): a module may import only from
//! layers below its own, and the leaves (`metrics`, `speed`) import nothing of the crate.
//! This reads the sources, as a newcomer would, and fails on the first upward import. The
//! rooms stay small enough to read: no file of `src/` over 600 lines, no function over 80.

use std::path::{Path, PathBuf};

/// Lowest first. Modules of one rank do not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("spec", 0),
    ("s3", 1),
    ("shard", 1),
    ("manifest", 1),
    ("plan", 2),
    ("report", 2),
    ("events", 2),
    ("transfer", 3),
    ("engine", 4),
    ("scheduler", 5),
    ("daemon", 6),
    ("cli", 7),
];
const LEAVES: &[&str] = &["metrics", "speed"];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Every `.rs` file of `src/`: its path under `src/` (`transfer/mod.rs`) and where it is.
fn src_files() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|f| (f.strip_prefix(&src).unwrap().display().to_string(), f))
        .collect()
}

/// The crate modules a file names, as `crate::NAME`.
fn imports(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .filter(|(i, _)| !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (rel, file) in &src_files() {
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let own = rank(module);
        assert!(own.is_some() || LEAVES.contains(&module), "{rel} is in no layer: add it to LAYERS");
        for to in imports(&std::fs::read_to_string(file).unwrap()) {
            checked += 1;
            let allowed = match (own, rank(&to)) {
                _ if to == module => true,
                (None, _) => false,
                (_, None) => LEAVES.contains(&to.as_str()),
                (Some(a), Some(b)) => b < a,
            };
            if !allowed {
                wrong.push(format!("{rel}: {module} imports crate::{to}"));
            }
        }
    }
    assert!(checked > 50, "found only {checked} imports: is the scan broken?");
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_every_form_of_import() {
    let text = "use crate::spec::{Mode};\nfn f() { crate::metrics::x(); }\nlet a = my_crate::engine;";
    assert_eq!(imports(text), ["spec", "metrics"]);
}

/// The functions of a file longer than `max` lines, as `LINE name (N lines)`. Reads rustfmt's
/// layout: a function starts at a line with `fn NAME` and ends at the first `}` at its indent.
fn long_functions(text: &str, max: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let words: Vec<&str> = code.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let qualifiers = ["pub", "pub(crate)", "pub(super)", "async", "const", "unsafe"];
        if !words[..at].iter().all(|w| qualifiers.contains(w)) || code.starts_with("//") {
            continue;
        }
        // The signature ends with the body's `{`, or with `;` (a declaration without body).
        let Some(open) = (i..lines.len()).find(|&j| lines[j].ends_with('{') || lines[j].ends_with(';') || lines[j].ends_with('}')) else {
            continue;
        };
        if !lines[open].ends_with('{') {
            continue;
        }
        let close = (open + 1..lines.len())
            .find(|&j| lines[j] == format!("{indent}}}"))
            .unwrap_or(lines.len());
        let n = close - i + 1;
        if n > max {
            let name: String = words[at + 1].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            long.push(format!("{} {name} ({n} lines)", i + 1));
        }
    }
    long
}

#[test]
fn no_room_over_600_lines_and_no_function_over_80() {
    let files = src_files();
    let mut over = Vec::new();
    for (rel, file) in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let n = text.lines().count();
        if n > 600 {
            over.push(format!("{rel}: {n} lines"));
        }
        over.extend(long_functions(&text, 80).into_iter().map(|f| format!("{rel}:{f}")));
    }
    assert!(files.len() > 50, "found only {} files: is the scan broken?", files.len());
    assert!(over.is_empty(), "too long:\n{}", over.join("\n"));
}

#[test]
fn the_length_scan_finds_a_long_function_and_skips_declarations() {
    let body = "        x();\n".repeat(80);
    let text =
        format!("impl A {{\n    fn short();\n    pub(crate) async fn long(\n        a: u8,\n    ) {{\n{body}    }}\n}}\nfn tiny() {{}}\n");
    assert_eq!(long_functions(&text, 80), ["3 long (84 lines)"]);
    assert!(long_functions(&text, 84).is_empty());
}

/// docs/architecture.md's table of files names every file of `src/` by its path, and no file
/// that is gone: the map a newcomer reads matches the code file by file.
#[test]
fn the_architecture_names_every_file_of_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let table = &doc[doc.find("## Files").expect("docs/architecture.md has a Files section")..];
    let named: Vec<&str> = table.split('`').skip(1).step_by(2).filter(|w| w.ends_with(".rs")).collect();
    let paths: Vec<String> = src_files().into_iter().map(|(rel, _)| rel).collect();
    let missing: Vec<&String> = paths.iter().filter(|p| !named.contains(&p.as_str())).collect();
    let stale: Vec<&&str> = named.iter().filter(|n| !paths.iter().any(|p| p == *n)).collect();
    assert!(missing.is_empty(), "files of src/ the architecture does not name: {missing:?}");
    assert!(stale.is_empty(), "the architecture names files that are gone: {stale:?}");
}
