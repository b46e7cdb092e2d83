#!/usr/bin/env bash
# hatarget speed benchmark: hatarget against Linux's tgt, on loopback.
#
# Both targets serve the SAME page-cached 1 GiB file (plus a null LUN each),
# and libiscsi's iscsi-perf drives them in turns -- tgt, hatarget, tgt,
# hatarget, ... -- so that whatever else the machine is doing hits both about
# equally.  Each figure is the median of BENCH_ROUNDS runs.  iperf3 (and
# sockperf, if present) measure what loopback TCP itself can do, as ceilings.
#
# Environment:
#   BENCH_ROUNDS=3      runs per workload and target (median is reported)
#   BENCH_SECONDS=10    length of one iscsi-perf run
#   BENCH_ENFORCE=0     1: exit non-zero when a floor fails (default: report
#                       only, since load from other work moves the numbers)
#   BENCH_OUT=/tmp      where bench-result.md (and a CPU profile) are written
#   BENCH_DIR=/var/tmp/hatarget-bench   cache for the 1 GiB backing file
#   BENCH_PROFILE=1     if hatarget has --debug-addr, take one extra CPU
#                       profile of the 4 KiB QD32 workload (0 disables)
#   BENCH_TGT_TUNED=0   1: run tgtd with glibc malloc tuned so its per-command
#                       data buffers stay on the heap.  Stock tgtd mmaps and
#                       unmaps every buffer of 128 KiB or more, and on VMs
#                       where page faults are dear that, not the protocol,
#                       caps its large reads.  Default: tgt as shipped.
#   HATARGET_BIN        binary to test (default: bin/hatarget of this repo)
#
# Usage: make bench   (or: BENCH_SECONDS=5 BENCH_ROUNDS=1 test/bench/bench.sh)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HATARGET=${HATARGET_BIN:-$REPO/bin/hatarget}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ENFORCE=${BENCH_ENFORCE:-0}
BENCH_OUT=${BENCH_OUT:-/tmp}
BENCH_DIR=${BENCH_DIR:-/var/tmp/hatarget-bench}
BENCH_PROFILE=${BENCH_PROFILE:-1}
BENCH_TGT_TUNED=${BENCH_TGT_TUNED:-0}

IQN=iqn.2025-01.io.hatarget:bench
DISK=$BENCH_DIR/disk.img
DISK_BYTES=$((1024 * 1024 * 1024))
TGTD_SOCKET_DIR=/var/run/tgtd     # tgtd's control socket is socket.<port> here
RSS_FLOOR_MIB=256

# LUN numbers.  tgt reserves LUN 0 for its controller, so its disks are 1 and 2.
declare -A LUN=([hatarget:file]=0 [hatarget:null]=1 [tgt:file]=1 [tgt:null]=2)

# The workloads: id | label | backing | queue depth | KiB per I/O | rand/seq |
# metric reported (iops or MB/s) | floor as a hatarget/tgt ratio ("-" = none).
WORKLOADS=(
	"file-rand4k-qd32|fileio 4 KiB random read QD32|file|32|4|rand|iops|1.5"
	"file-seq128k-qd8|fileio 128 KiB sequential read QD8|file|8|128|seq|mbps|1.5"
	"file-rand4k-qd1|fileio 4 KiB random read QD1|file|1|4|rand|iops|1.0"
	"null-rand4k-qd32|nullio 4 KiB random read QD32|null|32|4|rand|iops|-"
	"null-seq128k-qd8|nullio 128 KiB sequential read QD8|null|8|128|seq|mbps|-"
	"null-rand4k-qd1|nullio 4 KiB random read QD1|null|1|4|rand|iops|-"
)
# hatarget's 128 KiB sequential read must also reach this share of iperf3.
SEQ_IPERF_WORKLOAD=file-seq128k-qd8
SEQ_IPERF_FLOOR=0.60

# ---------------------------------------------------------------- plumbing

BENCH_NAME=bench
source "$REPO/test/bench/lib.sh"

PIDS=()            # every background process this script started
TGTD_CTL=""        # our tgtd's control port, once it is started
WORK=""            # scratch directory: configs, logs, raw tool output

# cleanup stops everything we started (and only that, by PID), removes our
# tgtd's control socket files, and keeps the logs if the run failed.
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	if [[ -n $TGTD_CTL ]]; then
		# tgtd ignores SIGTERM; asking it over its control port is the clean way.
		tgtadm -C "$TGTD_CTL" --mode target --op delete --force --tid 1 >/dev/null 2>&1 || true
		tgtadm -C "$TGTD_CTL" --mode system --op delete >/dev/null 2>&1 || true
	fi
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n $TGTD_CTL ]]; then
		rm -f "$TGTD_SOCKET_DIR/socket.$TGTD_CTL" "$TGTD_SOCKET_DIR/socket.$TGTD_CTL.lock"
	fi
	if [[ -n $WORK && -d $WORK ]]; then
		if ((rc == 0)); then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD...: runs CMD in the background from $WORK (so nothing
# lands in the caller's directory) and sets STARTED_PID.  It gets a session of
# its own, so a Ctrl-C reaches the script and its foreground client but not
# the servers: those are stopped by cleanup, after the client has finished.
start() {
	local name=$1 logf=$2
	shift 2
	(cd "$WORK" && exec setsid "$@") >"$logf" 2>&1 &
	STARTED_PID=$!
	PIDS+=("$STARTED_PID")
	log "started $name (pid $STARTED_PID): $*"
}

USED_PORTS=" "
# free_port VAR: a random loopback TCP port nobody listens on, distinct from
# the ones this script already picked.
free_port() {
	local p
	for _ in $(seq 500); do
		p=$((20000 + RANDOM % 40000))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if [[ -z $(ss -Htln "sport = :$p") ]]; then
			USED_PORTS+="$p "
			printf -v "$1" '%s' "$p"
			return
		fi
	done
	die "no free TCP port found"
}

# wait_listen PORT PID NAME LOG: until something listens on 127.0.0.1:PORT;
# fails early if PID died.
wait_listen() {
	local port=$1 pid=$2 name=$3 logf=$4
	for _ in $(seq 100); do
		[[ -n $(ss -Htln "sport = :$port") ]] && return
		kill -0 "$pid" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited at start-up"; }
		sleep 0.1
	done
	tail -20 "$logf" >&2
	die "$name is not listening on 127.0.0.1:$port after 10s"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

calc() { awk "BEGIN { printf \"%.6g\", ($1) }"; }     # calc 'EXPR' -> number
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; }

# ---------------------------------------------------------------- setup

# check_tools: the hard requirements, installed from Debian when we are root.
check_tools() {
	local -A pkg=([iscsi-perf]=libiscsi-bin [tgtd]=tgt [tgtadm]=tgt [iperf3]=iperf3 [ss]=iproute2 [setsid]=util-linux)
	local missing=() pkgs=() t
	for t in iscsi-perf tgtd tgtadm iperf3 ss setsid; do
		command -v "$t" >/dev/null || { missing+=("$t"); pkgs+=("${pkg[$t]}"); }
	done
	if ((${#missing[@]})) && ((EUID == 0)) && command -v apt-get >/dev/null; then
		mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
		log "missing ${missing[*]}: installing Debian packages ${pkgs[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
	fi
	local still=()
	for t in iscsi-perf tgtd tgtadm iperf3 ss setsid; do
		command -v "$t" >/dev/null || still+=("$t (Debian package ${pkg[$t]})")
	done
	if ((${#still[@]})); then
		printf '  missing: %s\n' "${still[@]}" >&2
		die "required tools missing; install them (as root: apt-get install -y tgt iperf3 libiscsi-bin)"
	fi
	if command -v sockperf >/dev/null; then HAVE_SOCKPERF=1; else
		HAVE_SOCKPERF=0
		log "sockperf not found (optional, Debian package sockperf): loopback latency ceiling skipped"
	fi
	[[ -x $HATARGET ]] || die "$HATARGET not found: run 'make build' (or set HATARGET_BIN)"
	CLK_TCK=$(getconf CLK_TCK)
	log "tools: $(command -v iscsi-perf) $(command -v tgtd) ($(tgtd -V 2>&1 | head -1)) $(iperf3 --version | head -1 | awk '{print $1, $2}')"
}

# prepare_disk: 1 GiB of random data (so no layer can shortcut zeroes or
# holes), made once and cached across runs, then read once so that both
# targets serve it from the page cache and the disk never matters.
prepare_disk() {
	mkdir -p "$BENCH_DIR"
	if [[ ! -f $DISK || $(stat -c %s "$DISK") -ne $DISK_BYTES ]]; then
		log "creating the 1 GiB backing file $DISK from /dev/urandom (once; cached for later runs)"
		dd if=/dev/urandom of="$DISK.tmp.$$" bs=1M count=1024 iflag=fullblock status=none
		mv -f "$DISK.tmp.$$" "$DISK"
	fi
	log "reading $DISK once into the page cache"
	dd if="$DISK" of=/dev/null bs=1M status=none
}

start_hatarget() {
	local extra=()
	free_port HT_PORT
	cat >"$WORK/hatarget.conf" <<-EOF
		HANDLER vdisk_fileio {
		    DEVICE disk0 {
		        filename $DISK
		        nv_cache 1
		    }
		}
		HANDLER vdisk_nullio {
		    DEVICE null0 {
		        size_mb 4096
		    }
		}
		TARGET_DRIVER iscsi {
		    enabled 1
		    TARGET $IQN {
		        LUN 0 disk0
		        LUN 1 null0
		        enabled 1
		    }
		}
	EOF
	# The profiler endpoint is only opened when this build has it; it costs
	# nothing until a profile is asked for.
	PPROF_PORT=""
	if ((BENCH_PROFILE)) && "$HATARGET" serve --help 2>&1 | grep -q -- '--debug-addr'; then
		free_port PPROF_PORT
		extra=(--debug-addr "127.0.0.1:$PPROF_PORT")
	fi
	start hatarget "$WORK/hatarget.log" "$HATARGET" serve --config "$WORK/hatarget.conf" \
		--listen "127.0.0.1:$HT_PORT" ${extra[@]+"${extra[@]}"}
	HT_PID=$STARTED_PID
	wait_listen "$HT_PORT" "$HT_PID" hatarget "$WORK/hatarget.log"
}

# start_tgtd: a private tgtd with its own control port, so that a system tgtd
# (or another test's) is never configured or disturbed by us.
start_tgtd() {
	local ctl=""
	free_port TGT_PORT
	# tgtd accepts control ports up to 32767.
	for _ in $(seq 500); do
		ctl=$((10000 + RANDOM % 22000))
		[[ -e $TGTD_SOCKET_DIR/socket.$ctl ]] || break
	done
	local env=()
	if [[ $BENCH_TGT_TUNED == 1 ]]; then
		env=(env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864)
	fi
	start tgtd "$WORK/tgtd.log" ${env[@]+"${env[@]}"} tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$TGT_PORT"
	TGT_PID=$STARTED_PID
	TGTD_CTL=$ctl
	wait_listen "$TGT_PORT" "$TGT_PID" tgtd "$WORK/tgtd.log"
	# Make sure the control socket we are about to configure is our tgtd's.
	for _ in $(seq 50); do
		ss -Hxlp | grep -q "socket.$ctl .*pid=$TGT_PID," && break
		sleep 0.1
	done
	ss -Hxlp | grep -q "socket.$ctl .*pid=$TGT_PID," || die "tgtd control socket $ctl is not ours"
	tgtadm_ new target --tid 1 -T "$IQN"
	tgtadm_ new logicalunit --tid 1 --lun "${LUN[tgt:file]}" -b "$DISK"
	tgtadm_ new logicalunit --tid 1 --lun "${LUN[tgt:null]}" --bstype null -b /dev/null
	tgtadm_ bind target --tid 1 --initiator-address ALL
}
tgtadm_() {
	local op=$1 mode=$2
	shift 2
	tgtadm -C "$TGTD_CTL" --lld iscsi --op "$op" --mode "$mode" "$@" ||
		die "tgtadm --op $op --mode $mode $* failed"
}

# ---------------------------------------------------------------- ceilings

# measure_iperf3: loopback TCP bandwidth, one stream, as the ceiling that a
# single iSCSI connection could at best reach.  It runs before and after the
# workloads; other load on the machine can only lower it, so the higher of the
# two is the ceiling (and the stricter one for the floor).
IPERF_BPS=0
IPERF_RUNS=()
measure_iperf3() {
	local port bps
	free_port port
	start "iperf3 server" "$WORK/iperf3-server.log" iperf3 -s -1 -p "$port"
	wait_listen "$port" "$STARTED_PID" "iperf3 -s" "$WORK/iperf3-server.log"
	iperf3 -c 127.0.0.1 -p "$port" -t 5 -J >"$WORK/iperf3.json" || die "iperf3 client failed"
	# sum_received: what actually arrived, in bits per second.
	bps=$(awk '/"sum_received"/ {r = 1} r && /"bits_per_second"/ {gsub(/[^0-9.]/, "", $2); print $2; exit}' "$WORK/iperf3.json")
	[[ -n $bps ]] || die "could not parse iperf3 output ($WORK/iperf3.json)"
	IPERF_RUNS+=("$(fmt "$(calc "$bps / 8 / 1e9")" '%.2f')")
	IPERF_BPS=$(calc "$bps > $IPERF_BPS ? $bps : $IPERF_BPS")
	IPERF_GBS=$(calc "$IPERF_BPS / 8 / 1e9")
	log "iperf3 loopback: $(fmt "$(calc "$bps / 8 / 1e9")" '%.2f') GB/s ($(fmt "$(calc "$bps / 1e9")" '%.1f') Gbit/s)"
}

# measure_sockperf: TCP ping-pong latency.  sockperf reports half the round
# trip; the RTT is twice that.
measure_sockperf() {
	SOCKPERF_RTT=""
	((HAVE_SOCKPERF)) || return 0
	local port
	free_port port
	start "sockperf server" "$WORK/sockperf-server.log" sockperf sr --tcp -i 127.0.0.1 -p "$port"
	wait_listen "$port" "$STARTED_PID" "sockperf sr" "$WORK/sockperf-server.log"
	sockperf pp --tcp -i 127.0.0.1 -p "$port" -t 5 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/sockperf.txt" ||
		die "sockperf client failed"
	local half p50
	half=$(awk '/Summary: Latency is/ {print $(NF - 1)}' "$WORK/sockperf.txt")
	p50=$(awk '/percentile 50.000/ {print $NF}' "$WORK/sockperf.txt")
	[[ -n $half ]] || die "could not parse sockperf output ($WORK/sockperf.txt)"
	SOCKPERF_RTT=$(calc "2 * $half")
	SOCKPERF_RTT_P50=$(calc "2 * ${p50:-0}")
	log "sockperf loopback TCP round trip: avg $(fmt "$SOCKPERF_RTT" '%.1f') µs, median $(fmt "$SOCKPERF_RTT_P50" '%.1f') µs"
}

# ---------------------------------------------------------------- workloads

declare -A BLOCK_SIZE  # "who:backing" -> logical block size the LUN reports
declare -A SAMPLES     # "id:who" -> IOPS of each run
declare -A CPU_SAMPLES # "id:who" -> CPU µs per I/O of each run

url() { echo "iscsi://127.0.0.1:$([[ $1 == tgt ]] && echo "$TGT_PORT" || echo "$HT_PORT")/$IQN/${LUN[$1:$2]}"; }
pid_of() { [[ $1 == tgt ]] && echo "$TGT_PID" || echo "$HT_PID"; }

# warm_up WHO BACKING: a short run that also learns the LUN's block size.
# iscsi-perf's -b counts logical blocks of the LUN (READ CAPACITY's block
# length), not bytes or KiB, so the I/O size must be derived from it.
warm_up() {
	local who=$1 backing=$2 out=$WORK/warmup.txt
	timeout --foreground -k 5 60 iscsi-perf -m 8 -b 8 -r -t 2 "$(url "$who" "$backing")" 2>&1 | tr '\r' '\n' >"$out" ||
		{ tail -5 "$out" >&2; die "warm-up against $who $backing LUN failed"; }
	local bs
	bs=$(awk '/^capacity is/ { if ($3 > 0) print $6 / $3 }' "$out")
	[[ $bs =~ ^[0-9]+$ ]] || { cat "$out" >&2; die "no capacity line from iscsi-perf against $who"; }
	BLOCK_SIZE[$who:$backing]=$bs
	log "warm-up $who $backing LUN ${LUN[$who:$backing]}: block size $bs, $(awk '/^iops average/ {v = $3} END {print v}' "$out") IOPS"
}

# run_once WORKLOAD WHO: one iscsi-perf run; records IOPS and the target's
# CPU per I/O (its utime+stime over the run, divided by the I/Os done).
run_once() {
	local id label backing qd kib mode metric floor
	IFS='|' read -r id label backing qd kib mode metric floor <<<"$1"
	local who=$2 pid bytes blocks out=$WORK/perf-$id-$2.txt
	pid=$(pid_of "$who")
	bytes=$((kib * 1024))
	blocks=$((bytes / ${BLOCK_SIZE[$who:$backing]}))
	local args=(-m "$qd" -b "$blocks" -t "$BENCH_SECONDS")
	[[ $mode == rand ]] && args+=(-r)

	local t0 t1 rc=0
	t0=$(cpu_ticks "$pid")
	# iscsi-perf redraws its progress line with \r; one line per update is
	# easier to read and parse.  On SIGTERM it waits for its outstanding
	# requests, which never come back from a dead target: hence -k.
	timeout --foreground -k 5 $((BENCH_SECONDS + 60)) iscsi-perf "${args[@]}" "$(url "$who" "$backing")" 2>&1 |
		tr '\r' '\n' >"$out" || rc=$?
	t1=$(cpu_ticks "$pid")
	if ((rc != 0)); then
		tail -5 "$out" >&2
		die "iscsi-perf $id against $who failed (exit $rc)"
	fi

	# Check that the I/O size is what we meant, from iscsi-perf's own words.
	grep -qiE "transfer size of $blocks blocks \($bytes byte\)" "$out" ||
		{ grep -i 'transfer size' "$out" >&2; die "iscsi-perf did not use $bytes-byte I/Os"; }
	local iops
	iops=$(awk '/^iops average/ {v = $3} END {print v}' "$out")
	[[ $iops =~ ^[0-9]+$ && $iops -gt 0 ]] || { tail -5 "$out" >&2; die "no 'iops average' from iscsi-perf $id against $who"; }

	local cpu_us
	cpu_us=$(calc "($t1 - $t0) / $CLK_TCK * 1e6 / ($iops * $BENCH_SECONDS)")
	SAMPLES[$id:$who]+="$iops "
	CPU_SAMPLES[$id:$who]+="$cpu_us "
	local shown
	if [[ $metric == mbps ]]; then shown="$(fmt "$(calc "$iops * $bytes / 1e6")" '%.0f') MB/s"; else shown="$iops IOPS"; fi
	log "  $(printf '%-8s' "$who") $(printf '%-34s' "$label") $(printf '%12s' "$shown")   CPU $(fmt "$cpu_us" '%.1f') µs/IO"
}

run_workloads() {
	local round w
	for round in $(seq "$BENCH_ROUNDS"); do
		log "round $round/$BENCH_ROUNDS (${BENCH_SECONDS}s per run, load average $(cut -d' ' -f1-3 /proc/loadavg))"
		for w in "${WORKLOADS[@]}"; do
			# tgt then hatarget, back to back, so both see the same machine.
			run_once "$w" tgt
			run_once "$w" hatarget
		done
	done
}

# ---------------------------------------------------------------- hatarget only

# profile_hatarget: one extra, unscored 4 KiB QD32 random-read run while
# hatarget's own profiler records 10 seconds of CPU, when the build has one.
profile_hatarget() {
	PROFILE_FILE=""
	if ((!BENCH_PROFILE)); then return 0; fi
	[[ -n $PPROF_PORT ]] || {
		log "hatarget has no --debug-addr (pprof): CPU profile skipped"
		return 0
	}
	command -v curl >/dev/null || { log "curl not found: CPU profile skipped"; return 0; }
	local secs=10 out=$WORK/perf-profile.txt
	log "profiling hatarget for ${secs}s under 4 KiB random read QD32 (extra run, not scored)"
	timeout -k 5 $((secs + 60)) iscsi-perf -m 32 -b $((4096 / ${BLOCK_SIZE[hatarget:file]})) -r -t $((secs + 2)) \
		"$(url hatarget file)" >"$out" 2>&1 &
	local perf_pid=$!
	PIDS+=("$perf_pid")
	sleep 1
	PROFILE_FILE=$BENCH_OUT/hatarget-cpu.pprof
	if ! curl -fsS -o "$PROFILE_FILE" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=$secs"; then
		log "fetching the CPU profile failed: skipped"
		PROFILE_FILE=""
	fi
	wait "$perf_pid" || true
	[[ -n $PROFILE_FILE ]] || return 0
	log "CPU profile written to $PROFILE_FILE"
	if command -v go >/dev/null; then
		go tool pprof -top -nodecount=25 "$PROFILE_FILE" 2>/dev/null >"$BENCH_OUT/hatarget-cpu-top.txt" || true
		sed -n '1,35p' "$BENCH_OUT/hatarget-cpu-top.txt"
	fi
}

# rss_check: many sessions at once against hatarget, sampling its resident
# memory every second.  Needs the `hatarget bench` load generator; without it
# the check is reported as skipped, never guessed.
rss_check() {
	RSS_PEAK_MIB=""
	if ! "$HATARGET" bench --help >/dev/null 2>&1; then
		log "hatarget bench not available: RSS check skipped"
		return 0
	fi
	local cmd=("$HATARGET" bench --portal "127.0.0.1:$HT_PORT" --target "$IQN" --lun "${LUN[hatarget:file]}"
		--pattern randread --bs 4k --qd 32 --sessions 64 --duration 15s)
	log "RSS check: ${cmd[*]}"
	local before peak rss
	before=$(rss_kib "$HT_PID")
	peak=$before
	timeout -k 5 120 "${cmd[@]}" >"$WORK/hatarget-bench.txt" 2>&1 &
	local bench_pid=$! rc=0
	PIDS+=("$bench_pid")
	while kill -0 "$bench_pid" 2>/dev/null; do
		rss=$(rss_kib "$HT_PID" 2>/dev/null) || die "hatarget died during the RSS check"
		((rss > peak)) && peak=$rss
		sleep 1
	done
	wait "$bench_pid" || rc=$?
	log "hatarget bench output:"
	sed 's/^/    /' "$WORK/hatarget-bench.txt"
	((rc == 0)) || die "hatarget bench failed (exit $rc)"
	RSS_PEAK_MIB=$(calc "$peak / 1024")
	log "hatarget VmRSS: $(fmt "$(calc "$before / 1024")" '%.0f') MiB before, peak $(fmt "$RSS_PEAK_MIB" '%.0f') MiB during the run (VmHWM since start: $(awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$HT_PID/status") MiB)"
}

# ---------------------------------------------------------------- report

FAILS=0
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@"; }
# verdict VALUE OP FLOOR -> PASS/FAIL.  It runs in $(...), so failures are
# counted afterwards from the table itself.
verdict() {
	if awk -v v="$1" -v f="$3" -v op="$2" 'BEGIN { exit !(op == ">=" ? v >= f : v < f) }'; then echo PASS; else echo FAIL; fi
}

report() {
	local w id label backing qd kib mode metric floor
	local t h ratio unit tv hv
	{
		echo "## hatarget speed benchmark"
		echo
		echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), hatarget $(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "Medians of $BENCH_ROUNDS run(s) of ${BENCH_SECONDS}s, tgt and hatarget alternating; iscsi-perf, one session; page-cached 1 GiB file."
		echo "tgt: $(tgtd -V 2>&1 | head -1)$([[ $BENCH_TGT_TUNED == 1 ]] && echo ', malloc tuned (BENCH_TGT_TUNED=1)' || echo ', as shipped')."
		echo
		row workload tgt hatarget ratio floor verdict
		row --- ---: ---: ---: --- ---
		for w in "${WORKLOADS[@]}"; do
			IFS='|' read -r id label backing qd kib mode metric floor <<<"$w"
			t=$(median "${SAMPLES[$id:tgt]}")
			h=$(median "${SAMPLES[$id:hatarget]}")
			if [[ $metric == mbps ]]; then
				t=$(calc "$t * $kib * 1024 / 1e6")
				h=$(calc "$h * $kib * 1024 / 1e6")
				unit="MB/s"
			else unit="IOPS"; fi
			ratio=$(calc "$h / $t")
			if [[ $floor == - ]]; then
				row "$label ($unit)" "$(fmt "$t" '%.0f')" "$(fmt "$h" '%.0f')" "$(fmt "$ratio" '%.2fx')" - -
			else
				row "$label ($unit)" "$(fmt "$t" '%.0f')" "$(fmt "$h" '%.0f')" "$(fmt "$ratio" '%.2fx')" \
					">= ${floor}x tgt" "$(verdict "$ratio" '>=' "$floor")"
			fi
			if [[ $id == "$SEQ_IPERF_WORKLOAD" ]]; then
				local share
				share=$(calc "$h / ($IPERF_BPS / 8 / 1e6)")
				row "$label vs iperf3 (MB/s)" "iperf3 $(fmt "$(calc "$IPERF_BPS / 8 / 1e6")" '%.0f')" "$(fmt "$h" '%.0f')" \
					"$(fmt "$(calc "$share * 100")" '%.0f%%')" ">= $(fmt "$(calc "$SEQ_IPERF_FLOOR * 100")" '%.0f')% of iperf3" \
					"$(verdict "$share" '>=' "$SEQ_IPERF_FLOOR")"
			fi
		done
		for w in "${WORKLOADS[@]}"; do
			IFS='|' read -r id label backing qd kib mode metric floor <<<"$w"
			tv=$(median "${CPU_SAMPLES[$id:tgt]}")
			hv=$(median "${CPU_SAMPLES[$id:hatarget]}")
			row "CPU µs/IO, $label" "$(fmt "$tv" '%.1f')" "$(fmt "$hv" '%.1f')" "$(fmt "$(calc "$hv / $tv")" '%.2fx')" - -
		done
		if [[ -n $RSS_PEAK_MIB ]]; then
			row "hatarget peak VmRSS, 64 sessions x QD32 4 KiB randread (MiB)" - "$(fmt "$RSS_PEAK_MIB" '%.0f')" - \
				"< $RSS_FLOOR_MIB MiB" "$(verdict "$RSS_PEAK_MIB" '<' "$RSS_FLOOR_MIB")"
		else
			row "hatarget peak VmRSS, 64 sessions x QD32 (MiB)" - "not measured" - "< $RSS_FLOOR_MIB MiB" "SKIPPED (no hatarget bench)"
		fi
		row "ceiling: iperf3 loopback, 1 TCP stream, best of ${IPERF_RUNS[*]} (GB/s)" "$(fmt "$IPERF_GBS" '%.2f')" - - - -
		if [[ -n $SOCKPERF_RTT ]]; then
			row "ceiling: sockperf TCP round trip, avg / median (µs)" \
				"$(fmt "$SOCKPERF_RTT" '%.1f') / $(fmt "$SOCKPERF_RTT_P50" '%.1f')" - - - -
		fi
		echo
		echo "ratio = hatarget / tgt (for CPU µs/IO lower is better). MB/s = 10^6 bytes/s."
		echo
		echo "Samples (IOPS per run, tgt ; hatarget):"
		for w in "${WORKLOADS[@]}"; do
			IFS='|' read -r id label _ <<<"$w"
			echo "- $label: ${SAMPLES[$id:tgt]% }; ${SAMPLES[$id:hatarget]% }"
		done
	} >"$WORK/result.md"
	FAILS=$(grep -c '| FAIL |$' "$WORK/result.md" || true)
	cp "$WORK/result.md" "$BENCH_OUT/bench-result.md"
	echo
	cat "$WORK/result.md"
	echo
	log "table written to $BENCH_OUT/bench-result.md"
}

# ---------------------------------------------------------------- main

main() {
	[[ $BENCH_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
	[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
	mkdir -p "$BENCH_OUT"
	WORK=$(mktemp -d "$BENCH_OUT/hatarget-bench.XXXXXX")
	log "hatarget benchmark: $BENCH_ROUNDS round(s) x ${BENCH_SECONDS}s, binary $HATARGET, load average $(cut -d' ' -f1-3 /proc/loadavg)"

	check_tools
	prepare_disk
	measure_iperf3
	measure_sockperf
	start_hatarget
	start_tgtd
	log "hatarget on 127.0.0.1:$HT_PORT (pid $HT_PID), tgtd on 127.0.0.1:$TGT_PORT (pid $TGT_PID, control port $TGTD_CTL)"

	local who backing
	for who in tgt hatarget; do
		for backing in file null; do warm_up "$who" "$backing"; done
	done
	run_workloads
	measure_iperf3
	rss_check
	profile_hatarget
	report

	if ((FAILS)); then
		if [[ $BENCH_ENFORCE == 1 ]]; then die "$FAILS floor(s) failed"; fi
		log "$FAILS floor(s) failed (not enforced; set BENCH_ENFORCE=1 to fail the run)"
	else
		log "all floors met"
	fi
}

main "$@"
