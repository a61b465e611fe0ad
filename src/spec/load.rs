//! Reading spec files: one file read whole with every problem located, and a directory of
//! them, each feed's name and destination kept apart from every other's.

use super::diag::toml_message;
use super::{raw, Deliveries, Diagnostic, Locator, Side, Spec, SpecError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Deserializes a spec, reporting every unknown key and bad value in one pass: serde stops at
/// the first, so each one found is blanked out (with spaces, keeping every offset) and the
/// text read again. Stops at a syntax error, at a missing key, or when blanking would break the
/// TOML itself. Returns the spec read from what was left, if any, and the problems found.
pub(super) fn deserialize_all(loc: &Locator) -> (Option<raw::RawSpec>, Vec<Diagnostic>) {
    let mut text = loc.text.to_string();
    let mut diags = Vec::new();
    loop {
        let e = match toml::from_str::<raw::RawSpec>(&text) {
            Ok(raw) => return (Some(raw), diags),
            Err(e) => e,
        };
        diags.push(loc.at(e.span(), toml_message(&e)));
        let Some(span) = e.span().filter(|_| diags.len() < 50) else {
            return (None, diags);
        };
        let blanked = blank_entry(&text, span.start);
        if e.message().starts_with("missing field") || toml::from_str::<toml::Table>(&blanked).is_err() {
            return (None, diags);
        }
        text = blanked;
    }
}

/// The text with the line at `at` replaced by spaces; for a table header, its whole table.
fn blank_entry(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    let mut end = line_end(start);
    if text[start..end].trim_start().starts_with('[') {
        // Up to the next table header, or the end.
        while end < text.len() {
            let next = line_end(end + 1);
            if text[end + 1..next].trim_start().starts_with('[') {
                break;
            }
            end = next;
        }
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.extend(text[start..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    out.push_str(&text[end..]);
    out
}

pub(super) fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A spec describes one feed; anything larger than this is a generated file gone wrong.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Like sshd's StrictModes: spec files decide what gets copied where with which credentials,
/// so a file or directory that group or others may write is refused.
pub fn unsafe_permissions(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| {
        format!(
            "{} is writable by group or others (mode {:o}); refusing it: run `chmod go-w {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// Whether a directory entry is a spec file: `*.toml`, not hidden (editors' temp files, `.#x.toml`).
pub fn is_spec_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && path.extension().is_some_and(|e| e == "toml") && name.len() > ".toml".len()
}

/// Every spec in a directory: the good ones, and the located problems of the others.
#[derive(Debug, Default)]
pub struct SpecSet {
    pub specs: BTreeMap<String, Spec>,
    pub errors: Vec<Diagnostic>,
    /// Files that failed, so a reload can keep their last good version.
    pub failed_files: Vec<PathBuf>,
    /// Names refused for a clash with another file, and the file refused.
    pub refused: BTreeMap<String, PathBuf>,
}

/// Loads every `*.toml` in `dir` (sorted by file name), checking name uniqueness across files.
pub fn load_dir(dir: &Path) -> Result<SpecSet, SpecError> {
    if let Some(why) = unsafe_permissions(dir) {
        return Err(SpecError::single(dir, why));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError::single(dir, format!("cannot read spec directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| is_spec_file(p))
        .collect();
    files.sort();
    let mut set = SpecSet::default();
    for file in files {
        add_spec(&mut set, &file);
    }
    Ok(set)
}

/// Loads the given files and directories into one set (for `validate PATH...`).
pub fn load_paths(paths: &[PathBuf]) -> SpecSet {
    let mut set = SpecSet::default();
    for p in paths {
        if p.is_dir() {
            match load_dir(p) {
                Ok(sub) => {
                    set.errors.extend(sub.errors);
                    set.failed_files.extend(sub.failed_files);
                    set.refused.extend(sub.refused);
                    for (_, spec) in sub.specs {
                        insert_unique(&mut set, spec);
                    }
                }
                Err(e) => set.errors.extend(e.diagnostics().iter().cloned()),
            }
        } else {
            add_spec(&mut set, p);
        }
    }
    set
}

fn add_spec(set: &mut SpecSet, file: &Path) {
    match Spec::load(file) {
        Ok(spec) => insert_unique(set, spec),
        Err(e) => {
            set.errors.extend(e.diagnostics().iter().cloned());
            set.failed_files.push(file.to_path_buf());
        }
    }
}

/// Adds a spec unless its name or its destination collides with one already loaded. A
/// collision refuses both files, each error naming the other file: a reload then keeps each
/// running feed's last good version, and `run NAME` refuses rather than pick one.
fn insert_unique(set: &mut SpecSet, spec: Spec) {
    // A name refused for a clash stays refused: a third file with it is refused too.
    if let Some(first) = set.refused.get(&spec.name).cloned() {
        return refuse(set, spec, &first, Clash::Name);
    }
    let clash = set.specs.values().find_map(|s| {
        if s.name == spec.name {
            Some((s.name.clone(), Clash::Name))
        } else if s.destination.overlaps(&spec.destination) {
            Some((s.name.clone(), Clash::Destination))
        } else {
            places_into(s, &spec).or_else(|| places_into(&spec, s)).map(|c| (s.name.clone(), c))
        }
    });
    match clash {
        None => {
            set.specs.insert(spec.name.clone(), spec);
        }
        Some((name, clash)) => {
            let first = set.specs.remove(&name).expect("found above");
            let first_path = first.path.clone();
            refuse(set, first, &spec.path, clash);
            refuse(set, spec, &first_path, clash);
        }
    }
}

/// Where `a` writes its delivery files or kept versions inside `b`: in `b`'s destination, where
/// `b` would list them as its data (and delete them with `delete = true`), or in `b`'s source,
/// where `b` would copy them as data on every run.
fn places_into(a: &Spec, b: &Spec) -> Option<Clash> {
    let delivery = match &a.feed.deliveries {
        Some(Deliveries::Prefix(p)) => Some(p.as_str()),
        _ => None,
    };
    let inside = |side: &Side| {
        a.destination.same_bucket(side)
            && [delivery, a.feed.keep_previous.as_deref()]
                .into_iter()
                .flatten()
                .any(|p| side.holds_keys_under(p))
    };
    if inside(&b.destination) {
        Some(Clash::Placement)
    } else if inside(&b.source) {
        Some(Clash::Feeding)
    } else {
        None
    }
}

fn refuse(set: &mut SpecSet, spec: Spec, other: &Path, clash: Clash) {
    set.errors.push(clash.diagnostic(&spec, other));
    set.failed_files.push(spec.path.clone());
    set.refused.insert(spec.name, spec.path);
}

/// Why two spec files cannot both be loaded.
#[derive(Clone, Copy)]
enum Clash {
    Name,
    /// One destination lies inside the other.
    Destination,
    /// One spec's delivery prefix or `keep_previous` lies inside the other's destination.
    Placement,
    /// One spec's delivery prefix or `keep_previous` lies inside the other's source.
    Feeding,
}

impl Clash {
    fn diagnostic(self, spec: &Spec, other: &Path) -> Diagnostic {
        let (at, message) = match self {
            Clash::Name => (
                spec.name_at,
                format!(
                    "spec name {:?} is also used by {}; give each spec a unique `name` (neither file is loaded until then)",
                    spec.name,
                    other.display()
                ),
            ),
            Clash::Destination => (
                spec.dest_at,
                format!(
                    "destination s3://{}/{} overlaps the destination of {}: two specs would overwrite and delete each other's objects; give each its own bucket or a prefix outside the other's",
                    spec.destination.bucket,
                    spec.destination.prefix,
                    other.display()
                ),
            ),
            Clash::Placement => (
                spec.dest_at,
                format!(
                    "a delivery prefix or keep_previous of this spec or of {} lies inside the other's destination prefix (bucket {}): it would be listed as data; move it outside every destination prefix",
                    other.display(),
                    spec.destination.bucket
                ),
            ),
            Clash::Feeding => (
                spec.dest_at,
                format!(
                    "a delivery prefix or keep_previous of this spec or of {} lies inside the other's source prefix (bucket {}): its runs would copy those files back in as data; move it outside every source prefix",
                    other.display(),
                    spec.destination.bucket
                ),
            ),
        };
        Diagnostic {
            path: spec.path.clone(),
            line: at.0,
            column: at.1,
            message,
        }
    }
}
