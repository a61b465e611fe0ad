//! The layers of the crate run one way (docs/architecture.md): a module may import only from
//! layers below its own, and the leaf (`metrics`) imports nothing of the crate.
//! This reads the sources, as a newcomer would, and fails on the first upward import.

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
const LEAVES: &[&str] = &["metrics"];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let own = rank(module);
        assert!(
            own.is_some() || LEAVES.contains(&module),
            "{} is in no layer: add it to LAYERS",
            rel.display()
        );
        for to in imports(&std::fs::read_to_string(file).unwrap()) {
            checked += 1;
            let allowed = match (own, rank(&to)) {
                _ if to == module => true,
                (None, _) => false,
                (_, None) => LEAVES.contains(&to.as_str()),
                (Some(a), Some(b)) => b < a,
            };
            if !allowed {
                wrong.push(format!("{}: {module} imports crate::{to}", rel.display()));
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
