#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ briefly, from its committed seed corpus.
#
#   tests/fuzz-smoke.sh                 # every target, 30 s each
#   FUZZ_SECONDS=600 tests/fuzz-smoke.sh reference digest
#
# Exits 0 with a notice when cargo-fuzz is not installed (CI may skip it), and
# non-zero when any target crashes; the crashing input is kept under
# fuzz/artifacts/<target>/ (replay: cargo fuzz run -O -s none <target> <file>).
#
# Runs on a stable toolchain: with `--sanitizer none` cargo-fuzz passes no
# nightly-only flag (AddressSanitizer would need -Zsanitizer, i.e. nightly or
# RUSTC_BOOTSTRAP=1; these parsers are safe Rust, so panics are what we hunt).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz is not installed; skipping (install: cargo install cargo-fuzz)"
  exit 0
fi

secs="${FUZZ_SECONDS:-30}"
flags=(-O --sanitizer none)
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build "${flags[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  echo "fuzz-smoke: $t for ${secs}s"
  # New inputs go to a scratch dir; the committed seeds are only read.
  mkdir -p "$work/$t"
  if ! cargo fuzz run "${flags[@]}" "$t" "$work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$work/$t.log" 2>&1; then
    tail -n 40 "$work/$t.log"
    failed+=("$t")
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' "$work/$t.log" | tail -n 2 || true
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets ran ${secs}s each without a crash"
