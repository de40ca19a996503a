#!/usr/bin/env bash
# Fuzzes the proxy's parsers (the targets in fuzz/, run by cargo-fuzz and libFuzzer), each for
# a short time, starting from the inputs in fuzz/corpus/<target>/ and every input that once
# crashed it (fuzz/regressions/<target>/). Fails when a target crashes and names the input that
# reproduces it.
#   scripts/fuzz.sh                     every target, FUZZ_SECONDS (default 12) each
#   scripts/fuzz.sh classify change_user    these targets only
#   FUZZ_SECONDS=600 scripts/fuzz.sh classify   a longer run
# New inputs a run finds go to a temporary directory: the corpus in the repository changes only
# when someone merges them in (see README.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-12}
bash scripts/install-deps.sh fuzz
cargo_fuzz=target/fuzz-tools/bin/cargo-fuzz

# No sanitizer: cargo-fuzz then passes only flags that stable rustc accepts (AddressSanitizer
# needs nightly's -Zsanitizer, and finds little in a crate that forbids unsafe code). Debug
# assertions make an arithmetic overflow a crash, as it is in the tests.
flags=(--sanitizer none --debug-assertions)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("$cargo_fuzz" list)
fi

started=$SECONDS
"$cargo_fuzz" build "${flags[@]}"
echo "fuzz: built in $((SECONDS - started)) s; ${#targets[@]} targets, ${seconds} s each" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/corpus/$target" "fuzz/artifacts/$target"
  log="$work/$target.log"
  # The first corpus directory receives new inputs; the repository's are only read.
  seeds=("fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && seeds+=("fuzz/regressions/$target")
  # A single input taking more than 10 s is a hang, reported like a crash.
  if "$cargo_fuzz" run "${flags[@]}" "$target" "$work/corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $target: ${runs:-?} inputs, no crash" >&2
  else
    tail -n 40 "$log" >&2
    artifact=$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$log" | tail -n 1)
    echo "fuzz: $target FAILED; reproduce with:" >&2
    echo "  $cargo_fuzz run ${flags[*]} $target ${artifact:-<input>}" >&2
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: every target ran $seconds s without a crash" >&2
