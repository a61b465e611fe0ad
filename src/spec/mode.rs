//! How objects are copied: the modes, and the chain a mode choice and fallback list make.

use serde::Deserialize;
use std::fmt;

/// How one object is copied. `auto` is not a mode but a chain of them ([`ModeChoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Server-side CopyObject / UploadPartCopy: no byte through the host.
    Direct,
    /// GET piped into a PUT or multipart upload, bounded memory, no disk.
    Stream,
    /// Download to the staging directory, verify, upload.
    Staged,
}

impl Mode {
    /// The name in specs, the manifest's `mode` column and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Stream => "stream",
            Mode::Staged => "staged",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec's `mode` key and `run --mode`: one mode, or `auto` (direct first, then the fallbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// Direct, falling back per object to stream, then staged.
    Auto,
    Direct,
    Stream,
    Staged,
}

impl ModeChoice {
    /// The mode tried first.
    pub fn first(self) -> Mode {
        match self {
            ModeChoice::Auto | ModeChoice::Direct => Mode::Direct,
            ModeChoice::Stream => Mode::Stream,
            ModeChoice::Staged => Mode::Staged,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ModeChoice::Auto => "auto",
            m => m.first().as_str(),
        }
    }
}

impl fmt::Display for ModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode order for a mode choice and fallback list: the first mode (`auto` means `direct`),
/// then the fallbacks (default for `auto`: stream, then staged), without repeats.
pub fn chain(choice: ModeChoice, fallback: &[Mode]) -> Vec<Mode> {
    let mut out = vec![choice.first()];
    for m in fallback {
        if !out.contains(m) {
            out.push(*m);
        }
    }
    out
}
