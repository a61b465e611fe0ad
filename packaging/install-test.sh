#!/usr/bin/env bash
# The install test: builds the .deb, installs it on this Debian machine (as root), and checks
# what an operator relies on: files and modes, the user, `validate` as that user, the unit, the
# man pages, the completions, an upgrade keeping an edited config, remove and purge.
# Changes the system: run it on a throwaway VM or container.
#
#     sudo packaging/install-test.sh [--no-build]    # --no-build: reuse target/debian/*.deb
#     S3SYNCD_DEB_PROFILE=dev packaging/install-test.sh   # the debug build: no size budget, no dbgsym
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: it installs a package" >&2; exit 2; }

fail() { echo "FAIL: $*" >&2; exit 1; }
check() { echo "ok: $*"; }
mode_of() { stat -c '%a %U:%G' "$1"; }

if [ "${1:-}" != "--no-build" ]; then
    packaging/build-deb.sh
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# The package, and the same package as a later revision for the upgrade (cargo-deb clears
# target/debian, so both are kept apart).
work=target/install-test
rm -rf "$work" && mkdir -p "$work"
deb=$work/s3syncd_$version-1.deb
deb2=$work/s3syncd_$version-2.deb
cp "$(ls -t target/debian/s3syncd_"$version"-1_*.deb | head -1)" "$deb"
# The debug symbols' package, when the build made one (release).
for f in target/debian/s3syncd-dbgsym_"$version"-1_*.ddeb; do
    [ -e "$f" ] && cp "$f" "$work/"
done
cargo deb --no-build --profile "${S3SYNCD_DEB_PROFILE:-release}" --deb-revision 2 --output "$deb2" >/dev/null 2>&1

dpkg --purge s3syncd >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
check "installed $deb"

# Files and modes.
[ "$(mode_of /usr/bin/s3syncd)" = "755 root:root" ] || fail "/usr/bin/s3syncd is $(mode_of /usr/bin/s3syncd)"
[ "$(mode_of /etc/s3syncd/s3syncd.toml)" = "644 root:root" ] || fail "config is $(mode_of /etc/s3syncd/s3syncd.toml)"
[ -d /etc/s3syncd/specs.d ] && [ -z "$(ls -A /etc/s3syncd/specs.d)" ] || fail "specs.d is missing or not empty"
unit=$(ls /lib/systemd/system/s3syncd.service /usr/lib/systemd/system/s3syncd.service 2>/dev/null | head -1)
[ -n "$unit" ] || fail "no unit installed"
[ -f /usr/lib/sysusers.d/s3syncd.conf ] || fail "no sysusers.d file"
ls /usr/share/doc/s3syncd/examples/*.toml >/dev/null || fail "no example specs"
[ -f /usr/share/doc/s3syncd/spec-reference.md ] || fail "no docs"
[ -f /usr/share/s3syncd/prometheus/s3syncd-rules.yml ] && [ -f /usr/share/s3syncd/grafana/s3syncd.json ] || fail "no alert rules or dashboard"
grep -qx /etc/s3syncd/s3syncd.toml /var/lib/dpkg/info/s3syncd.conffiles || fail "config is not a conffile"
check "files, modes, conffile"
# The package's budget (the release build): the installed binary at most 16 MiB, its debug
# info in the separate s3syncd-dbgsym package.
if [ "${S3SYNCD_DEB_PROFILE:-release}" = release ]; then
    size=$(stat -c %s /usr/bin/s3syncd)
    [ "$size" -le 16777216 ] || fail "/usr/bin/s3syncd is $size bytes, over the budget of 16 MiB (16,777,216 bytes)"
    check "/usr/bin/s3syncd is $size bytes (budget 16,777,216)"
    listed=$(dpkg -L s3syncd)
    ! grep -q '^/usr/lib/debug' <<<"$listed" || fail "debug info inside the main package"
    ddeb=$(find "$work" -name "s3syncd-dbgsym_$version-1_*.ddeb" | head -1)
    [ -n "$ddeb" ] || fail "no s3syncd-dbgsym package"
    contents=$(dpkg-deb -c "$ddeb")
    grep -q '/usr/lib/debug/.build-id/.*\.debug$' <<<"$contents" || fail "$(basename "$ddeb") holds no debug file"
    check "debug info in $(basename "$ddeb"), not in the main package"
fi
/usr/bin/s3syncd --version | grep -q "commit" || fail "--version has no commit: $(/usr/bin/s3syncd --version)"
check "$(/usr/bin/s3syncd --version)"

# The user, and validate as that user against the installed config.
getent passwd s3syncd >/dev/null || fail "no s3syncd user"
getent group s3syncd >/dev/null || fail "no s3syncd group"
install -d -o s3syncd -g s3syncd -m 0750 /var/lib/s3syncd
cp /usr/share/doc/s3syncd/examples/binance-spot-klines-1m.toml /etc/s3syncd/specs.d/
chmod 644 /etc/s3syncd/specs.d/binance-spot-klines-1m.toml
runuser -u s3syncd -- /usr/bin/s3syncd validate || fail "validate as s3syncd"
check "user s3syncd; validate passes as s3syncd"

# The unit, the man pages, the completions.
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
check "systemd-analyze verify $unit${out:+ ($out)}"
shard=$(ls /lib/systemd/system/s3syncd-shard@.service /usr/lib/systemd/system/s3syncd-shard@.service 2>/dev/null | head -1)
[ -n "$shard" ] || fail "no shard template unit"
# A template is verified as an instance of it.
cp "$shard" "$work/s3syncd-shard@0000.service"
out=$(systemd-analyze verify "$work/s3syncd-shard@0000.service" 2>&1) || fail "systemd-analyze verify: $out"
check "systemd-analyze verify s3syncd-shard@0000.service${out:+ ($out)}"
for page in /usr/share/man/man1/s3syncd.1.gz /usr/share/man/man1/s3syncd-run.1.gz /usr/share/man/man5/s3syncd.toml.5.gz; do
    [ -f "$page" ] || fail "missing $page"
    MANWIDTH=80 man -l "$page" 2>/dev/null | grep -q . || fail "man -l $page renders nothing"
done
MANWIDTH=80 man -l /usr/share/man/man5/s3syncd.toml.5.gz | grep -q "copy_threshold" || fail "s3syncd.toml(5) lacks copy_threshold"
check "man pages render"
bash -c 'source /usr/share/bash-completion/completions/s3syncd && complete -p s3syncd' | grep -q s3syncd || fail "bash completion"
[ -f /usr/share/zsh/vendor-completions/_s3syncd ] && [ -f /usr/share/fish/vendor_completions.d/s3syncd.fish ] || fail "zsh/fish completions"
check "completions"

# An upgrade keeps the edited config and the specs.
sed -i 's/^max_running_specs .*/max_running_specs = 2  # edited/' /etc/s3syncd/s3syncd.toml
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold "./$deb2" >/dev/null
grep -q "max_running_specs = 2  # edited" /etc/s3syncd/s3syncd.toml || fail "upgrade lost the edited config"
[ -f /etc/s3syncd/specs.d/binance-spot-klines-1m.toml ] || fail "upgrade lost a spec"
dpkg-query -W -f '${Version}' s3syncd | grep -q -- "-2$" || fail "not upgraded"
check "upgrade keeps the edited config and specs"

# Remove stops the service (debhelper snippets), keeps the config; purge removes /etc/s3syncd,
# keeps the manifest directory and the user.
grep -q "deb-systemd-invoke stop" /var/lib/dpkg/info/s3syncd.prerm || fail "prerm does not stop the service"
touch /var/lib/s3syncd/manifest.db
dpkg --remove s3syncd >/dev/null
[ ! -e /usr/bin/s3syncd ] && [ -f /etc/s3syncd/s3syncd.toml ] || fail "remove"
dpkg --purge s3syncd >/dev/null
[ ! -e /etc/s3syncd ] || fail "purge left /etc/s3syncd"
[ -f /var/lib/s3syncd/manifest.db ] || fail "purge removed the manifest"
getent passwd s3syncd >/dev/null || fail "purge removed the user"
check "remove stops the service; purge removes /etc/s3syncd, keeps /var/lib/s3syncd and the user"
echo "install test passed"
