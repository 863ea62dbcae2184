#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time, seed corpus first
# (testdata/fuzz/<Target>/ and the f.Add seeds), then new inputs for
# FUZZTIME. A target that fails makes the script fail, naming the target
# and the input Go wrote under the package's testdata/fuzz/<Target>/: keep
# that file, it is the regression test once the bug is fixed.
#
#   FUZZTIME=3s      how long each target fuzzes (go test -fuzztime: 3s, 1m, 1000x)
#   FUZZ_JOBS=2      how many targets fuzz at once; the cores are shared
#                    among them (go test -parallel), so two at a time mostly
#                    overlaps one target's build with another's fuzzing
#   FUZZ_MATCH=.     run only the targets whose "package Target" matches this regexp
#
# Each target is its own go test -fuzz run, since the fuzzing engine takes
# one target of one package at a time. No -race: the race detector slows
# the engine several times over and its reports do not minimize.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME="${FUZZTIME:-3s}"
FUZZ_JOBS="${FUZZ_JOBS:-2}"
[ "$FUZZ_JOBS" -ge 1 ] || FUZZ_JOBS=1
workers=$(( $(nproc) / FUZZ_JOBS ))
[ "$workers" -ge 1 ] || workers=1
FUZZ_MATCH="${FUZZ_MATCH:-.}"

# The packages whose test files declare a fuzz target.
pkgs=()
while read -r pkg files; do
  [ -n "$files" ] && grep -qE '^func Fuzz[A-Za-z0-9_]*\(' $files && pkgs+=("$pkg")
done < <(go list -f '{{.ImportPath}}{{range .TestGoFiles}} {{$.Dir}}/{{.}}{{end}}{{range .XTestGoFiles}} {{$.Dir}}/{{.}}{{end}}' ./...)
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets found" >&2
  exit 1
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# go test -list prints a package's target names, then its "ok" line.
if ! go test -run '^$' -list '^Fuzz' "${pkgs[@]}" >"$logs/list" 2>&1; then
  cat "$logs/list" >&2
  echo "fuzz.sh: cannot list the fuzz targets" >&2
  exit 1
fi
targets=()
names=()
while read -r first second _; do
  case "$first" in
    Fuzz*) names+=("$first") ;;
    ok)
      for n in "${names[@]}"; do
        if [[ "$second $n" =~ $FUZZ_MATCH ]]; then targets+=("$second $n"); fi
      done
      names=()
      ;;
  esac
done <"$logs/list"
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz target matches $FUZZ_MATCH" >&2
  exit 1
fi

# fuzz runs one target; its output goes to a log named after it, and a
# ".failed" file marks a failure.
fuzz() {
  local pkg=$1 name=$2 log
  log="$logs/$(echo "$pkg" | tr / _).$name"
  local start=$SECONDS
  local run=(go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -parallel "$workers" -timeout 10m "$pkg")
  if "${run[@]}" >"$log" 2>&1; then
    echo "ok    $pkg $name ($((SECONDS - start))s)"
  elif ! grep -q 'Failing input written' "$log" && grep -q 'context deadline exceeded' "$log" &&
    { mv "$log" "$log.first"; "${run[@]}" >"$log" 2>&1; }; then
    # The engine gave up waiting for a busy worker as -fuzztime ran out
    # (it reports "context deadline exceeded" and writes no input): a
    # loaded machine, not a finding. A second run that passes says so.
    echo "ok    $pkg $name ($((SECONDS - start))s, after the engine timed out once on a busy machine)"
  else
    touch "$log.failed"
    echo "FAIL  $pkg $name ($((SECONDS - start))s)"
  fi
}

echo "fuzzing ${#targets[@]} targets for $FUZZTIME each, $FUZZ_JOBS at a time"
start=$SECONDS
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$FUZZ_JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz $t &
  running=$((running + 1))
done
wait
echo "fuzzing took $((SECONDS - start))s"

failed=0
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  log="$logs/$(echo "$pkg" | tr / _).$name"
  [ -e "$log.failed" ] || continue
  failed=1
  dir=$(go list -f '{{.Dir}}' "$pkg")
  echo
  echo "=== $pkg $name failed:"
  tail -n 60 "$log"
  inputs=$(sed -n 's/^.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*$/\1/p' "$log")
  if [ -n "$inputs" ]; then
    for i in $inputs; do
      echo "new failing input: ${dir#"$PWD"/}/$i (rerun: go test -run '$name/$(basename "$i")' $pkg)"
    done
  else
    echo "no new input was written: a seed or corpus input fails, or the target does not build"
  fi
done
exit $failed
