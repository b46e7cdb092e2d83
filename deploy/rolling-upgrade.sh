#!/usr/bin/env bash
# Rolling upgrade of a hatarget cluster whose nodes run the systemd unit
# (deploy/upgrade.md describes the procedure this script follows).
#
#   deploy/rolling-upgrade.sh (--deb FILE | --binary FILE) [options] HOST...
#
# HOST is what ssh takes ([USER@]HOST), one per node, every node of the
# cluster. The hatarget commands run on the hosts themselves, so nothing but
# ssh and jq is needed here. Each HOST without USER@ is also how the first
# host reaches the management API (HOST:API-PORT, or --addr), and is matched
# to its node by the node's name or API address in `cluster status`; from
# then on each host's commands use its node's own API address.
#
# Before anything changes it checks every host (ssh works, the unit is
# active, its ExecStart binary). Then, one host at a time in the order of
# `hatarget cluster upgrade plan` (the Raft leader last, asked again before
# each host):
#
#   safety check: every node healthy, stopping this one not refused
#   copy the package or binary to the host (a mktemp file there), check it
#   hatarget node drain NODE --wait
#   safety check: the node is idle and stopping it is safe
#   systemctl stop hatarget
#   install: dpkg -i (--deb) or install -m 0755 to the unit's ExecStart
#     path (--binary); systemctl daemon-reload
#   systemctl start --no-block hatarget; wait until the unit is active
#   wait until cluster status shows the node healthy, on the new release
#   hatarget node undrain NODE --wait
#   hatarget cluster status
#
# It stops at the first step that fails, saying which host and step, and
# in what state it leaves the cluster; it never forces a drain and never
# rolls back by itself. Finalizing (`cluster upgrade finalize`) is left to
# the operator unless --finalize is given.
#
# Options:
#   --deb FILE        Debian package to install (dpkg -i)
#   --binary FILE     hatarget binary to install at the unit's ExecStart path
#   --ssh CMD         ssh command, split on spaces (default: $HATARGET_SSH or ssh),
#                     e.g. --ssh 'ssh -l admin -o BatchMode=yes'
#   --sudo            run systemctl, journalctl, dpkg and install with sudo -n
#                     on the hosts (reading the unit's state needs none)
#   --api-port PORT   management API port of the nodes (default 9260)
#   --addr HOST:PORT  API the first host asks first (default: first HOST:API-PORT)
#   --ctl PATH        the hatarget the hosts run for the control commands
#                     (default: hatarget in their PATH); it must have
#                     `cluster upgrade plan` and `node drain --wait`, which
#                     v0.1.0 has not: see deploy/upgrade.md
#   --token TOKEN     API token (default: $HATARGET_TOKEN, better: not in this
#                     shell's history); sent to the hosts on ssh's stdin,
#                     never on a remote command line
#   --timeout D       bound of each wait: drain, start, health, undrain; e.g.
#                     90s, 30m, 1h30m (default 30m)
#   --finalize        run `hatarget cluster upgrade finalize` at the end
#   --dry-run         ask the cluster (plan, status, systemctl show) and run
#                     the safety checks before each drain, but only print the
#                     commands that would change anything
#   -h, --help        this text
#
# Environment: HATARGET_SSH, HATARGET_TOKEN as above;
# HATARGET_UPGRADE_INTERVAL, seconds between checks while waiting (default 2).
# Exit status: 0 done, 1 a step failed, 2 usage.
set -euo pipefail

prog=${0##*/}
unit=hatarget

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die_usage() {
	printf '%s: %s (see --help)\n' "$prog" "$*" >&2
	exit 2
}

deb="" binary="" sudo=false dry_run=false finalize=false
ssh_cmd=${HATARGET_SSH:-ssh}
token=${HATARGET_TOKEN:-}
api_port=9260 first_addr="" timeout=30m ctl_bin=hatarget
interval=${HATARGET_UPGRADE_INTERVAL:-2}
hosts=()

while (($#)); do
	opt=$1
	case $opt in
	--*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
	--deb | --binary | --ssh | --api-port | --addr | --token | --timeout | --ctl)
		(($# >= 2)) || die_usage "$opt needs a value"
		case $opt in
		--deb) deb=$2 ;;
		--binary) binary=$2 ;;
		--ssh) ssh_cmd=$2 ;;
		--api-port) api_port=$2 ;;
		--addr) first_addr=$2 ;;
		--token) token=$2 ;;
		--timeout) timeout=$2 ;;
		--ctl) ctl_bin=$2 ;;
		esac
		shift 2 ;;
	--sudo) sudo=true; shift ;;
	--finalize) finalize=true; shift ;;
	--dry-run) dry_run=true; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; hosts+=("$@"); break ;;
	-*) die_usage "unknown option $opt" ;;
	*) hosts+=("$opt"); shift ;;
	esac
done

# seconds D: a duration like 90, 90s, 30m, 1h30m in seconds.
seconds() {
	local d=$1 total=0 n u
	[[ $d =~ ^[0-9]+$ ]] && d+=s
	[[ $d =~ ^([0-9]+[hms])+$ ]] || return 1
	while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
		n=$((10#${BASH_REMATCH[1]})) u=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
		case $u in h) total=$((total + n * 3600)) ;; m) total=$((total + n * 60)) ;; s) total=$((total + n)) ;; esac
	done
	((total > 0)) || return 1
	echo "$total"
}

((${#hosts[@]})) || die_usage "no HOST given"
[[ -n $deb || -n $binary ]] || die_usage "give the release to install: --deb FILE or --binary FILE"
[[ -z $deb || -z $binary ]] || die_usage "--deb and --binary exclude each other"
release_file=${deb:-$binary}
[[ -f $release_file && -r $release_file ]] || die_usage "cannot read $release_file"
[[ $api_port =~ ^[0-9]+$ ]] || die_usage "--api-port $api_port is not a port number"
timeout_s=$(seconds "$timeout") || die_usage "--timeout $timeout: want a duration like 90s, 30m or 1h30m"
[[ $interval =~ ^[0-9]+(\.[0-9]+)?$ ]] || die_usage "HATARGET_UPGRADE_INTERVAL=$interval is not a number of seconds"
read -r -a ssh <<<"$ssh_cmd"
((${#ssh[@]})) || die_usage "--ssh is empty"
command -v "${ssh[0]}" >/dev/null || die_usage "${ssh[0]} not found"
command -v jq >/dev/null || die_usage "jq not found (apt-get install jq)"
root=()
if $sudo; then root=(sudo -n); fi

# Progress goes to stdout, each line with the time (UTC).
log() { TZ=UTC printf '%(%Y-%m-%dT%H:%M:%SZ)T %s\n' -1 "$*"; }

# quote WORD...: the words as one command line for the remote shell, in
# $cmdline (a variable rather than output: no subshell for each command).
quote() {
	printf -v cmdline '%q ' "$@"
	cmdline=${cmdline% }
}

# remote HOST CMD...: runs CMD on HOST, without stdin.
remote() {
	local host=$1
	shift
	local cmdline
	quote "$@"
	"${ssh[@]}" "$host" "$cmdline" </dev/null
}

# ctl HOST ARG...: hatarget ARG... (--ctl) on HOST; the token, if any, goes on
# stdin into HATARGET_TOKEN, so that no process list shows it.
ctl() {
	local host=$1
	shift
	local cmdline
	if [[ -n $token ]]; then
		quote "$ctl_bin" "$@"
		"${ssh[@]}" "$host" "read -r HATARGET_TOKEN && export HATARGET_TOKEN && $cmdline" <<<"$token"
	else
		remote "$host" "$ctl_bin" "$@"
	fi
}

# change ctl|remote HOST CMD...: a step that changes something: with
# --dry-run it is printed, not run.
change() {
	local how=$1 host=$2 cmdline
	shift 2
	if $dry_run; then
		[[ $how == ctl ]] && set -- "$ctl_bin" "$@"
		quote "$@"
		log "[$host] would run: $ssh_cmd $host $cmdline"
		return 0
	fi
	"$how" "$host" "$@"
}

# State for the report when a step fails.
started=false step="" host="" node="" remote_file=""
upgraded=() remaining=()
declare -A node_of=() addr_of=() exec_of=()

fail() {
	TZ=UTC printf '%(%Y-%m-%dT%H:%M:%SZ)T %s: %s\n' -1 "$prog" "$*" >&2
	exit 1
}

# where_left: what the failed step leaves the current node in.
where_left() {
	case $step in
	"preflight" | "plan") echo "nothing was changed by this step" ;;
	"copy" | "safety check before drain") echo "unchanged: still runs the old release, not drained" ;;
	"drain" | "safety check before stop")
		echo "may be drained (some LUNs moved away) and still runs the old release; it serves all the same." \
			"To put it back: hatarget node undrain $node --wait" ;;
	"stop") echo "drained; its agent may be stopped or stopping (systemctl status $unit)." \
		"Start it again (systemctl start $unit), then hatarget node undrain $node --wait" ;;
	"install") echo "drained and stopped; the new release may be partly installed." \
		"Install either release, systemctl start $unit, then hatarget node undrain $node --wait" ;;
	"start" | "wait healthy") echo "drained, new release installed, agent started but not (yet) healthy on it:" \
		"systemctl status $unit; journalctl -u $unit. Once it is: hatarget node undrain $node --wait" ;;
	"undrain") echo "runs the new release; it may still be drained or catching up, or its copies resyncing:" \
		"hatarget node undrain $node --wait" ;;
	"status") echo "upgraded (only printing the cluster status failed)" ;;
	"finalize") echo "every host upgraded; the cluster is NOT finalized: hatarget cluster upgrade finalize" ;;
	*) echo "unknown (step $step)" ;;
	esac
}

on_exit() {
	local rc=$?
	[[ -z ${tmp:-} ]] || rm -rf "$tmp"
	((rc != 0)) && $started || return "$rc"
	if [[ -n $remote_file ]] && ! $dry_run; then
		remote "$host" rm -f "$remote_file" || true
	fi
	{
		echo
		if [[ -n $host ]]; then
			echo "FAILED on host $host (node $node), step: $step"
			echo "  $host: $(where_left)"
		else
			echo "FAILED at step: $step"
		fi
		if ((${#upgraded[@]})); then
			echo "  upgraded: ${upgraded[*]}"
		fi
		local h rest=()
		for h in "${remaining[@]}"; do [[ $h == "$host" ]] || rest+=("$h"); done
		if ((${#rest[@]})); then
			echo "  not touched: ${rest[*]}"
		fi
		if ((${#upgraded[@]})) || [[ -n $host && $step != "copy" && $step != safety* && $step != plan ]]; then
			echo "  Until the upgrade is finalized, any node can go back to the release it ran."
			echo "  Finish the upgrade (run this again with the hosts not upgraded) or roll the upgraded"
			echo "  ones back with the old release (deploy/upgrade.md). Where it stands:"
			echo "    hatarget cluster upgrade status; hatarget cluster status"
		fi
		if $dry_run; then echo "  (dry run: nothing was changed)"; fi
	} >&2
	return "$rc"
}
trap on_exit EXIT
tmp=$(mktemp -d)

declare -A seen=()
for h in "${hosts[@]}"; do
	[[ -z ${seen[$h]:-} ]] || die_usage "host $h is given twice"
	seen[$h]=1
done

# --- Preflight: read only. -------------------------------------------------
started=true step=preflight
remaining=("${hosts[@]}")

first=${hosts[0]}
first_addr=${first_addr:-${first#*@}:$api_port}
log "asking the cluster through $first (API $first_addr)"
status_json=$(ctl "$first" cluster status -o json --addr "$first_addr") ||
	fail "cannot read the cluster status on $first through $first_addr (give the API with --addr HOST:PORT?)"

# Each host's node: the one whose API address is HOST:API-PORT, or whose
# name is HOST or its first label. Three lines per host (host, node, API
# address), then the names of all nodes, the nodes with their addresses,
# and the active cluster version.
map=$(jq -r --arg port "$api_port" '
	.nodes as $nodes
	| ($ARGS.positional[] | . as $h | sub("^.*@"; "") as $hp
		| first($nodes[] | select(.address == "\($hp):\($port)" or .name == $hp or .name == ($hp | sub("\\..*"; ""))))
			// {} | $h, (.name // ""), (.address // "")),
	([$nodes[].name] | join(", ")),
	($nodes | map("\(.name) (\(.address))") | join(", ")),
	(.cluster_version // 1)' --args "${hosts[@]}" <<<"$status_json") ||
	fail "cannot read the cluster status: $status_json"
mapfile -t map <<<"$map"
declare -A host_of=()
for ((i = 0; i < 3 * ${#hosts[@]}; i += 3)); do
	h=${map[i]} n=${map[i + 1]}
	[[ -n $n ]] || fail "no node of the cluster has the name or API address of host $h; the nodes are: ${map[-2]}"
	[[ -z ${host_of[$n]:-} ]] || fail "hosts ${host_of[$n]} and $h are both node $n"
	node_of[$h]=$n host_of[$n]=$h addr_of[$h]=${map[i + 2]}
done
cluster_version=${map[-1]}
missing=""
for n in ${map[-3]//,/ }; do
	[[ -n ${host_of[$n]:-} ]] || missing+="${missing:+, }$n"
done
if [[ -n $missing ]]; then
	$finalize && fail "--finalize needs every node, and no HOST is node $missing"
	log "WARNING: no HOST is node $missing: it keeps its release, and the cluster cannot be finalized until it is upgraded"
fi

for h in "${hosts[@]}"; do
	props=$(remote "$h" systemctl show -p ActiveState -p ExecStart "$unit") || fail "on $h, systemctl show $unit failed"
	[[ $props =~ ActiveState=([a-z-]+) ]] || fail "on $h, no ActiveState for $unit in: $props"
	[[ ${BASH_REMATCH[1]} == active ]] ||
		fail "on $h, $unit.service is ${BASH_REMATCH[1]}, not active: start it, or upgrade this node by hand"
	[[ $props =~ ExecStart=.*path=([^[:space:]\;]+) ]] || fail "on $h, no ExecStart path for $unit in: $props"
	exec_of[$h]=${BASH_REMATCH[1]}
	log "[$h] node ${node_of[$h]}, API ${addr_of[$h]}, $unit active, binary ${exec_of[$h]}"
done
ctl "$first" cluster upgrade plan --addr "${addr_of[$first]}" ||
	fail "cannot read the upgrade plan on $first (a hatarget without it, v0.1.0? see --ctl)"
$dry_run && log "dry run: commands that would change anything are printed, not run"

# --- One host at a time. ---------------------------------------------------

# wait_until DESCRIPTION FUNCTION: calls FUNCTION until it succeeds, for at
# most --timeout.
wait_until() {
	local what=$1 fn=$2 deadline=$((SECONDS + timeout_s))
	: >"$tmp/err"
	while ! "$fn"; do
		if ((SECONDS >= deadline)); then
			[[ ! -s $tmp/err ]] || what+=" (last error: $(tr '\n' ' ' <"$tmp/err"))"
			fail "[$host] timed out after $timeout waiting for $what"
		fi
		sleep "$interval"
	done
}

# unit_active: whether the unit is active; a unit that failed, or whose
# agent exited and waits to be restarted (Restart=on-failure: systemctl
# is-active says "activating" all along), fails the step at once, with the
# agent's last log lines. An older release on a finalized data dir exits so.
unit_active() {
	local props
	props=$(remote "$host" systemctl show -p ActiveState -p SubState "$unit") || return 1
	[[ $props =~ ActiveState=active ]] && return 0
	if [[ $props =~ ActiveState=failed || $props =~ SubState=auto-restart ]]; then
		remote "$host" "${root[@]}" journalctl -u "$unit" -n 20 --no-pager >&2 || true
		fail "[$host] the agent exits at start ($(tr '\n' ' ' <<<"$props")); its log is above"
	fi
	return 1
}

new_release=""
node_healthy() {
	local out
	unit_active >/dev/null || true # fails the step if the agent exits
	out=$(ctl "$host" cluster status -o json --addr "${addr_of[$host]}" 2>"$tmp/err") || return 1
	out=$(jq -r --arg n "$node" '.nodes[] | select(.name == $n) | "\(.healthy) \(.version)"' <<<"$out")
	[[ $out == "true $new_release" ]]
}

# next_node PLAN NODE...: from `upgrade plan -o json`, the first of the
# NODEs in the plan's order and the safety check before draining it, one
# line each: its name, the nodes not healthy, why it must not be stopped
# ("" if it may), what draining it will do, and why the cluster cannot say
# ("" if it can: a v0.1.0 leader has no stop-safety check).
next_node() {
	local plan=$1
	shift
	jq -r 'first(.nodes[] | select(.name | IN($ARGS.positional[]))) as $n
		| $n.name,
		([.nodes[] | select(.healthy | not) | .name] | join(", ")),
		(if $n.safety.blocked then "stopping it would make a LUN unavailable or cost the quorum: " + ($n.safety.reasons // [] | join("; "))
		else "" end),
		($n.safety.pending // [] | join("; ")),
		(if $n.safety == null then $n.safety_error // "no answer" else "" end)' --args "$@" <<<"$plan"
}

# check_drain NOT-HEALTHY REFUSAL PENDING UNKNOWN: the safety check before
# the drain. (Trailing empty ones may be missing: $(...) drops the last
# newlines.) When the cluster cannot say, `node drain --wait` of a release
# that checks by itself (v0.1.0 leaders) decides, and an older one fails.
check_drain() {
	[[ -z ${1:-} ]] || fail "[$host] safety check: not healthy: $1; every node must be healthy before $node is stopped (hatarget cluster status)"
	[[ -z ${2:-} ]] || fail "[$host] safety check: $node: $2"
	if [[ -n ${4:-} ]]; then
		log "[$host] safety check: the cluster cannot say whether $node can be stopped ($4); node drain --wait checks"
	else
		log "[$host] safety check: $node may be drained${3:+ (then: $3)}"
	fi
}

# check_stop: the safety check before the stop, from a fresh plan. When
# the answering node cannot say (v0.1.0), the drain --wait that just
# returned has checked the same by itself.
check_stop() {
	local plan why
	plan=$(ctl "$host" cluster upgrade plan -o json --addr "${addr_of[$host]}") ||
		fail "[$host] cannot read the upgrade plan"
	why=$(jq -r --arg n "$node" '.nodes[] | select(.name == $n)
		| if .safety == null then "unknown: " + (.safety_error // "no answer")
		elif .safety.safe and .safety.idle then "ok"
		else (.safety.reasons // []) + (.safety.pending // []) | join("; ") end' <<<"$plan")
	case $why in
	ok) log "[$host] safety check: $node is idle and can be stopped" ;;
	unknown:*) log "[$host] safety check: the cluster cannot say (${why#unknown: }); node drain --wait said $node can be stopped" ;;
	*) fail "[$host] safety check: $node cannot be stopped now: ${why:-it is not in the upgrade plan}" ;;
	esac
}

# version_of BIN [COMMAND]: after COMMAND, the output of BIN version -o json
# on $host, or of BIN version for a release without -o json (v0.1.0).
version_of() {
	local cmdline
	quote "$1"
	"${ssh[@]}" "$host" "${2:+$2; }$cmdline version -o json 2>/dev/null || $cmdline version" </dev/null
}

# release_of OUTPUT: from version_of, the release in REPLY (JSON, a stable
# format in docs/api.md: its first string "version", as the protocol
# table's versions are numbers; text: "hatarget RELEASE ...") and in
# cluster_max the highest cluster version it supports (1 without a
# "cluster" channel). No jq: a process less. Fails the step when the
# cluster runs at a higher version: finalized, it cannot go back.
release_of() {
	if [[ $1 =~ \"version\":\ *\"([^\"]+)\" || $1 =~ hatarget\ ([^ ,]+) ]]; then
		REPLY=${BASH_REMATCH[1]}
	else
		return 1
	fi
	cluster_max=1
	if [[ $1 =~ \"channel\":\ *\"cluster\",[[:space:]]*\"version\":\ *([0-9]+) ]]; then
		cluster_max=${BASH_REMATCH[1]}
	fi
	((cluster_max >= cluster_version)) ||
		fail "[$host] hatarget $REPLY supports cluster versions up to $cluster_max, and the cluster runs at" \
			"$cluster_version: it was finalized, and that release can no longer run on its data dirs"
}

# copy_release: the package or binary into a mktemp file on the host,
# checked there before the node is touched.
copy_release() {
	local info cmdline
	if $dry_run; then
		log "[$host] would copy $release_file to a temporary file there and check it"
		remote_file=/tmp/hatarget-upgrade.XXXXXX
		return
	fi
	# shellcheck disable=SC2016 # expanded by the remote shell
	remote_file=$("${ssh[@]}" "$host" 'f=$(mktemp -t hatarget-upgrade.XXXXXX) && cat >"$f" && printf %s "$f"' <"$release_file") ||
		fail "[$host] copying $release_file failed"
	if [[ -n $deb ]]; then
		# Its control fields, then the version of the binary it holds,
		# unpacked into a temporary directory.
		quote "$remote_file"
		info=$("${ssh[@]}" "$host" "dpkg-deb --field $cmdline Package Version Architecture &&
			d=\$(mktemp -d -t hatarget-upgrade.XXXXXX) && dpkg-deb -x $cmdline \"\$d\" &&
			{ \"\$d/usr/bin/hatarget\" version -o json 2>/dev/null || \"\$d/usr/bin/hatarget\" version; }
			r=\$?; rm -rf \"\$d\"; exit \$r" </dev/null) ||
			fail "[$host] $release_file is not a Debian package whose hatarget runs there: $info"
		[[ $info =~ (^|$'\n')Package:\ hatarget($'\n'|$) ]] || fail "[$host] $release_file is not the hatarget package: $info"
		[[ $info =~ Version:\ ([^$'\n']+) ]] || fail "[$host] $release_file has no Version: $info"
		local debver=${BASH_REMATCH[1]}
		release_of "$info" || fail "[$host] the hatarget in $release_file says no release: $info"
		log "[$host] copied $release_file: package $debver, hatarget $REPLY"
	else
		quote "$remote_file"
		if ! { info=$(version_of "$remote_file" "chmod 0755 $cmdline") && release_of "$info"; }; then
			fail "[$host] $release_file does not run there (wrong architecture?): $info"
		fi
		info=$REPLY
		log "[$host] copied $release_file: hatarget $info"
	fi
}

install_release() {
	if [[ -n $deb ]]; then
		change remote "$host" "${root[@]}" dpkg --force-confdef --force-confold -i "$remote_file" ||
			fail "[$host] dpkg -i failed"
	else
		change remote "$host" "${root[@]}" install -m 0755 "$remote_file" "${exec_of[$host]}" ||
			fail "[$host] installing ${exec_of[$host]} failed"
	fi
	change remote "$host" "${root[@]}" systemctl daemon-reload || fail "[$host] systemctl daemon-reload failed"
	if ! $dry_run; then
		local cmdline
		quote "$remote_file"
		if ! { new_release=$(version_of "${exec_of[$host]}" "rm -f $cmdline") && release_of "$new_release"; }; then
			fail "[$host] the installed ${exec_of[$host]} does not run: $new_release"
		fi
		new_release=$REPLY
		remote_file=""
		log "[$host] installed hatarget $new_release"
	fi
}

# upgrade_host NOT-HEALTHY REFUSAL PENDING UNKNOWN: every step on $host,
# given the safety check of next_node.
upgrade_host() {
	local t="${timeout_s}s"
	log "[$host] upgrading node $node"
	step="safety check before drain"
	check_drain "$@"
	step=copy
	copy_release
	step=drain
	log "[$host] draining $node"
	change ctl "$host" node drain "$node" --wait --timeout "$t" --addr "${addr_of[$host]}" || fail "[$host] node drain $node failed"
	step="safety check before stop"
	if $dry_run; then log "[$host] would check that $node is idle and can be stopped"; else check_stop; fi
	step=stop
	log "[$host] stopping $unit"
	change remote "$host" "${root[@]}" systemctl stop "$unit" || fail "[$host] systemctl stop $unit failed"
	step=install
	install_release
	step=start
	log "[$host] starting $unit"
	change remote "$host" "${root[@]}" systemctl start --no-block "$unit" || fail "[$host] systemctl start $unit failed"
	if ! $dry_run; then
		wait_until "$unit.service active" unit_active
		step="wait healthy"
		log "[$host] waiting for $node to be healthy on $new_release"
		wait_until "$node healthy on release $new_release" node_healthy
	fi
	step=undrain
	log "[$host] undraining $node"
	change ctl "$host" node undrain "$node" --wait --timeout "$t" --addr "${addr_of[$host]}" || fail "[$host] node undrain $node failed"
	step=status
	if ! $dry_run; then ctl "$host" cluster status --addr "${addr_of[$host]}" || fail "[$host] cluster status failed"; fi
	if $dry_run; then log "[$host] dry run: done with node $node"; else log "[$host] done: node $node upgraded"; fi
}

last=""
while ((${#remaining[@]})); do
	host="" node="" step=plan
	asker=${remaining[0]}
	plan=$(ctl "$asker" cluster upgrade plan -o json --addr "${addr_of[$asker]}") ||
		fail "cannot read the upgrade plan on $asker (a hatarget without it, v0.1.0? see --ctl)"
	left=()
	for h in "${remaining[@]}"; do left+=("${node_of[$h]}"); done
	next=$(next_node "$plan" "${left[@]}") || fail "cannot read the upgrade plan: $plan"
	mapfile -t next <<<"$next"
	[[ -n ${next[0]} ]] || fail "the upgrade plan names none of the nodes left: ${left[*]}"
	node=${next[0]} host=${host_of[${next[0]}]}
	upgrade_host "${next[@]:1}"
	upgraded+=("$host")
	rest=()
	for h in "${remaining[@]}"; do [[ $h == "$host" ]] || rest+=("$h"); done
	remaining=("${rest[@]}")
	last=$host
done

host="" node="" step=finalize
if $dry_run; then log "dry run: every host done, nothing changed"; else log "every host is upgraded"; fi
ctl "$last" cluster upgrade status --addr "${addr_of[$last]}" || true
if $finalize; then
	log "finalizing"
	change ctl "$last" cluster upgrade finalize --addr "${addr_of[$last]}" || fail "cluster upgrade finalize failed"
else
	log "not finalized: any node can still go back to the old release. Once sure of the new one:"
	log "  hatarget cluster upgrade finalize --addr ${addr_of[$last]}"
fi
log "LUN ownership is where the drains left it: hatarget cluster rebalance --dry-run, then hatarget cluster rebalance"
