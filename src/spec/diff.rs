//! What a reload changes, as a value (vector's `ConfigDiff`): computed from the feeds running
//! now and the spec directory as loaded, tested without a daemon, then applied by the daemon.

use super::{Spec, SpecSet};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct SpecDiff {
    /// New feeds to schedule.
    pub added: Vec<Arc<Spec>>,
    /// Feeds whose file changed: the new version applies after the current run.
    pub changed: Vec<Arc<Spec>>,
    /// Feeds to stop scheduling (file gone, or `enabled = false`).
    pub removed: Vec<String>,
    /// Feeds whose file failed to load: they keep their last good version.
    pub kept: Vec<(String, PathBuf)>,
    /// Files refused because a kept feed holds their name: (name, refused file, the feed's file).
    pub shadowed: Vec<(String, PathBuf, PathBuf)>,
    /// Specs loaded with `enabled = false`.
    pub disabled: Vec<String>,
}

/// Compares the running feeds (by name) with a freshly loaded spec directory.
pub fn diff(running: &BTreeMap<String, Arc<Spec>>, loaded: SpecSet) -> SpecDiff {
    let mut d = SpecDiff::default();
    let mut wanted: BTreeMap<String, Arc<Spec>> = BTreeMap::new();
    for (name, spec) in loaded.specs {
        if spec.enabled {
            wanted.insert(name, Arc::new(spec));
        } else {
            d.disabled.push(name);
        }
    }
    // A feed whose file failed keeps its last good version, even when another file now offers
    // a spec of the same name: that file is refused while the feed's own file exists.
    for file in &loaded.failed_files {
        if let Some((name, spec)) = running.iter().find(|(_, s)| &s.path == file) {
            d.kept.push((name.clone(), file.clone()));
            if let Some(other) = wanted.insert(name.clone(), spec.clone()) {
                d.shadowed.push((name.clone(), other.path.clone(), file.clone()));
            }
        }
    }
    d.removed = running.keys().filter(|n| !wanted.contains_key(*n)).cloned().collect();
    for (name, spec) in wanted {
        match running.get(&name) {
            Some(old) if old.fingerprint == spec.fingerprint => {}
            Some(_) => d.changed.push(spec),
            None => d.added.push(spec),
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(file: &str, prefix: &str, enabled: bool) -> Spec {
        let text = format!(
            "enabled = {enabled}\n[source]\nbucket = \"src-bucket\"\nprefix = \"{prefix}\"\n[destination]\nbucket = \"dst-bucket\"\nprefix = \"{prefix}\"\n"
        );
        Spec::parse(Path::new(file), text.as_bytes()).unwrap()
    }

    fn set(specs: Vec<Spec>, failed: &[&str]) -> SpecSet {
        SpecSet {
            specs: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
            errors: Vec::new(),
            failed_files: failed.iter().map(PathBuf::from).collect(),
            refused: BTreeMap::new(),
        }
    }

    fn names(v: &[Arc<Spec>]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn added_changed_removed_and_unchanged() {
        let running: BTreeMap<String, Arc<Spec>> = [
            spec("d/a.toml", "a/", true),
            spec("d/b.toml", "b/", true),
            spec("d/c.toml", "c/", true),
        ]
        .into_iter()
        .map(|s| (s.name.clone(), Arc::new(s)))
        .collect();
        let loaded = set(
            vec![
                spec("d/a.toml", "a/", true),
                spec("d/b.toml", "b2/", true),
                spec("d/n.toml", "n/", true),
            ],
            &[],
        );
        let d = diff(&running, loaded);
        assert_eq!(names(&d.added), ["n"]);
        assert_eq!(names(&d.changed), ["b"]);
        assert_eq!(d.removed, ["c"]);
        assert!(d.kept.is_empty());
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_version_and_disabled_stops() {
        let running: BTreeMap<String, Arc<Spec>> = [spec("d/a.toml", "a/", true), spec("d/b.toml", "b/", true)]
            .into_iter()
            .map(|s| (s.name.clone(), Arc::new(s)))
            .collect();
        let loaded = set(vec![spec("d/b.toml", "b/", false)], &["d/a.toml", "d/new.toml"]);
        let d = diff(&running, loaded);
        assert_eq!(d.kept, [("a".to_string(), PathBuf::from("d/a.toml"))]);
        assert_eq!(d.removed, ["b"]);
        assert_eq!(d.disabled, ["b"]);
        assert!(d.added.is_empty() && d.changed.is_empty());
    }

    /// What one step does to a spec file of the name `feed`.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Good(&'static str, &'static str),
        Broken(&'static str),
        Remove(&'static str),
    }

    /// Every sequence of four adds, edits, breaks and removals of two files that share the
    /// name `feed`, applied as the daemon applies reloads: the running feed always holds the
    /// last good version of its own file while that file exists, never the other file's.
    #[test]
    fn two_files_of_one_name_keep_the_last_good_version_in_every_order() {
        use std::os::unix::fs::PermissionsExt;
        let steps = [
            Step::Good("a", "a1/"),
            Step::Good("a", "a2/"),
            Step::Good("b", "b1/"),
            Step::Broken("a"),
            Step::Broken("b"),
            Step::Remove("a"),
            Step::Remove("b"),
        ];
        let n = steps.len();
        for seq in 0..n.pow(4) {
            let dir = tempfile::tempdir().unwrap();
            let mut running: BTreeMap<String, Arc<Spec>> = BTreeMap::new();
            // The model: each file's state (absent; Some(None): broken) and which file the feed runs.
            let mut files: BTreeMap<&str, Option<Option<&str>>> = BTreeMap::new();
            let mut owner: Option<(&str, &str)> = None;
            let mut trace = Vec::new();
            for i in 0..4 {
                let step = steps[(seq / n.pow(i)) % n];
                trace.push(step);
                let path = |f: &str| dir.path().join(format!("{f}.toml"));
                match step {
                    Step::Good(f, prefix) => {
                        let text = format!("name = \"feed\"\n[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\nprefix = \"{prefix}\"\n");
                        std::fs::write(path(f), text).unwrap();
                        files.insert(f, Some(Some(prefix)));
                    }
                    Step::Broken(f) => {
                        std::fs::write(path(f), "name = \"feed\"\n[source\n").unwrap();
                        files.insert(f, Some(None));
                    }
                    Step::Remove(f) => {
                        let _ = std::fs::remove_file(path(f));
                        files.remove(f);
                    }
                }
                for f in files.keys() {
                    std::fs::set_permissions(path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
                }
                // The daemon: load the directory, apply the diff.
                let d = diff(&running, super::super::load_dir(dir.path()).unwrap());
                for name in &d.removed {
                    running.remove(name);
                }
                for s in d.changed.into_iter().chain(d.added) {
                    running.insert(s.name.clone(), s);
                }
                // The model: a running feed keeps its file while that file exists.
                let good: Vec<(&str, &str)> = files.iter().filter_map(|(f, s)| Some((*f, (*s)??))).collect();
                owner = match owner {
                    Some((f, v)) if files.contains_key(f) => {
                        let alone = good.iter().all(|(g, _)| *g == f);
                        Some((f, good.iter().find(|(g, _)| *g == f && alone).map_or(v, |(_, p)| *p)))
                    }
                    _ if good.len() == 1 => Some(good[0]),
                    _ => None,
                };
                let got = running.get("feed").map(|s| {
                    let file = s.path.file_stem().unwrap().to_string_lossy().into_owned();
                    (file, s.destination.prefix.clone())
                });
                let want = owner.map(|(f, p)| (f.to_string(), p.to_string()));
                assert_eq!(got, want, "after {trace:?}");
            }
        }
    }
}
