# Shared by the benchmark scripts (sourced): their log lines, medians and
# CPU accounting. The sourcing script sets BENCH_NAME first.

log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# cpu_ticks PID: user+system CPU of the whole process (all threads), in clock
# ticks.  The fields are counted after "(comm)", which could hold spaces.
cpu_ticks() {
	[[ -r /proc/$1/stat ]] || die "process $1 has exited"
	sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# median "V1 V2 ...": the middle value (mean of the two middle ones if even).
median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END {
	if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
