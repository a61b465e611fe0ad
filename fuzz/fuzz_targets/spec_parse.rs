//! Any bytes as a spec file and as a config file: parsing returns a value or located
//! diagnostics inside the input, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|b| *b == b'\n').count().max(1);
    let check = |e: s3syncd::spec::SpecError| {
        for d in e.diagnostics() {
            assert!(d.line >= 1 && d.line <= lines && d.column >= 1 && !d.message.is_empty(), "{d}");
        }
    };
    if let Err(e) = s3syncd::spec::Spec::parse(Path::new("fuzz.toml"), data) {
        check(e);
    }
    if let Err(e) = s3syncd::spec::Config::parse(Path::new("fuzz.toml"), data) {
        check(e);
    }
});
