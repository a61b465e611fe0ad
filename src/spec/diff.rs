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
    /// Specs loaded with `enabled = false`.
    pub disabled: Vec<String>,
}

impl SpecDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
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
    for file in &loaded.failed_files {
        if let Some((name, spec)) = running.iter().find(|(_, s)| &s.path == file) {
            if !wanted.contains_key(name) {
                d.kept.push((name.clone(), file.clone()));
                wanted.insert(name.clone(), spec.clone());
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
}
