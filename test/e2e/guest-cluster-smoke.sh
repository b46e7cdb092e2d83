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
# Phase 2 (node failure): fio random writes with crc32c verify (verify_backlog, so
# data is read back during the outage too) on the map for FO_SECS seconds. The
# guest marks io-running (JOBDIR/out/marks/io-running); the host kill -9s one
# agent and creates JOBDIR/killed (holding the victim's portal address), restarts
# it later and creates JOBDIR/restarted. The guest measures when the victim's path
# fails, the longest I/O pause, the writes that completed on each path while the
# node was down, when the path comes back active/ready, and whether it carries I/O
# again.
#
# Output for the host: lines "E2E key=value" (measurements) and
# "CHECK PASS|FAIL text" (one per check). Exit 0 only if every check passed.
# env: E2E_RECOVERY_TMO (iSCSI replacement timeout for phase 2, default 5 s),
#      E2E_RETURN_WAIT (how long to wait for the path after the restart, default 90 s)
set -u
PORTAL=${1:-10.77.0.1:3260}
NPATHS=${2:-3}
MB=${3:-32}
FO_SECS=${4:-45}
RTMO=${E2E_RECOVERY_TMO:-5}
RETURN_WAIT=${E2E_RETURN_WAIT:-90}
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
act=0
[ -n "$MAP" ] && act=$(multipathd show paths raw format "%m %t %T" | awk -v m="$MAP" '$1==m && $2=="active" && $3=="ready"' | wc -l)
kv maps "$nmaps"; kv map "${MAP:-none}"; kv map_active_paths "$act"
[ "$nmaps" = 1 ] && [ "$act" = "$NPATHS" ]
check $? "phase 1: $nmaps multipath map(s), ${MAP:-none} with $act active+ready paths (want 1 map, $NPATHS paths)"
grep -q '^dd pattern verify: OK' /tmp/smoke.out; check $? "phase 1: dd ${MB} MiB pattern write+readback through the map"
grep -q '^fio verify: OK' /tmp/smoke.out; check $? "phase 1: fio ${MB} MiB randwrite crc32c verify through the map"
kv dd "$(grep -o '^dd pattern verify: .*' /tmp/smoke.out | head -1)"
kv fio "$(grep -o '^fio verify: .*' /tmp/smoke.out | head -1)"
kv paths_with_writes "$(grep -o 'paths that carried writes: .*' /tmp/smoke.out | sed 's/.*: //')"

hdr "phase 1: ALUA as the initiator sees it (informational; hatarget has no asymmetric states yet)"
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

if [ -z "$MAP" ] || [ "$act" -lt 2 ]; then
  echo "no usable map: skipping phase 2"; vmi_mark phase2-skip; finish
fi
DEV=/dev/mapper/$MAP

# ---------------------------------------------------------------- phase 2
hdr "phase 2: node kill under fio verify on $DEV (${FO_SECS}s, iSCSI replacement timeout ${RTMO}s)"
iscsiadm -m node -o update -n node.session.timeo.replacement_timeout -v "$RTMO" >/dev/null 2>&1
for s in /sys/class/iscsi_session/session*; do echo "$RTMO" >"$s/recovery_tmo"; done
echo "recovery_tmo per session: $(for s in /sys/class/iscsi_session/session*; do printf '%s=%s ' "${s##*/}" "$(cat $s/recovery_tmo)"; done)"
kv recovery_tmo "$RTMO"
echo "paths: $(for d in $SDS; do printf '%s=%s ' $d "$(portal_of_sd $d)"; done)"

wcount() { awk '{print $5}' /sys/block/$1/stat; }         # writes completed
counters() { for d in $SDS; do printf '%s:%s ' $d "$(wcount $d)"; done; }
pstate() { multipathd show paths raw format "%d %t %T" 2>/dev/null | awk -v d=$1 '$1==d{print $2"/"$3}'; }

rm -f /tmp/ev.* /tmp/fo_*.log
T0=$EPOCHREALTIME; read -r UP0 _ </proc/uptime; SYSLOG0=$(wc -l </tmp/syslog 2>/dev/null || echo 0)
# sampler: path states and write counters every 0.5 s
( while :; do
    echo "t=$(now) $(multipathd show paths raw format "%d:%t/%T" 2>/dev/null | tr '\n' ' ')| writes $(counters)"
    sleep 0.5
  done ) >/tmp/paths.log 2>&1 &
SAMPLER=$!
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

fio --name=failover --filename="$DEV" --offset=128m --size=64m --rw=randwrite --bs=4k \
    --ioengine=libaio --iodepth=4 --direct=1 --time_based --runtime="$FO_SECS" \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=512 \
    --write_lat_log=/tmp/fo --log_avg_msec=0 --log_unix_epoch=1 \
    --output-format=terse --terse-version=3 >/tmp/fo.out 2>/tmp/fo.err &
FIO=$!
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
kill $WATCHER 2>/dev/null

VSD=$(cat /tmp/ev.victim_sd 2>/dev/null)
ev() { cat /tmp/ev.$1 2>/dev/null || echo "-"; }
# after the path is back, a short burst: does the restored path carry writes again?
back_writes=-
if [ -e /tmp/ev.path_back ] && [ -n "$VSD" ]; then
  b=$(wcount "$VSD")
  fio --name=after --filename="$DEV" --offset=256m --size=16m --rw=randwrite --bs=4k --ioengine=libaio \
      --iodepth=8 --direct=1 --time_based --runtime=5 --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --output-format=terse --terse-version=3 >/tmp/after.out 2>/tmp/after.err
  ARC=$?
  back_writes=$(( $(wcount "$VSD") - b ))
fi
kill $SAMPLER 2>/dev/null

echo "--- path states / write counters (t = seconds since fio start; the host's events below)"
awk 'NR%2==1' /tmp/paths.log
echo "--- events: killed(seen)=$(ev killed) victim=$(cat /job/killed 2>/dev/null) ($VSD) path_failed=$(ev path_failed)" \
     "restarted(seen)=$(ev restarted) path_back=$(ev path_back)"
echo "--- kernel messages during phase 2 (t = seconds since fio start)"
dmesg | awk -v u="$UP0" '{t=substr($0,2,index($0,"]")-2)+0} t>=u {printf "t=%6.2f %s\n", t-u, substr($0,index($0,"]")+2)}' |
  grep -vE 'Synchronizing SCSI cache|alua: Detached' | head -40
echo "--- iscsid / multipathd (syslog) during phase 2"
tail -n +$((SYSLOG0+1)) /tmp/syslog 2>/dev/null | grep -E 'iscsid|multipathd' | grep -vE 'tur checker reports path is up|path sd. is up' | head -40
echo "--- multipath -ll after"; multipath -ll
echo "--- iscsiadm -m session"; iscsiadm -m session

# fio latency log: "completion time (unix epoch ms, log_unix_epoch), latency ns, dir (0 read,
# 1 write), bs, offset[, prio]" -> /tmp/lat: "t (s since T0, the clock of every other event) lat_ns dir"
awk -F', *' -v t0="$T0" '{printf "%.3f %s %s\n", $1/1000-t0, $2, $3}' /tmp/fo_lat.1.log 2>/dev/null | sort -n >/tmp/lat
read -r MAXLAT MAXLAT_AT <<<"$(awk '$2>m {m=$2; at=$1} END{printf "%.2f %.2f", m/1e9, at}' /tmp/lat)"
# longest stretch without any completion (submission-to-completion view of the stall)
read -r GAP GAP_END <<<"$(awk 'NR>1 && $1-p>g {g=$1-p; e=$1} {p=$1} END{printf "%.2f %.2f", g, e}' /tmp/lat)"
NW=$(awk '$3==1' /tmp/lat | wc -l); NR_=$(awk '$3==0' /tmp/lat | wc -l)
tk=$(ev killed); tr_=$(ev restarted)
DOWNW=-
if [ "$tk" != - ] && [ "$tr_" != - ]; then
  DOWNW=$(awk -v a="$tk" -v b="$tr_" -v g="$GAP_END" '$3==1 && $1>a && $1>=g && $1<b' /tmp/lat | wc -l)
fi
WRDOWN=$(paste -d' ' <(tr ' ' '\n' </tmp/ev.cnt_killed 2>/dev/null) <(tr ' ' '\n' </tmp/ev.cnt_restarted 2>/dev/null) |
  awk -F'[: ]' 'NF>=4 {printf "%s+%d ", $1, $4-$2}')
echo "--- fio"
cat /tmp/fo.err | grep -vE '^\s*$' | head -10
awk -F';' '{printf "fio: wrote %s KiB (%s IOPS avg), verify-read %s KiB, error %s\n", $47, $49, $6, $5}' /tmp/fo.out
echo "completion gaps > 0.5 s (start -> end, t = s since phase 2 started fio):"
awk 'NR>1 && $1-p>0.5 {printf "  %.2f -> %.2f (%.2f s)\n", p, $1, $1-p} {p=$1}' /tmp/lat

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
kv fo_fio_rc "$FRC"
kv fo_writes "$NW"; kv fo_verify_reads "$NR_"
kv fo_iops "$(awk -F';' '{print $49}' /tmp/fo.out)"
kv fo_max_latency "${MAXLAT}s@t=${MAXLAT_AT}"
kv fo_longest_gap "${GAP}s(ending t=${GAP_END})"
kv victim "$(cat /job/killed 2>/dev/null)/$VSD"
kv t_killed "$tk"; kv t_restarted "$tr_"
kv path_failed_after_kill "${FAILED_AFTER}s"
kv writes_while_down_after_pause "$DOWNW"
kv writes_per_path_while_down "$WRDOWN"
kv path_back_after_restart "${BACK_AFTER}s"
kv writes_on_restored_path "$back_writes"

[ "$FRC" = 0 ] && ! grep -qiE 'verify.*(fail|mismatch|bad)|crc32c' /tmp/fo.err && [ "$NR_" -gt 0 ]
check $? "phase 2: fio randwrite+crc32c verify across the kill (rc $FRC, $NW writes, $NR_ verify reads)"
[ -n "$VSD" ]; check $? "phase 2: victim portal $(cat /job/killed 2>/dev/null) maps to one of the paths ($VSD)"
[ -n "$K_FAIL" ] || [ -e /tmp/ev.path_failed ]
check $? "phase 2: the victim's path went failed ($FAILED_AFTER s after the kill mark; dm-multipath t=${K_FAIL:--}, multipathd saw it t=$(ev path_failed))"
ok=1
if [ -n "$VSD" ] && [ -n "$WRDOWN" ]; then
  ok=0
  for x in $WRDOWN; do d=${x%%+*}; n=${x#*+}; [ "$d" = "$VSD" ] && continue; [ "$n" -gt 0 ] || ok=1; done
fi
[ $ok = 0 ] && [ "$DOWNW" != - ] && [ "$DOWNW" -gt 0 ]
check $? "phase 2: I/O continued on the remaining paths while the node was down ($WRDOWN; $DOWNW writes after the pause)"
[ -e /tmp/ev.path_back ]
check $? "phase 2: the victim's path came back after the restart ($BACK_AFTER s; dm reinstated t=${K_BACK:--}, multipathd active/ready t=$(ev path_back))"
[ "$back_writes" != - ] && [ "$back_writes" -gt 0 ] && [ "${ARC:-1}" = 0 ]
check $? "phase 2: the restored path carries writes again ($back_writes writes in a 5 s fio verify burst, rc ${ARC:--})"
act=$(multipathd show paths raw format "%m %t %T" | awk -v m="$MAP" '$1==m && $2=="active" && $3=="ready"' | wc -l)
kv final_active_paths "$act"
[ "$act" = "$NPATHS" ]; check $? "phase 2: $MAP has $act active+ready paths at the end (want $NPATHS)"

hdr "teardown"
multipath -F >/dev/null 2>&1
iscsiadm -m node --logoutall=all >/dev/null 2>&1
echo "logged out; sessions left: $(iscsiadm -m session 2>/dev/null | wc -l)"
echo "--- dmesg (iSCSI / multipath / sd, last 40)"
dmesg | grep -iE 'iscsi|connection|session|multipath|device-mapper|alua|sd [0-9]|reservation|tpg' | tail -40
finish
