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
}
