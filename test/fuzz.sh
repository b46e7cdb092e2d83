#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 5s)
# and prints, for each, the fuzzer's last figures (elapsed, execs, new
# interesting inputs). Targets are discovered from the source, so a new one
# is never forgotten. FUZZ_JOBS=N runs N targets at once, the machine's
# CPUs shared between them (make fuzz-long: 22 targets of 10 minutes take
# 220 minutes one at a time); FUZZ_ONLY=REGEX runs the targets whose
# "package name" line matches it.
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded"
# at the -fuzztime boundary when a worker is mid-input (golang/go#75804,
# fixed in Go 1.27). Such a run wrote no failing input, so it is run again
# once; a written reproducer, a panic or a second such failure still fails.
set -euo pipefail
fuzztime=${1:-5s}
jobs=${FUZZ_JOBS:-1}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: FUZZ_JOBS must be a positive integer" >&2; exit 2; }
cd "$(dirname "$0")/.."
workers=$(($(nproc) / jobs))
((workers >= 1)) || workers=1

# fuzz_target PKG NAME runs one target (again once after the toolchain's
# deadline race) and prints its figures, or its log when it fails.
fuzz_target() {
	local pkg=$1 name=$2 log
	log=$(mktemp)
	trap 'rm -f "$log"' RETURN
	for attempt in 1 2; do
		if go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -parallel "$workers" "$pkg" >"$log" 2>&1; then
			echo "fuzz $pkg $name ($fuzztime): ok; $(grep -o 'elapsed: .*' "$log" | tail -1)"
			return 0
		fi
		# Only the toolchain's deadline race, no finding of ours: once more.
		if ((attempt == 1)) && grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input written|panic:' "$log"; then
			echo "fuzz $pkg $name: coordinator deadline race (golang/go#75804), no input written; running again"
			continue
		fi
		echo "fuzz $pkg $name ($fuzztime): FAILED"
		cat "$log"
		return 1
	done
	return 1
}
export -f fuzz_target
export fuzztime workers

grep -rl --include='*_test.go' '^func Fuzz' . | sort | while IFS= read -r file; do
	grep -ho '^func Fuzz[A-Za-z0-9_]*' "$file" | sed "s|^func |$(dirname "$file") |"
done | grep -E -- "${FUZZ_ONLY:-.}" | xargs -P "$jobs" -L1 bash -c 'fuzz_target "$@"' _
