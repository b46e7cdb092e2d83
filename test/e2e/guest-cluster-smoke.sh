#!/bin/bash
# guest-cluster-smoke.sh — runs INSIDE the vm-initiator guest, driven by
# test/e2e/cluster-multipath.sh on the host (run.sh -j JOBDIR ...).
#
#   guest-cluster-smoke.sh PORTAL NPATHS DATA_MB FO_SECS
#
# Phase 1 runs the tool's own examples/multipath-smoke.sh, unmodified (the host
# copies it to JOBDIR/multipath-smoke.sh = /job/multipath-smoke.sh), with
# SMOKE_LOGOUT=0 so the sessions and the map stay: discovery through one portal,
# login to every portal found, one dm-multipath map with NPATHS paths, dd and fio
# verify through the map. Then it records what the initiator saw of the portal
# group tags and of ALUA (INQUIRY TPGS, REPORT TARGET PORT GROUPS, multipathd's
# prio and hardware handler) without changing anything.
#
# ALUA (phase 1): the LUN's owner (E2E_OWNER_PORTAL, from the host's API) must be
# alone in the active path group with prio 50 (active/optimized), the other paths
# in a lower group with prio 10 (active/non-optimized), and every phase 1 write
# must have gone to the owner's path.
#
# Phase 2 (owner failure): fio random writes with crc32c verify (verify_backlog, so
# data is read back during the outage too) on the map for FO_SECS seconds. The
# guest marks io-running (JOBDIR/out/marks/io-running); the host kill -9s the
# LUN's owner and creates JOBDIR/killed (the victim's portal address), then
# JOBDIR/newowner (the new owner's portal, once the API shows it), restarts the
# victim later and creates JOBDIR/restarted, then JOBDIR/owner_now (the owner after
# the restart). The guest measures when the old owner's path fails, the longest I/O
# pause, when the new owner's path becomes active/optimized (prio 50, active
# group), that from then on writes go to it only, that the old owner's path comes
# back active/ready as non-optimized (prio 10, not the active group) and that it
# carries no writes unless ownership moved back to it.
#
# Phase 2 with E2E_SCENARIO=rolling (a rolling upgrade's restarts): the same fio
# for FO_SECS seconds while the host drains, stops, restarts and undrains every
# node in turn (JOBDIR/rolling names the step under way, JOBDIR/rolled lists
# them once all are done); fio must verify every block, all of it must happen
# while fio runs, and every path must be active/ready at the end.
#
# Output for the host: lines "E2E key=value" (measurements) and
# "CHECK PASS|FAIL text" (one per check). Exit 0 only if every check passed.
# env: E2E_SCENARIO (kill, the default, or rolling),
#      E2E_RECOVERY_TMO (iSCSI replacement timeout for phase 2, default 5 s),
#      E2E_RETURN_WAIT (how long to wait for the path after the restart, default 90 s)
set -u
PORTAL=${1:-10.77.0.1:3260}
NPATHS=${2:-3}
MB=${3:-32}
FO_SECS=${4:-45}
RTMO=${E2E_RECOVERY_TMO:-5}
RETURN_WAIT=${E2E_RETURN_WAIT:-90}
OWNER_PORTAL=${E2E_OWNER_PORTAL:-}
. /usr/local/lib/vmi/vmi-lib.sh

NFAIL=0
: >/tmp/summary
kv() { echo "E2E $1=$2" | tee -a /tmp/summary; }
check() { # check RC TEXT: RC 0 = pass
  local v=PASS; [ "$1" = 0 ] || { v=FAIL; NFAIL=$((NFAIL+1)); }
  echo "CHECK $v $2" | tee -a /tmp/summary
}
hdr() { echo; echo "######## $*"; }
now() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}'; }
finish() {
  hdr "guest summary"
  cat /tmp/summary
  echo "guest checks failed: $NFAIL"
  [ "$NFAIL" = 0 ]; exit $?
}

# iscsid and multipathd log to syslog: keep it (busybox syslogd) for the report
busybox syslogd -O /tmp/syslog 2>/dev/null || echo "(no syslogd: iscsid/multipathd messages are lost)"

# ---------------------------------------------------------------- phase 1
hdr "phase 1: examples/multipath-smoke.sh $PORTAL $NPATHS $MB (SMOKE_LOGOUT=0)"
if [ ! -f /job/multipath-smoke.sh ]; then
  check 1 "phase 1: /job/multipath-smoke.sh present (the host copies it)"; vmi_mark phase2-skip; finish
fi
SMOKE_LOGOUT=0 bash /job/multipath-smoke.sh "$PORTAL" "$NPATHS" "$MB" >/tmp/smoke.out 2>&1
SRC=$?
cat /tmp/smoke.out
kv smoke_rc "$SRC"
check "$SRC" "phase 1: multipath-smoke.sh $PORTAL $NPATHS $MB -> $(grep -o 'RESULT: .*' /tmp/smoke.out | tail -1)"

hdr "phase 1: what discovery and login produced"
# SendTargets records as printed by iscsiadm: "10.77.0.1:3260,1 iqn..."
grep -E '^[0-9.]+:[0-9]+,[0-9]+ ' /tmp/smoke.out | sort -u >/tmp/disc
ndisc=$(cut -d' ' -f1 /tmp/disc | cut -d, -f1 | sort -u | wc -l)
ntags=$(cut -d' ' -f1 /tmp/disc | cut -d, -f2 | sort -u | wc -l)
kv discovered "$(cut -d' ' -f1 /tmp/disc | sort | tr '\n' ' ' | sed 's/ $//')"
kv discovered_portals "$ndisc"
kv discovered_tags "$(cut -d' ' -f1 /tmp/disc | cut -d, -f2 | sort -n | tr '\n' ',' | sed 's/,$//')"
[ "$ndisc" = "$NPATHS" ] && [ "$ntags" = "$NPATHS" ]
check $? "phase 1: SendTargets through $PORTAL lists $ndisc portals with $ntags distinct tags (want $NPATHS)"

# per session: portal, portal group tag the session runs with (open-iscsi refuses a login
# whose TargetPortalGroupTag differs from the discovered one), state, sd device
sd_of_session() { local s=$1 d; for d in /sys/class/iscsi_session/$s/device/target*/*/block/*; do [ -e "$d" ] && basename "$d"; done; }
portal_of_sd() { # sdX -> 10.77.0.N
  local s; s=$(readlink -f /sys/block/$1/device | grep -o 'session[0-9]*' | head -1)
  cat /sys/class/iscsi_connection/connection${s#session}:0/persistent_address 2>/dev/null
}
nsess_ok=0
printf '  %-9s %-16s %-5s %-10s %s\n' session portal tpgt state disk
for s in /sys/class/iscsi_session/session*; do
  [ -e "$s" ] || continue; s=${s##*/}
  sid=${s#session}
  addr=$(cat /sys/class/iscsi_connection/connection$sid:0/persistent_address 2>/dev/null)
  tpgt=$(cat /sys/class/iscsi_session/$s/tpgt 2>/dev/null)
  st=$(cat /sys/class/iscsi_session/$s/state 2>/dev/null)
  printf '  %-9s %-16s %-5s %-10s %s\n' "$s" "$addr" "$tpgt" "$st" "$(sd_of_session "$s" | tr '\n' ' ')"
  exp=$(grep "^$addr:" /tmp/disc | head -1 | cut -d' ' -f1 | cut -d, -f2)
  [ "$st" = LOGGED_IN ] && [ -n "$exp" ] && [ "$tpgt" = "$exp" ] && nsess_ok=$((nsess_ok+1))
done
kv sessions_logged_in "$nsess_ok"
[ "$nsess_ok" = "$NPATHS" ]
check $? "phase 1: $nsess_ok sessions LOGGED_IN, each with its portal's discovered tag (want $NPATHS)"

MAP=$(multipathd show maps raw format "%n" 2>/dev/null | head -1)
nmaps=$(multipathd show maps raw format "%n" 2>/dev/null | grep -c .)
# active_paths: how many paths of $MAP are active and ready
active_paths() { multipathd show paths raw format "%m %t %T" | awk -v m="$MAP" '$1==m && $2=="active" && $3=="ready"' | wc -l; }
act=0
[ -n "$MAP" ] && act=$(active_paths)
kv maps "$nmaps"; kv map "${MAP:-none}"; kv map_active_paths "$act"
[ "$nmaps" = 1 ] && [ "$act" = "$NPATHS" ]
check $? "phase 1: $nmaps multipath map(s), ${MAP:-none} with $act active+ready paths (want 1 map, $NPATHS paths)"
grep -q '^dd pattern verify: OK' /tmp/smoke.out; check $? "phase 1: dd ${MB} MiB pattern write+readback through the map"
grep -q '^fio verify: OK' /tmp/smoke.out; check $? "phase 1: fio ${MB} MiB randwrite crc32c verify through the map"
kv dd "$(grep -o '^dd pattern verify: .*' /tmp/smoke.out | head -1)"
kv fio "$(grep -o '^fio verify: .*' /tmp/smoke.out | head -1)"
kv paths_with_writes "$(grep -o 'paths that carried writes: .*' /tmp/smoke.out | sed 's/.*: //')"

hdr "phase 1: ALUA as the initiator sees it"
SDS=$(vmi_iscsi_sds | sort | tr '\n' ' ')
for d in $SDS; do
  echo "-- $d ($(portal_of_sd $d)): dh_state=$(cat /sys/block/$d/device/dh_state 2>/dev/null)" \
       "access_state=$(cat /sys/block/$d/device/access_state 2>/dev/null || echo n/a)"
  sg_inq /dev/$d 2>&1 | grep -iE 'TPGS|Vendor|Product' | sed 's/^/   /'
  sg_rtpg -d /dev/$d 2>&1 | sed 's/^/   rtpg: /' | head -12
done
hw=$(multipath -ll 2>/dev/null | grep -o "hwhandler='[^']*'" | head -1)
kv hwhandler "${hw#hwhandler=}"
kv path_prios "$(multipathd show paths raw format "%d:%p" 2>/dev/null | tr '\n' ' ')"
kv path_groups "$(multipath -ll 2>/dev/null | grep -c 'policy=')"
echo "-- multipathd show paths:"; multipathd show paths format "%d %i %m %p %t %T %o %s" 2>/dev/null | sed 's/^/   /'
echo "-- multipath -d -v3 (prio / hardware handler lines):"
multipath -d -v3 2>&1 | grep -iE 'alua|prio|tpg|hwhandler|hardware' | sort -u | head -25 | sed 's/^/   /'
echo "-- multipath -ll:"; multipath -ll 2>&1 | sed 's/^/   /'

# topo: one line per path from multipathd's topology (same layout as multipath -ll):
# "sd group_prio group_status path_prio dm_state checker_state"
topo() {
  multipathd show maps topology 2>/dev/null | awk '
    /policy=/ { gp=gs="?"; for (i=1;i<=NF;i++) { if ($i ~ /^prio=/) gp=substr($i,6); if ($i ~ /^status=/) gs=substr($i,8) } }
    { for (i=1;i<=NF;i++) if ($i ~ /^sd[a-z]+$/ && $(i+1) ~ /^[0-9]+:[0-9]+$/) print $i, gp, gs, "-", $(i+2), $(i+3) }' |
  while read -r d gp gs _ st ck; do echo "$d $gp $gs $(multipathd show paths raw format "%d %p" 2>/dev/null | awk -v d=$d '$1==d{print $2}') $st $ck"; done
}
topo_brief() { topo | awk '{printf "%s:%s:%s ", $1, $2, $3}'; }
sd_of_portal() { local d; for d in $SDS; do [ "$(portal_of_sd $d)" = "$1" ] && { echo $d; return; }; done; }
# is_optimized SD: SD is active with path prio 50 in the active prio-50 group, and no
# other usable path shares that group (a failed path keeps its last prio, so the dead
# old owner's path stays in the prio-50 group until it is reinstated and re-prioritized)
is_optimized() {
  topo | awk -v d=$1 '$1==d{k=$2" "$3; ok=($2==50 && $3=="active" && $4==50 && $5=="active")} $1!=d && $5=="active"{u[$2" "$3]++}
    END{exit !(ok && !u[k])}'
}
# is_nonoptimized SD: SD is in a prio-10 group that is not the active one, active/ready
is_nonoptimized() { topo | awk -v d=$1 '$1==d{f=($2==10 && $3!="active" && $5=="active" && $6=="ready")} END{exit !f}'; }

OSD=$( [ -n "$OWNER_PORTAL" ] && sd_of_portal "$OWNER_PORTAL")
topo >/tmp/topo1
echo "-- topology (sd group_prio group_status path_prio dm_state checker):"; sed 's/^/   /' /tmp/topo1
kv owner_sd "${OWNER_PORTAL:-?}/${OSD:-none}"
kv groups_phase1 "$(topo_brief)"
[ -n "$OSD" ] && is_optimized "$OSD" &&
  [ "$(awk -v d="$OSD" '$1==d{print $4}' /tmp/topo1)" = 50 ]
check $? "phase 1: the owner's path ${OWNER_PORTAL:-?}/${OSD:-none} is alone in the active path group, prio 50 (active/optimized) [$(topo_brief)]"
ok=0; nn=0
for d in $SDS; do
  [ "$d" = "$OSD" ] && continue
  nn=$((nn+1))
  is_nonoptimized "$d" && [ "$(awk -v d="$d" '$1==d{print $4}' /tmp/topo1)" = 10 ] || ok=1
done
[ -n "$OSD" ] && [ $ok = 0 ] && [ $nn = $((NPATHS-1)) ]
check $? "phase 1: the $nn other paths are active/ready in a lower-priority group with alua prio 10 (active/non-optimized)"
# writes during the smoke test's data I/O: its "before:"/"after:" lines (sdX:r=N,w=N).
# (each path shows one write before any data I/O: not counted here)
P1W=$(paste -d' ' <(grep -m1 '^before:' /tmp/smoke.out | tr ' ' '\n' | grep '^sd') <(grep -m1 '^after:' /tmp/smoke.out | tr ' ' '\n' | grep '^sd') |
  awk '{split($1,a,/[:=,]/); split($2,b,/[:=,]/); printf "%s:%d ", a[1], b[5]-a[5]}')
[ -n "$P1W" ] || P1W=$(for d in $SDS; do printf '%s:%s ' $d "$(awk '{print $5}' /sys/block/$d/stat)"; done)
kv phase1_writes_per_path "$P1W"
ok=0
for x in $P1W; do d=${x%%:*}; n=${x#*:}; if [ "$d" = "$OSD" ]; then [ "$n" -gt 0 ] || ok=1; else [ "$n" = 0 ] || ok=1; fi; done
[ -n "$OSD" ] && [ $ok = 0 ]
check $? "phase 1: writes went to the owner's path $OSD only ($P1W)"

if [ -z "$MAP" ] || [ "$act" -lt 2 ]; then
  echo "no usable map: skipping phase 2"; vmi_mark phase2-skip; finish
fi
DEV=/dev/mapper/$MAP

# ---------------------------------------------------------------- phase 2
# shared by both scenarios
wcount() { awk '{print $5}' /sys/block/$1/stat; }         # writes completed
counters() { for d in $SDS; do printf '%s:%s ' $d "$(wcount $d)"; done; }
pstate() { multipathd show paths raw format "%d %t %T" 2>/dev/null | awk -v d=$1 '$1==d{print $2"/"$3}'; }
# phase2_start: the sessions' replacement timeout, the clocks, the path sampler
phase2_start() {
  iscsiadm -m node -o update -n node.session.timeo.replacement_timeout -v "$RTMO" >/dev/null 2>&1
  for s in /sys/class/iscsi_session/session*; do echo "$RTMO" >"$s/recovery_tmo"; done
  echo "recovery_tmo per session: $(for s in /sys/class/iscsi_session/session*; do printf '%s=%s ' "${s##*/}" "$(cat $s/recovery_tmo)"; done)"
  kv recovery_tmo "$RTMO"
  echo "paths: $(for d in $SDS; do printf '%s=%s ' $d "$(portal_of_sd $d)"; done)"
  rm -f /tmp/ev.* /tmp/fo_*.log
  T0=$EPOCHREALTIME; read -r UP0 _ </proc/uptime; SYSLOG0=$(wc -l </tmp/syslog 2>/dev/null || echo 0)
  # sampler: path states and write counters every 0.5 s
  ( while :; do
      echo "t=$(now) $(multipathd show paths raw format "%d:%t/%T" 2>/dev/null | tr '\n' ' ')| writes $(counters)"
      sleep 0.5
    done ) >/tmp/paths.log 2>&1 &
  SAMPLER=$!
}
# start_fio NAME: random writes with crc32c verify (verify_backlog: data is read
# back while the nodes change too) for FO_SECS seconds, latency log /tmp/fo_lat.1.log
start_fio() {
  fio --name="$1" --filename="$DEV" --offset=128m --size=64m --rw=randwrite --bs=4k \
      --ioengine=libaio --iodepth=4 --direct=1 --time_based --runtime="$FO_SECS" \
      --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=512 \
      --write_lat_log=/tmp/fo --log_avg_msec=0 --log_unix_epoch=1 \
      --output-format=terse --terse-version=3 >/tmp/fo.out 2>/tmp/fo.err &
  FIO=$!
}
# fio_stats: from fio's latency log ("completion time (unix epoch ms), latency ns,
# dir (0 read, 1 write), bs, offset[, prio]") /tmp/lat: "t (s since T0, the clock of
# every other event) lat_ns dir"; the longest latency, the longest stretch without
# any completion, writes and verify reads; prints fio's own summary and the gaps
fio_stats() {
  awk -F', *' -v t0="$T0" '{printf "%.3f %s %s\n", $1/1000-t0, $2, $3}' /tmp/fo_lat.1.log 2>/dev/null | sort -n >/tmp/lat
  read -r MAXLAT MAXLAT_AT <<<"$(awk '$2>m {m=$2; at=$1} END{printf "%.2f %.2f", m/1e9, at}' /tmp/lat)"
  read -r GAP GAP_END <<<"$(awk 'NR>1 && $1-p>g {g=$1-p; e=$1} {p=$1} END{printf "%.2f %.2f", g, e}' /tmp/lat)"
  NW=$(awk '$3==1' /tmp/lat | wc -l); NR_=$(awk '$3==0' /tmp/lat | wc -l)
  echo "--- fio"
  grep -vE '^\s*$' /tmp/fo.err | head -10
  awk -F';' '{printf "fio: wrote %s KiB (%s IOPS avg), verify-read %s KiB, error %s\n", $47, $49, $6, $5}' /tmp/fo.out
  echo "completion gaps > 0.5 s (start -> end, t = s since phase 2 started fio):"
  awk 'NR>1 && $1-p>0.5 {printf "  %.2f -> %.2f (%.2f s)\n", p, $1, $1-p} {p=$1}' /tmp/lat
  kv fo_fio_rc "$FRC"
  kv fo_writes "$NW"; kv fo_verify_reads "$NR_"
  kv fo_iops "$(awk -F';' '{print $49}' /tmp/fo.out)"
  kv fo_max_latency "${MAXLAT}s@t=${MAXLAT_AT}"
  kv fo_longest_gap "${GAP}s(ending t=${GAP_END})"
}
fio_verified() { [ "$FRC" = 0 ] && ! grep -qiE 'verify.*(fail|mismatch|bad)|crc32c' /tmp/fo.err && [ "$NR_" -gt 0 ]; }
phase2_logs() {
  echo "--- kernel messages during phase 2 (t = seconds since fio start)"
  dmesg | awk -v u="$UP0" '{t=substr($0,2,index($0,"]")-2)+0} t>=u {printf "t=%6.2f %s\n", t-u, substr($0,index($0,"]")+2)}' |
    grep -vE 'Synchronizing SCSI cache|alua: Detached' | head -${1:-40}
  echo "--- iscsid / multipathd (syslog) during phase 2"
  tail -n +$((SYSLOG0+1)) /tmp/syslog 2>/dev/null | grep -E 'iscsid|multipathd' | grep -vE 'tur checker reports path is up|path sd. is up' | head -${1:-40}
  echo "--- multipath -ll after"; multipath -ll
  echo "--- iscsiadm -m session"; iscsiadm -m session
}
# final_paths_check WAIT: every path of the map active+ready within WAIT seconds
final_paths_check() {
  for _ in $(seq $((${1:-0} * 5))); do
    [ "$(active_paths)" = "$NPATHS" ] && break
    sleep 0.2
  done
  act=$(active_paths)
  kv final_active_paths "$act"
  [ "$act" = "$NPATHS" ]; check $? "phase 2: $MAP has $act active+ready paths at the end (want $NPATHS)"
}
teardown_and_finish() {
  hdr "teardown"
  multipath -F >/dev/null 2>&1
  iscsiadm -m node --logoutall=all >/dev/null 2>&1
  echo "logged out; sessions left: $(iscsiadm -m session 2>/dev/null | wc -l)"
  echo "--- dmesg (iSCSI / multipath / sd, last 40)"
  dmesg | grep -iE 'iscsi|connection|session|multipath|device-mapper|alua|sd [0-9]|reservation|tpg' | tail -40
  finish
}

# Rolling restart: the host drains, stops, restarts and undrains every node in
# turn (JOBDIR/rolling names the step under way, JOBDIR/rolled marks the end)
# while fio writes and verifies; I/O must carry on throughout and every path be
# back at the end.
if [ "${E2E_SCENARIO:-kill}" = rolling ]; then
  hdr "phase 2: rolling restart of every node under fio verify on $DEV (${FO_SECS}s, iSCSI replacement timeout ${RTMO}s)"
  phase2_start
  start_fio rolling
  sleep 2; vmi_mark io-running
  wait $FIO; FRC=$?
  echo "fio finished at t=$(now)s rc=$FRC"
  ROLLED=$( [ -e /job/rolled ] && echo yes || echo no)
  kill $SAMPLER 2>/dev/null
  echo "--- path states / write counters (t = seconds since fio start)"
  awk 'NR%2==1' /tmp/paths.log
  phase2_logs 60
  fio_stats
  kv rolled_before_fio_ended "$ROLLED"
  kv roll_steps "$(cat /job/rolled 2>/dev/null)"
  fio_verified
  check $? "phase 2: fio randwrite+crc32c verify through the rolling restart (rc $FRC, $NW writes, $NR_ verify reads; longest completion gap ${GAP}s)"
  [ "$ROLLED" = yes ]
  check $? "phase 2: the host restarted every node while fio ran ($(cat /job/rolled 2>/dev/null || cat /job/rolling 2>/dev/null || echo 'no step recorded'))"
  final_paths_check 60
  teardown_and_finish
fi

hdr "phase 2: node kill under fio verify on $DEV (${FO_SECS}s, iSCSI replacement timeout ${RTMO}s)"
phase2_start
# watcher: the host's marks and the victim path's transitions, polled every 0.1 s
( VSD=""
  while [ ! -e /job/killed ]; do sleep 0.1; done
  now >/tmp/ev.killed; counters >/tmp/ev.cnt_killed
  VICTIM=$(cat /job/killed)
  for d in $SDS; do [ "$(portal_of_sd $d)" = "$VICTIM" ] && VSD=$d; done
  echo "$VSD" >/tmp/ev.victim_sd
  while :; do
    [ -z "$VSD" ] && break
    case $(pstate $VSD) in failed/*|*/faulty|*/shaky) now >/tmp/ev.path_failed; break ;; esac
    [ -e /job/restarted ] && break
    sleep 0.1
  done
  while [ ! -e /job/restarted ]; do sleep 0.1; done
  now >/tmp/ev.restarted; counters >/tmp/ev.cnt_restarted
  while [ -n "$VSD" ]; do
    [ "$(pstate $VSD)" = active/ready ] && { now >/tmp/ev.path_back; counters >/tmp/ev.cnt_back; break; }
    sleep 0.1
  done ) >/tmp/watcher.log 2>&1 &
WATCHER=$!
# new-owner watcher: when the host names the new owner, wait until its path is
# active/optimized (alone in the active prio-50 group) as multipathd sees it
( while [ ! -e /job/newowner ]; do [ -e /job/restarted ] && exit 0; sleep 0.1; done
  now >/tmp/ev.newowner_seen
  NSD=$(sd_of_portal "$(cat /job/newowner)"); echo "$NSD" >/tmp/ev.new_sd
  while [ -n "$NSD" ] && [ ! -e /job/restarted ]; do
    if is_optimized "$NSD"; then now >/tmp/ev.regrouped; counters >/tmp/ev.cnt_regrouped; topo_brief >/tmp/ev.groups_regrouped; break; fi
    sleep 0.2
  done ) >/tmp/watcher2.log 2>&1 &
WATCHER2=$!

start_fio failover
sleep 2; vmi_mark io-running
wait $FIO; FRC=$?
echo "fio finished at t=$(now)s rc=$FRC"

# the path may come back after fio ended: give it RETURN_WAIT seconds after the restart
limit=$((EPOCHSECONDS + 120)) rs=   # the host restarts the node before fio ends; slack for a slow host
while kill -0 $WATCHER 2>/dev/null; do
  if [ -z "$rs" ] && [ -e /tmp/ev.restarted ]; then rs=$EPOCHSECONDS; limit=$((rs + RETURN_WAIT)); fi
  [ "$EPOCHSECONDS" -ge "$limit" ] && break
  sleep 0.2
done
kill $WATCHER $WATCHER2 2>/dev/null

VSD=$(cat /tmp/ev.victim_sd 2>/dev/null)
NSD=$(cat /tmp/ev.new_sd 2>/dev/null)
ev() { cat /tmp/ev.$1 2>/dev/null || echo "-"; }
# after the path is back: give multipathd a few checker rounds to settle its
# group (it must be non-optimized: prio 10, not the active group) ...
RSTATE=-; GROUPS_BACK=-
if [ -e /tmp/ev.path_back ] && [ -n "$VSD" ]; then
  for _ in $(seq 50); do is_nonoptimized "$VSD" && { RSTATE=nonoptimized; break; }; sleep 0.2; done
  [ "$RSTATE" = - ] && RSTATE="$(topo | awk -v d=$VSD '$1==d{print "group prio "$2" "$3", path prio "$4" "$5"/"$6}')"
  GROUPS_BACK=$(topo_brief)
fi
# ... then a short burst: which paths carry the writes now? the restored path only if
# ownership moved back to it (the host writes the owner after the restart to /job/owner_now)
for _ in $(seq 50); do [ -e /job/owner_now ] && break; sleep 0.2; done
OWNER_NOW=$(cat /job/owner_now 2>/dev/null)
back_writes=- BURSTW=-
if [ -e /tmp/ev.path_back ] && [ -n "$VSD" ]; then
  b=$(counters)
  fio --name=after --filename="$DEV" --offset=256m --size=16m --rw=randwrite --bs=4k --ioengine=libaio \
      --iodepth=8 --direct=1 --time_based --runtime=5 --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --output-format=terse --terse-version=3 >/tmp/after.out 2>/tmp/after.err
  ARC=$?
  BURSTW=$(paste -d' ' <(echo "$b" | tr ' ' '\n') <(counters | tr ' ' '\n') | awk -F'[: ]' 'NF>=4 {printf "%s+%d ", $1, $4-$2}')
  back_writes=$(echo "$BURSTW" | tr ' ' '\n' | awk -F+ -v d="$VSD" '$1==d{print $2}')
fi
kill $SAMPLER 2>/dev/null

echo "--- path states / write counters (t = seconds since fio start; the host's events below)"
awk 'NR%2==1' /tmp/paths.log
echo "--- events: killed(seen)=$(ev killed) victim=$(cat /job/killed 2>/dev/null) ($VSD) path_failed=$(ev path_failed)" \
     "newowner(seen)=$(ev newowner_seen) $(cat /job/newowner 2>/dev/null) ($NSD) regrouped=$(ev regrouped) [$(ev groups_regrouped)]" \
     "restarted(seen)=$(ev restarted) path_back=$(ev path_back) owner_now=$OWNER_NOW"
phase2_logs
fio_stats
tk=$(ev killed); tr_=$(ev restarted)
DOWNW=-
if [ "$tk" != - ] && [ "$tr_" != - ]; then
  DOWNW=$(awk -v a="$tk" -v b="$tr_" -v g="$GAP_END" '$3==1 && $1>a && $1>=g && $1<b' /tmp/lat | wc -l)
fi
WRREG=-
[ -e /tmp/ev.cnt_regrouped ] && [ -e /tmp/ev.cnt_restarted ] &&
  WRREG=$(paste -d' ' <(tr ' ' '\n' </tmp/ev.cnt_regrouped) <(tr ' ' '\n' </tmp/ev.cnt_restarted) |
    awk -F'[: ]' 'NF>=4 {printf "%s+%d ", $1, $4-$2}')
FIRSTW=-
[ "$tk" != - ] && FIRSTW=$(awk -v a="$tk" -v g="$GAP_END" '$3==1 && $1>a && $1>=g {printf "%.2fs", $1-a; exit}' /tmp/lat)
WRDOWN=$(paste -d' ' <(tr ' ' '\n' </tmp/ev.cnt_killed 2>/dev/null) <(tr ' ' '\n' </tmp/ev.cnt_restarted 2>/dev/null) |
  awk -F'[: ]' 'NF>=4 {printf "%s+%d ", $1, $4-$2}')
# the kernel's timestamps are exact (the watcher polls multipathd, slow on a busy TCG host):
# kt REGEX [AFTER] = first kernel message matching REGEX at t >= AFTER (t = s since fio start)
kt() { dmesg | awk -v u="$UP0" -v a="${2:-0}" -v re="$1" '{t=substr($0,2,index($0,"]")-2)-u} t>=a && $0 ~ re {printf "%.2f", t; exit}'; }
VDEV=; VSID=
if [ -n "$VSD" ]; then
  VDEV=$(cat /sys/block/$VSD/dev 2>/dev/null)
  VSID=$(readlink -f /sys/block/$VSD/device | grep -o 'session[0-9]*' | head -1); VSID=${VSID#session}
fi
K_DROP=$(kt "connection$VSID:0: detected conn error"); K_FAIL=$(kt "Failing path ${VDEV}[.]"); K_BACK=$(kt "Reinstating path ${VDEV}[.]" "${K_FAIL:-0}")
echo "kernel: victim connection dropped t=${K_DROP:--}, dm failed path $VDEV t=${K_FAIL:--}, reinstated t=${K_BACK:--}"
rel() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" != - ] && [ "$2" != - ] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}' || echo -; }
FAILED_AFTER=$(rel "$tk" "${K_FAIL:-$(ev path_failed)}")
BACK_AFTER=$(rel "$tr_" "${K_BACK:-$(ev path_back)}")
kv kill_seen_by_initiator "t=${K_DROP:--}(host mark seen t=$tk)"
kv path_failed_dm "t=${K_FAIL:--}"; kv path_reinstated_dm "t=${K_BACK:--}"
kv victim "$(cat /job/killed 2>/dev/null)/$VSD"
kv t_killed "$tk"; kv t_restarted "$tr_"
kv path_failed_after_kill "${FAILED_AFTER}s"
kv writes_while_down_after_pause "$DOWNW"
kv writes_per_path_while_down "$WRDOWN"
kv first_write_after_kill "$FIRSTW"
kv newowner_seen "t=$(ev newowner_seen)"
kv new_owner_sd "$(cat /job/newowner 2>/dev/null)/$NSD"
kv regrouped "t=$(ev regrouped)"
kv groups_after_failover "$(ev groups_regrouped)"
kv writes_per_path_after_regroup "$WRREG"
kv path_back_after_restart "${BACK_AFTER}s"
kv groups_after_restart "$GROUPS_BACK"
kv restored_path_state "$RSTATE"
kv owner_after_restart "$OWNER_NOW"
kv burst_writes_per_path "$BURSTW"
kv writes_on_restored_path "$back_writes"

fio_verified
check $? "phase 2: fio randwrite+crc32c verify across the kill (rc $FRC, $NW writes, $NR_ verify reads)"
[ -n "$VSD" ] && [ "$(cat /job/killed 2>/dev/null)" = "$OWNER_PORTAL" ]
check $? "phase 2: the victim $(cat /job/killed 2>/dev/null) is the owner's portal (${OWNER_PORTAL:-?}) and maps to one of the paths ($VSD)"
[ -n "$K_FAIL" ] || [ -e /tmp/ev.path_failed ]
check $? "phase 2: the victim's path went failed ($FAILED_AFTER s after the kill mark; dm-multipath t=${K_FAIL:--}, multipathd saw it t=$(ev path_failed))"
[ "$DOWNW" != - ] && [ "$DOWNW" -gt 0 ]
check $? "phase 2: I/O resumed while the old owner was down ($DOWNW writes completed after the pause; per path kill->restart: $WRDOWN)"
[ -n "$NSD" ] && [ "$NSD" != "$VSD" ] && [ -e /tmp/ev.regrouped ]
check $? "phase 2: the new owner's path $(cat /job/newowner 2>/dev/null)/${NSD:-none} became active/optimized (alone in the active prio-50 group) at t=$(ev regrouped) [$(ev groups_regrouped)]"
ok=1
if [ -n "$NSD" ] && [ "$WRREG" != - ] && awk -v g="$(ev regrouped)" -v r="$(ev restarted)" 'BEGIN{exit !(g >= r)}'; then
  # multipathd regrouped only once the old owner was back (its checker is
  # slow under TCG): the window is empty, and the 5 s burst after the
  # restart checks the same thing
  ok=0 WRREG="none: regrouped at t=$(ev regrouped), after the restart at t=$(ev restarted)"
elif [ -n "$NSD" ] && [ "$WRREG" != - ] && ! echo "$WRREG" | grep -qE '\+[1-9]' &&
  awk -v g="$(ev regrouped)" -v r="$(ev restarted)" 'BEGIN{exit !(r - g < 5)}'; then
  # a window shorter than the per-path write counters' sampling saw no
  # write at all: nothing to check there, and the 5 s burst after the
  # restart checks the same thing
  ok=0 WRREG="none sampled in the $(awk -v g="$(ev regrouped)" -v r="$(ev restarted)" 'BEGIN{printf "%.1f", r - g}') s from the regroup (t=$(ev regrouped)) to the restart"
elif [ -n "$NSD" ] && [ "$WRREG" != - ]; then
  ok=0
  for x in $WRREG; do d=${x%%+*}; n=${x#*+}; if [ "$d" = "$NSD" ]; then [ "$n" -gt 0 ] || ok=1; else [ "$n" = 0 ] || ok=1; fi; done
fi
[ $ok = 0 ]
check $? "phase 2: from the regroup until the restart writes went to the new owner's path $NSD only ($WRREG)"
[ -e /tmp/ev.path_back ]
check $? "phase 2: the old owner's path came back active/ready after the restart ($BACK_AFTER s; dm reinstated t=${K_BACK:--}, multipathd active/ready t=$(ev path_back))"
if [ -n "$OWNER_NOW" ] && [ "$OWNER_NOW" = "$(cat /job/killed 2>/dev/null)" ]; then
  # ownership moved back to the restarted node: its path must be optimized and carry the writes
  is_optimized "$VSD" && [ "$back_writes" != - ] && [ "$back_writes" -gt 0 ] && [ "${ARC:-1}" = 0 ]
  check $? "phase 2: ownership moved back to the restarted node: its path $VSD is active/optimized and carries the burst's writes ($BURSTW, rc ${ARC:--})"
else
  [ "$RSTATE" = nonoptimized ]
  check $? "phase 2: the restored path $VSD is in the non-optimized group (prio 10, not active): $RSTATE [$GROUPS_BACK]"
  ok=1
  if [ "$BURSTW" != - ] && [ -n "$NSD" ]; then
    ok=0
    for x in $BURSTW; do d=${x%%+*}; n=${x#*+}; if [ "$d" = "$NSD" ]; then [ "$n" -gt 0 ] || ok=1; else [ "$n" = 0 ] || ok=1; fi; done
  fi
  [ $ok = 0 ] && [ "${ARC:-1}" = 0 ]
  check $? "phase 2: the restored path carries no writes (owner still ${OWNER_NOW:-?}): 5 s fio verify burst per path $BURSTW, rc ${ARC:--}"
fi
final_paths_check
teardown_and_finish
