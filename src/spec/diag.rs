//! Located diagnostics: every config or spec problem is reported as `FILE:LINE:COLUMN: message`,
//! so an operator can jump straight to it, and so the loader can report all problems at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file, located by 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

/// Turns byte offsets of one source text into diagnostics.
pub struct Locator<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        Diagnostic {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where the first invalid UTF-8 byte sits, for files that are not text.
pub fn utf8_error(path: &Path, bytes: &[u8], err: &std::str::Utf8Error) -> Diagnostic {
    let valid = std::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or_default();
    let (line, column) = line_col(valid, valid.len());
    Diagnostic {
        path: path.to_path_buf(),
        line,
        column,
        message: "file is not valid UTF-8; save it as UTF-8 text".into(),
    }
}

/// The parser's message; some syntax errors (a value missing at the end of the file) carry an
/// empty one.
pub(super) fn toml_message(e: &toml::de::Error) -> String {
    match e.message().trim() {
        "" => "incomplete TOML: a value, quote or bracket is missing here".into(),
        m => match did_you_mean(m) {
            Some(near) => format!("{m}; did you mean `{near}`?"),
            None => m.to_string(),
        },
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant"): the
/// expected name nearest to the one written, if it is a likely typo.
fn did_you_mean(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (written, expected) = rest.split_once('`')?;
    let (near, distance) = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (name, edit_distance(written, name)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= 2.max(written.len() / 4)).then_some(near)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_unicode_columns() {
        assert_eq!(line_col("a = 1\nbé = 2", 0), (1, 1));
        assert_eq!(line_col("a = 1\nbé = 2", 6), (2, 1));
        assert_eq!(line_col("a = 1\nbé = 2", 9), (2, 3));
        assert_eq!(line_col("x", 99), (1, 2));
    }

    #[test]
    fn typos_get_the_nearest_name() {
        let m = "unknown field `concurency`, expected one of `concurrency`, `part_size`, `retries`";
        assert_eq!(did_you_mean(m), Some("concurrency"));
        assert_eq!(
            did_you_mean("unknown field `bukcet`, expected one of `bucket`, `prefix`"),
            Some("bucket")
        );
        assert_eq!(
            did_you_mean("unknown variant `steam`, expected one of `auto`, `direct`, `stream`, `staged`"),
            Some("stream")
        );
        assert_eq!(
            did_you_mean("unknown field `threads`, expected one of `concurrency`, `retries`"),
            None
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
