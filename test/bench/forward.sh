#!/usr/bin/env bash
# The cost of forwarding: 4 KiB random reads at queue depth 32 through the
# node that owns a LUN and through a node that forwards every command to
# it, on a three-node cluster on 127.0.0.1-3 (one page-cached 1 GiB file),
# alternating, BENCH_ROUNDS times each; the floor is 50% of the owner.
#
# Environment: BENCH_ROUNDS=3, BENCH_SECONDS=10, BENCH_ENFORCE=0 (1: exit
# non-zero below the floor), BENCH_OUT=/tmp, HATARGET_BIN (default
# bin/hatarget).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${HATARGET_BIN:-$PWD/bin/hatarget}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
ENFORCE=${BENCH_ENFORCE:-0}
OUT=${BENCH_OUT:-/tmp}
mkdir -p "$OUT"
FLOOR=0.5
IQN=iqn.2025-01.io.hatarget:forward-bench
PORTS=(23260 29260 29261 29262 29264 29263) # iSCSI, API, Raft, gossip, forwarding, replication

BENCH_NAME=forward-bench
source test/bench/lib.sh

command -v iscsi-perf >/dev/null || die "iscsi-perf not installed (apt-get install libiscsi-bin)"
[[ -x $BIN ]] || die "$BIN missing: make build"
for ip in 127.0.0.1 127.0.0.2 127.0.0.3; do
	for p in "${PORTS[@]}"; do
		! ss -Htln "src $ip:$p" | grep -q . || die "$ip:$p is in use"
	done
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

for i in 1 2 3; do
	joins=()
	for j in 1 2 3; do [[ $j == "$i" ]] || joins+=(--join "127.0.0.$j:${PORTS[3]}"); done
	"$BIN" agent --name "n$i" --bind "127.0.0.$i" --data-dir "$WORK/n$i" --storage-dir "$WORK/shared" \
		--bootstrap-expect 3 "${joins[@]}" --iscsi-port "${PORTS[0]}" --api-port "${PORTS[1]}" \
		--raft-port "${PORTS[2]}" --gossip-port "${PORTS[3]}" --forward-port "${PORTS[4]}" --replication-port "${PORTS[5]}" \
		--log-level warn >"$WORK/n$i.log" 2>&1 &
	PIDS+=($!)
done
ctl() { "$BIN" "$@" --addr "127.0.0.1:${PORTS[1]}"; }
for _ in $(seq 100); do
	ctl cluster status -o json 2>/dev/null | grep -q '"leader": "n' && break
	sleep 0.2
done
ctl target create "$IQN" >/dev/null
ctl lun create "$IQN" 0 --name fwd0 --shared --path "$WORK/shared/fwd0.img" --size 1G >/dev/null
owner=$(ctl lun show fwd0 -o json | sed -n 's/.*"owner": "n\([0-9]\)".*/\1/p')
[[ $owner =~ ^[123]$ ]] || die "no owner for the LUN"
other=$((owner % 3 + 1))
dd if=/dev/urandom of="$WORK/shared/fwd0.img" bs=1M count=1024 conv=notrunc status=none
url() { echo "iscsi://127.0.0.$1:${PORTS[0]}/$IQN/0"; }
for n in "$owner" "$other"; do
	for _ in $(seq 50); do iscsi-perf -m 8 -b 8 -r -t 1 "$(url "$n")" >/dev/null 2>&1 && break; sleep 0.2; done
done
log "owner n$owner, forwarding node n$other; $ROUNDS rounds of ${SECS}s, 4 KiB random reads, QD32"

perf() {
	timeout --foreground -k 5 $((SECS + 60)) iscsi-perf -m 32 -b 8 -r -t "$SECS" "$(url "$1")" 2>&1 |
		tr '\r' '\n' | awk '/^iops average/ {v = $3} END {print v}'
}
owner_runs= other_runs=
for r in $(seq "$ROUNDS"); do
	o=$(perf "$owner") f=$(perf "$other")
	log "round $r: owner $o IOPS, forwarded $f IOPS"
	owner_runs+="$o " other_runs+="$f "
done
o=$(median "$owner_runs") f=$(median "$other_runs")
ratio=$(awk -v f="$f" -v o="$o" 'BEGIN {printf "%.2f", f / o}')
verdict=$(awk -v r="$ratio" -v fl="$FLOOR" 'BEGIN {print (r >= fl) ? "pass" : "FAIL"}')
{
	echo "| path | 4 KiB random read, QD32 (median of $ROUNDS) |"
	echo "|---|---|"
	echo "| owner (n$owner) | $o IOPS |"
	echo "| forwarding node (n$other) | $f IOPS ($ratio of the owner; floor $FLOOR: $verdict) |"
} | tee "$OUT/bench-forward.md"
[[ $verdict == pass || $ENFORCE != 1 ]] || die "forwarding below the floor"
