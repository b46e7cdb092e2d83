#!/usr/bin/env bash
# The cost of synchronous replication: writes through the owner's portal to
# a LUN with --replicas 3 against the same-size LUN with --replicas 1, on a
# three-node cluster on 127.0.0.1-3, each node keeping its copies under its
# own storage dir (on tmpfs by default, so every copy stays in the page
# cache). Both LUNs are owned by the same node, every copy is filled before
# the first run (no hole is ever written), and the two LUNs are measured in
# turns -- replicas 1, replicas 3, replicas 1, ... -- BENCH_ROUNDS times per
# workload; the figures are medians, and the floor, replicas 3 >= 0.5 x
# replicas 1, is judged on the median of the rounds' ratios. Then the
# resync of a replica that was away while repl3 was written (floor: 200
# MB/s).
#
# The load comes from `hatarget bench` (hatarget's own initiator, one
# session): libiscsi's iscsi-perf only issues READ(16), it has no write mode.
#
# Environment: BENCH_ROUNDS=3, BENCH_SECONDS=10, BENCH_ENFORCE=0 (1: exit
# non-zero below a floor), BENCH_OUT=/tmp (bench-replication.md is written
# there), BENCH_STORAGE=/dev/shm (parent of the nodes' storage dirs; falls
# back to the temp dir when /dev/shm is not writable), BENCH_WORKLOADS
# (default "rand4k seq128k": which workloads to run), BENCH_PROFILE=0 (1:
# an extra, unscored replicas-3 4 KiB run while every agent's CPU profile
# is taken, written to BENCH_OUT/replication-{owner,replica}-nI-cpu.pprof
# and their tops printed), BENCH_PERFSTAT=0 (1: extra, unscored replicas-3
# runs under `perf stat`, printing each agent's system calls -- the
# frequent ones by name --, context switches and CPU per I/O, and the
# initiator's CPU per I/O), BENCH_RESYNC=1 (0: skip the resync
# measurement), HATARGET_BIN (default bin/hatarget). The copies take 4 GiB
# of RAM on tmpfs.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${HATARGET_BIN:-$PWD/bin/hatarget}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
ENFORCE=${BENCH_ENFORCE:-0}
OUT=${BENCH_OUT:-/tmp}
mkdir -p "$OUT"
STORAGE=${BENCH_STORAGE:-/dev/shm}
PROFILE=${BENCH_PROFILE:-0}
PERFSTAT=${BENCH_PERFSTAT:-0}
RESYNC=${BENCH_RESYNC:-1}
FLOOR=0.5
SIZE=1G
IQN=iqn.2025-01.io.hatarget:replication-bench
PORTS=(24260 30260 30261 30262 30264 30263 30265) # iSCSI, API, Raft, gossip, forwarding, replication, pprof
# The workloads: id | label | pattern | I/O size | queue depth | unit shown
WORKLOADS=()
for w in "rand4k|4 KiB random write, QD32|randwrite|4k|32|IOPS" "seq128k|128 KiB sequential write, QD8|write|128k|8|MB/s"; do
	[[ " ${BENCH_WORKLOADS:-rand4k seq128k} " == *" ${w%%|*} "* ]] && WORKLOADS+=("$w")
done

BENCH_NAME=replication-bench
source test/bench/lib.sh

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
((${#WORKLOADS[@]} > 0)) || die "BENCH_WORKLOADS names none of rand4k, seq128k"
[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
[[ -x $BIN ]] || die "$BIN missing: make build"
command -v ss >/dev/null || die "ss not installed (apt-get install iproute2)"
for ip in 127.0.0.1 127.0.0.2 127.0.0.3; do
	for p in "${PORTS[@]}"; do
		! ss -Htln "src $ip:$p" | grep -q . || die "$ip:$p is in use"
	done
done

WORK=$(mktemp -d)
if [[ -d $STORAGE && -w $STORAGE ]]; then STORE=$(mktemp -d "$STORAGE/hatarget-replbench.XXXXXX"); else STORE=$WORK/storage; fi
PIDS=()
BELOW_FLOOR=0 # the run itself worked: no node logs to show
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if ((rc != 0 && !BELOW_FLOOR)); then
		for f in "$WORK"/n?.log; do [[ -s $f ]] && { echo "--- $f" >&2; tail -15 "$f" >&2; }; done
	fi
	rm -rf "$WORK" "$STORE"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_agent I: starts node nI (again, after a kill: same dirs), its pid
# in AGENTS[I-1].
start_agent() {
	local i=$1 j joins=()
	for j in 1 2 3; do [[ $j == "$i" ]] || joins+=(--join "127.0.0.$j:${PORTS[3]}"); done
	# setsid: a Ctrl-C reaches the script and its client, not the agents;
	# cleanup stops them once the client has finished.
	setsid "$BIN" agent --name "n$i" --bind "127.0.0.$i" --data-dir "$WORK/n$i" --storage-dir "$STORE/n$i" \
		--bootstrap-expect 3 "${joins[@]}" --iscsi-port "${PORTS[0]}" --api-port "${PORTS[1]}" \
		--raft-port "${PORTS[2]}" --gossip-port "${PORTS[3]}" --forward-port "${PORTS[4]}" --replication-port "${PORTS[5]}" \
		--debug-addr "127.0.0.$i:${PORTS[6]}" --log-level warn >>"$WORK/n$i.log" 2>&1 &
	PIDS+=($!)
	AGENTS[i - 1]=$!
}
AGENTS=()
for i in 1 2 3; do start_agent "$i"; done
ctl() { "$BIN" "$@" --addr "127.0.0.1:${PORTS[1]}"; }
for _ in $(seq 100); do
	ctl cluster status -o json 2>/dev/null | grep -q '"leader": "n' && break
	sleep 0.2
done
ctl cluster status -o json | grep -q '"leader": "n' || die "no leader after 20s"
ctl target create "$IQN" >/dev/null
ctl lun create "$IQN" 0 --name repl1 --size "$SIZE" --replicas 1 >/dev/null
ctl lun create "$IQN" 1 --name repl3 --size "$SIZE" --replicas 3 >/dev/null
owner_of() { ctl lun show "$1" -o json | sed -n 's/^  "owner": "n\([0-9]\)".*/\1/p'; }
owner=$(owner_of repl1)
[[ $owner =~ ^[123]$ ]] || die "no owner for repl1"
# Measure both LUNs through one node: repl3 has a copy everywhere, so it
# can move to repl1's owner.
if [[ $(owner_of repl3) != "$owner" ]]; then ctl lun move repl3 --to "n$owner" >/dev/null; fi
for _ in $(seq 50); do [[ $(owner_of repl3) == "$owner" ]] && break; sleep 0.2; done
[[ $(owner_of repl3) == "$owner" ]] || die "repl3 did not move to n$owner"
insync=$(ctl lun show repl3 -o json | grep -c '"state": "in-sync"' || true)
((insync == 3)) || die "repl3 has $insync in-sync replicas, not 3"

# Fill every copy (identical zeros) before any I/O, so that no run pays
# for allocating pages that an earlier run already allocated.
copies=("$STORE/n$owner/repl1.img" "$STORE/n1/repl3.img" "$STORE/n2/repl3.img" "$STORE/n3/repl3.img")
for f in "${copies[@]}"; do
	for _ in $(seq 50); do [[ -f $f ]] && break; sleep 0.2; done
	[[ -f $f ]] || die "copy $f was not created"
	dd if=/dev/zero of="$f" bs=1M count="$(($(stat -c %s "$f") >> 20))" conv=notrunc status=none
done

portal=127.0.0.$owner:${PORTS[0]}
# bench LUN PATTERN BS QD SECS: one `hatarget bench` run, its whole output
# in $WORK/bench.txt; prints the result line.
bench() {
	${CLIENT_PERF:+perf stat -x, -e task-clock -o "$CLIENT_PERF" --} timeout --foreground -k 5 $(($5 + 60)) "$BIN" bench --portal "$portal" --target "$IQN" --lun "$1" \
		--pattern "$2" --bs "$3" --qd "$4" --duration "${5}s" --log-level warn >"$WORK/bench.txt" 2>&1 || true
	grep -E '^[0-9]+ ops in ' "$WORK/bench.txt" || true
}
for lun in 0 1; do
	ok=
	for _ in $(seq 20); do
		[[ -n $(bench "$lun" randwrite 4k 8 1) ]] && { ok=1; break; }
		sleep 0.5
	done
	[[ -n $ok ]] || die "LUN $lun is not writable through $portal"
done
log "owner n$owner ($portal) for both LUNs; copies under $STORE ($(df --output=fstype "$STORE" | tail -1)); $ROUNDS rounds of ${SECS}s"

cluster_ticks() {
	local t=0 pid
	for pid in "${AGENTS[@]}"; do t=$((t + $(cpu_ticks "$pid"))); done
	echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)
declare -A SAMPLES CPU
# run_once WORKLOAD REPLICAS: one scored run; records the figure shown and
# the CPU the three agents spent per I/O.
run_once() {
	local id label pattern bs qd unit
	IFS='|' read -r id label pattern bs qd unit <<<"$1"
	local lun=0 res t0 t1 iops v cpu lat
	[[ $2 == 3 ]] && lun=1
	t0=$(cluster_ticks)
	res=$(bench "$lun" "$pattern" "$bs" "$qd" "$SECS")
	t1=$(cluster_ticks)
	[[ -n $res && $res == *", 0 errors" ]] || { tail -5 "$WORK/bench.txt" >&2; die "hatarget bench $id on replicas $2 failed"; }
	iops=$(sed -n 's/.*: \([0-9]*\) IOPS, .*/\1/p' <<<"$res")
	if [[ $unit == IOPS ]]; then v=$iops; else v=$(sed -n 's/.* IOPS, \([0-9.]*\) MB\/s.*/\1/p' <<<"$res"); fi
	[[ $v =~ ^[0-9.]+$ ]] || die "cannot parse: $res"
	cpu=$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="$iops" -v s="$SECS" 'BEGIN {printf "%.1f", d / hz * 1e6 / (n * s)}')
	SAMPLES[$id:$2]+="$v " CPU[$id:$2]+="$cpu "
	lat=${res#*latency mean } lat=${lat%% p90*}
	log "  replicas $2  $(printf '%-32s' "$label") $(printf '%9s' "$v") $unit  agents' CPU $cpu µs/IO  (latency mean $lat)"
}

# The floor is judged on each round's pair (replicas 1 then replicas 3,
# 20 s apart): the host's load drifts by more than the margin between runs
# minutes apart, less within a pair.
declare -A RATIOS
last() { awk '{print $NF}' <<<"$1"; }
for r in $(seq "$ROUNDS"); do
	log "round $r/$ROUNDS, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	for w in "${WORKLOADS[@]}"; do
		run_once "$w" 1
		run_once "$w" 3
		id=${w%%|*}
		RATIOS[$id]+="$(awk -v a="$(last "${SAMPLES[$id:1]}")" -v b="$(last "${SAMPLES[$id:3]}")" 'BEGIN {printf "%.3f", b / a}') "
	done
done

# Resync: a replica of repl3 is killed, repl3 is written sequentially for
# 10 s while it is away (about all of it dirty in the owner's bitmap), and
# it comes back;
# the rate is the bytes resynced over the time from the first progress the
# owner reports to readmission. The other two copies serve meanwhile.
RESYNC_RATE=
if [[ $RESYNC == 1 ]]; then
	# n1 may be the one killed: ask the owner.
	ctl_owner() { "$BIN" "$@" --addr "127.0.0.$owner:${PORTS[1]}"; }
	# A replica that does not lead Raft: the leader's death would pause
	# the writes for an election (the owner drops the replica through
	# Raft before it acknowledges without it), which is failover's cost,
	# not resync's; hatarget bench counts the 04/0A answers meanwhile as
	# errors instead of retrying them as initiators do.
	leader=$(ctl_owner cluster status -o json | sed -n 's/^  "leader": "n\([0-9]\)".*/\1/p')
	victim=
	for v in 1 2 3; do [[ $v != "$owner" && $v != "$leader" ]] && { victim=$v; break; }; done
	log "resync: killing n$victim (a replica, not the Raft leader n$leader), writing all of repl3 without it"
	kill -KILL "${AGENTS[victim - 1]}"
	wait "${AGENTS[victim - 1]}" 2>/dev/null || true
	timeout --foreground -k 5 300 "$BIN" bench --portal "$portal" --target "$IQN" --lun 1 --pattern write --bs 1m --qd 8 \
		--duration 10s --log-level warn >"$WORK/fill.txt" 2>&1 || { tail -5 "$WORK/fill.txt" >&2; die "filling repl3 failed"; }
	grep -q ', 0 errors' "$WORK/fill.txt" || { tail -5 "$WORK/fill.txt" >&2; die "filling repl3 failed"; }
	start_agent "$victim"
	t_start= total=0
	for _ in $(seq 1500); do
		js=$(ctl_owner lun show repl3 -o json 2>/dev/null) || { sleep 0.2; continue; }
		if [[ -z $t_start ]] && grep -q '"resync_total"' <<<"$js"; then
			t_start=$(date +%s.%N)
			total=$(sed -n 's/.*"resync_total": \([0-9]*\).*/\1/p' <<<"$js" | sort -n | tail -1)
		fi
		[[ $(grep -c '"state": "in-sync"' <<<"$js") == 3 ]] && break
		sleep 0.2
	done
	t_end=$(date +%s.%N)
	[[ $(ctl_owner lun show repl3 -o json | grep -c '"state": "in-sync"') == 3 ]] || die "n$victim was not readmitted within 5 minutes"
	[[ -n $t_start && $total -gt 0 ]] || die "the owner never reported resync progress"
	RESYNC_RATE=$(awk -v b="$total" -v a="$t_start" -v e="$t_end" 'BEGIN {printf "%.0f", b / (e - a) / 1e6}')
	log "resync: n$victim readmitted, $((total >> 20)) MiB in $(awk -v a="$t_start" -v e="$t_end" 'BEGIN {printf "%.1f", e - a}') s: $RESYNC_RATE MB/s"
fi

if [[ $PROFILE == 1 ]] && ! command -v curl >/dev/null; then log "curl not found: profile skipped"; PROFILE=0; fi
if [[ $PROFILE == 1 ]]; then
	log "profiling every agent for 10s under 4 KiB random writes to repl3 (extra run, not scored)"
	bench 1 randwrite 4k 32 13 >"$OUT/replication-profile-run.txt" &
	PIDS+=($!)
	sleep 1
	curls=()
	for i in 1 2 3; do
		role=replica; ((i == owner)) && role=owner
		curl -fsS -o "$OUT/replication-$role-n$i-cpu.pprof" "http://127.0.0.$i:${PORTS[6]}/debug/pprof/profile?seconds=10" &
		curls+=($!)
	done
	wait "${PIDS[-1]}" "${curls[@]}" || true
	for f in "$OUT"/replication-{owner,replica}-n?-cpu.pprof; do
		[[ -s $f ]] || { log "fetching the profile $f failed"; continue; }
		log "profile written to $f"
		if command -v go >/dev/null; then go tool pprof -top -nodecount=25 "$f" 2>/dev/null | sed -n '1,32p' || true; fi
	done
fi

if [[ $PERFSTAT == 1 ]] && ! perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_pwrite64 true >/dev/null 2>&1; then
	log "perf stat cannot count syscalls here: skipped"; PERFSTAT=0
fi
if [[ $PERFSTAT == 1 ]]; then
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r id label pattern bs qd _ <<<"$w"
		log "per-I/O system calls and context switches of each agent, $label to repl3 (extra run, not scored)"
		perfs=()
		for i in 1 2 3; do
			perf stat -x, -e raw_syscalls:sys_enter,context-switches,"task-clock$(printf ',syscalls:sys_enter_%s' pwrite64 writev write read futex epoll_pwait nanosleep)" \
				-p "${AGENTS[i - 1]}" -- sleep 5 2>"$WORK/perfstat.n$i" &
			perfs+=($!)
		done
		res=$(CLIENT_PERF=$WORK/perfstat.client bench 1 "$pattern" "$bs" "$qd" 5)
		wait "${perfs[@]}" || true
		ops=$(awk '{print $1}' <<<"$res")
		awk -F, -v n="$ops" '$3 == "task-clock" {printf "  %-12s %6.1f µs CPU/IO\n", "initiator", $1 * 1000 / n}' "$WORK/perfstat.client"
		for i in 1 2 3; do
			role=replica; ((i == owner)) && role=owner
			awk -F, -v n="$ops" -v who="n$i ($role)" '$3 == "raw_syscalls:sys_enter" {s = $1} $3 == "context-switches" {c = $1} $3 == "task-clock" {t = $1}
				$3 ~ /^syscalls:sys_enter_/ {sub("syscalls:sys_enter_", "", $3); d = d sprintf(" %s %.2f", $3, $1 / n)}
				END {printf "  %-12s %6.1f µs CPU/IO  %5.2f context switches/IO  %5.2f syscalls/IO:%s\n", who, t * 1000 / n, c / n, s / n, d}' "$WORK/perfstat.n$i"
		done
	done
fi

FAILS=0
{
	echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average at end $(cut -d' ' -f1-3 /proc/loadavg); owner n$owner, copies on $(df --output=fstype "$STORE" | tail -1); hatarget bench, one session"
	echo
	echo "| workload (median of $ROUNDS x ${SECS}s) | replicas 1 | replicas 3 | ratio: median of the rounds' (range) | floor | agents' CPU µs/IO, 1 / 3 |"
	echo "|---|---:|---:|---:|---|---:|"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r id label _ _ _ unit <<<"$w"
		ratios=$(tr ' ' '\n' <<<"${RATIOS[$id]}" | awk 'NF' | sort -g)
		ratio=$(median "${RATIOS[$id]}" | awk '{printf "%.2f", $1}')
		range="$(head -1 <<<"$ratios" | awk '{printf "%.2f", $1}')-$(tail -1 <<<"$ratios" | awk '{printf "%.2f", $1}')"
		verdict=$(awk -v r="$ratio" -v f="$FLOOR" 'BEGIN {print (r >= f) ? "pass" : "FAIL"}')
		echo "| $label ($unit) | $(median "${SAMPLES[$id:1]}") | $(median "${SAMPLES[$id:3]}") | $ratio ($range) | $FLOOR: $verdict | $(median "${CPU[$id:1]}") / $(median "${CPU[$id:3]}") |"
	done
	if [[ -n $RESYNC_RATE ]]; then
		verdict=$(awk -v r="$RESYNC_RATE" 'BEGIN {print (r >= 200) ? "pass" : "FAIL"}')
		echo "| resync of a returning replica, bitmap of $((total >> 20)) MiB (MB/s) | | $RESYNC_RATE | | 200: $verdict | |"
	fi
	echo
	echo "Samples, replicas 1 ; replicas 3:"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r id label _ <<<"$w"
		echo "- $label: ${SAMPLES[$id:1]% }; ${SAMPLES[$id:3]% }"
	done
} >"$WORK/result.md"
FAILS=$(grep -c 'FAIL |' "$WORK/result.md" || true)
cp "$WORK/result.md" "$OUT/bench-replication.md"
cat "$WORK/result.md"
((FAILS == 0 || ENFORCE != 1)) || { BELOW_FLOOR=1; die "$FAILS ratio(s) below the floor"; }
((FAILS == 0)) || log "$FAILS ratio(s) below the floor (not enforced; BENCH_ENFORCE=1 fails the run)"
