#!/usr/bin/env bash
# Runs the mode, fault and crash suites N times in a row (default 10) on a release build and
# stops at the first failure: the check that none of them can fail by chance.
#
#   tests/repeat.sh [N]
#
# Each round runs every test of tests/it/modes.rs and tests/it/reliability.rs, and the daemon's
# shutdown tests, against s3s-fs and moto on 127.0.0.1. S3SYNCD_CRASH_SEED varies the crash
# test's kill points; by default each round uses its round number, so a failure names a seed
# that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
cargo test --release --locked --test it --no-run
for round in $(seq 1 "$rounds"); do
  seed=${S3SYNCD_CRASH_SEED:-$round}
  echo "== round $round of $rounds (S3SYNCD_CRASH_SEED=$seed)"
  S3SYNCD_CRASH_SEED=$seed cargo test --release --locked --test it -- \
    modes:: reliability:: daemon::sigterm daemon::shutdown_grace 2>&1 | grep -E "^test |test result" || {
    echo "round $round failed (S3SYNCD_CRASH_SEED=$seed)"; exit 1; }  # pipefail: cargo's failure counts
done
echo "$rounds rounds passed"
