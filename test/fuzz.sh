#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 5s).
# Targets are discovered from the source, so a new one is never forgotten.
set -euo pipefail
fuzztime=${1:-5s}
cd "$(dirname "$0")/.."
status=0
while IFS= read -r file; do
	pkg=./$(dirname "$file")
	for name in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
		echo "fuzz $pkg $name ($fuzztime)"
		if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
			cat /tmp/fuzz-$$.log
			status=1
		fi
	done
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
rm -f /tmp/fuzz-$$.log
exit $status
