#!/usr/bin/env bash
# Builds target/debian/s3syncd_VERSION-1_ARCH.deb: the release binary (its debug info split into
# /usr/lib/debug), the systemd unit and sysusers file, the config, the example specs, the docs,
# the man pages and the shell completions. Installs cargo-deb first if it is missing.
#
#     packaging/build-deb.sh            # then: sudo apt install ./target/debian/s3syncd_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

# S3SYNCD_DEB_PROFILE=dev packages the debug build (CI's install test: no second build).
profile=${S3SYNCD_DEB_PROFILE:-release}
command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.7.0 --locked --quiet
# CI packages the binary `cargo test` just built; building it again without the dev-dependencies
# would compile most crates a second time (other features).
if [ "$profile" != dev ] || [ ! -x target/debug/s3syncd ]; then
    cargo build --profile "$profile" --locked --bin s3syncd
fi

out=target/packaging
rm -rf "$out" && mkdir -p "$out/man" "$out/completions"
bin=target/$([ "$profile" = dev ] && echo debug || echo "$profile")/s3syncd
"$bin" man --out "$out/man" >/dev/null
gzip -9n "$out"/man/*
"$bin" completions bash > "$out/completions/s3syncd.bash"
"$bin" completions zsh > "$out/completions/_s3syncd"
"$bin" completions fish > "$out/completions/s3syncd.fish"

cargo deb --no-build --profile "$profile" "$@"
