//! Stamps the build for `s3syncd --version`: the git commit (when built from a checkout) and
//! the compiler. Nothing else is generated here.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = std::env::var("S3SYNCD_GIT_COMMIT")
        .ok()
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(&rustc, &["--version"]).unwrap_or_else(|| "rustc (unknown)".into());
    println!("cargo:rustc-env=S3SYNCD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=S3SYNCD_RUSTC={rustc}");
    println!("cargo:rerun-if-env-changed=S3SYNCD_GIT_COMMIT");
    // A new commit re-stamps the binary; an unchanged HEAD never rebuilds it.
    for f in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}
