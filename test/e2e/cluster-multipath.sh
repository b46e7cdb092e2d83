#!/bin/bash
# cluster-multipath.sh — end to end: the Linux kernel initiator (open-iscsi +
# dm-multipath in the vm-initiator QEMU guest) against a real three-node hatarget
# cluster. Needs root (network namespace, tap device). `make e2e` runs it.
#
#   test/e2e/cluster-multipath.sh
#
# 1. builds the guest image if needed (vm-initiator build.sh, a no-op once built)
# 2. brings up the test network (netns vmi, bridge vmi0, 10.77.0.1-3)
# 3. starts agents n1..n3 inside it on 10.77.0.1..3 (one shared --storage-dir,
#    or one each with E2E_REPLICAS), waits for a leader and three healthy nodes
# 4. creates the target and a 1 GiB LUN through node 2's API: on the shared
#    storage, or replicated on E2E_REPLICAS nodes, each with its own copy
# 5. boots the guest with test/e2e/guest-cluster-smoke.sh:
#    phase 1: the tool's examples/multipath-smoke.sh (discovery through 10.77.0.1
#             must list three portals, login to all, one map with three paths,
#             dd + fio verify through the map)
#             plus ALUA: the LUN's owner (lun show -o json, passed to the guest as
#             E2E_OWNER_PORTAL) is alone in the active prio-50 path group, the
#             others in a prio-10 (active/non-optimized) group, and only the
#             owner's path carried the writes
#    phase 2: while fio write+verify runs, kill -9 the LUN's OWNER, wait until the
#             API shows a new owner (time to new owner, higher epoch; the guest
#             gets its portal in JOBDIR/newowner), keep the old owner down
#             E2E_DOWN_FOR seconds, restart it; the guest measures the I/O pause,
#             that writes flow on the new owner's path only once it is regrouped
#             as active/optimized, and that the old owner's path comes back
#             active/ready as non-optimized (no writes unless ownership moved back)
#    or, with E2E_SCENARIO=rolling, phase 2 is a rolling upgrade's restarts:
#             while fio write+verify runs, every node in turn (the Raft leader
#             last, as deploy/rolling-upgrade.sh orders them) is drained
#             (node drain --wait), stopped with SIGTERM, left down
#             E2E_ROLL_DOWN seconds, started again and
#             undrained (node undrain --wait: caught up, its copies in sync);
#             the guest checks that fio verified every block and that every path
#             is back at the end. The binary stays the same: this is the I/O
#             side of an upgrade; test/cluster's TestRollingUpgrade changes it.
# 6. prints a RESULT block; exits non-zero on any failed check
#
# env: VMI (vm-initiator dir, default ../shared/tools/vm-initiator from the repo),
#      HATARGET_BIN (default bin/hatarget, built with go build if missing),
#      E2E_KILL_AFTER (s after the guest's I/O starts, default 5), E2E_DOWN_FOR
#      (default 15; the victim is always the LUN's owner),
#      E2E_RECOVERY_TMO (guest iSCSI replacement timeout in phase 2, default 5),
#      E2E_DATA_MB (phase 1 dd/fio size, default 32), E2E_KEEP=1 (keep the work dir),
#      E2E_REPLICAS (N: the LUN is replicated on N nodes, no shared storage;
#      default 0: shared storage),
#      E2E_SCENARIO (kill, the default, or rolling), E2E_ROLL_DOWN (how long
#      each node stays stopped in the rolling scenario, as for installing a
#      package, default 10), E2E_ROLL_SECS (how long fio runs then, default
#      30 + 3 x (E2E_ROLL_DOWN + 10)),
#      E2E_RUN_OPTS (extra run.sh options, e.g. -v)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/test/e2e
VMI=${VMI:-$REPO/../shared/tools/vm-initiator}
VMI=$(cd "$VMI" && pwd) || { echo "e2e: no vm-initiator at ${VMI}" >&2; exit 2; }
BIN=${HATARGET_BIN:-$REPO/bin/hatarget}
KILL_AFTER=${E2E_KILL_AFTER:-5}
DOWN_FOR=${E2E_DOWN_FOR:-15}
DATA_MB=${E2E_DATA_MB:-32}
RTMO=${E2E_RECOVERY_TMO:-5}
REPLICAS=${E2E_REPLICAS:-0}
SCENARIO=${E2E_SCENARIO:-kill}
[[ $SCENARIO =~ ^(kill|rolling)$ ]] || { echo "e2e: E2E_SCENARIO must be kill or rolling" >&2; exit 2; }
ROLL_DOWN=${E2E_ROLL_DOWN:-10}
ROLL_SECS=${E2E_ROLL_SECS:-$((30 + 3 * (ROLL_DOWN + 10)))}
[[ $REPLICAS =~ ^[0-3]$ ]] || { echo "e2e: E2E_REPLICAS must be 0 (shared storage) to 3" >&2; exit 2; }
NS=${VMI_NETNS:-vmi}
IQN=iqn.2026-01.io.hatarget.e2e:cluster-multipath
API2=10.77.0.2:9260
NODES=(1 2 3)

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root (network namespace, tap device)" >&2; exit 2; }
for f in net.sh run.sh build.sh examples/multipath-smoke.sh; do
  [ -e "$VMI/$f" ] || { echo "e2e: $VMI/$f missing" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hatarget-e2e.XXXXXX")
LOGS=$WORK/logs JOB=$WORK/job
mkdir -p "$LOGS" "$WORK/storage" "$WORK"/storage-n{1,2,3}
declare -A PID=()
CREATED_NS=0 RUNPID="" RC=1
ts() { date +%T.%3N; }
log() { echo "host $(ts): $*"; }
secs() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(secs)" 'BEGIN{printf "%.1f", b-a}'; }

stop_agents() {
  local i
  for i in "${!PID[@]}"; do kill -TERM "${PID[$i]}" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for i in "${!PID[@]}"; do kill -0 "${PID[$i]}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for i in "${!PID[@]}"; do kill -KILL "${PID[$i]}" 2>/dev/null || true; wait "${PID[$i]}" 2>/dev/null || true; done
  PID=()
}
cleanup() {
  local rc=$?
  set +e
  if [ -n "$RUNPID" ] && kill -0 "$RUNPID" 2>/dev/null; then kill -TERM "$RUNPID"; wait "$RUNPID" 2>/dev/null; fi
  stop_agents
  [ $CREATED_NS = 1 ] && "$VMI/net.sh" down
  rm -rf "$WORK"/storage/*.img "$WORK"/storage-n?/*
  if [ "${E2E_KEEP:-0}" = 1 ] || [ "$RC" != 0 ] || [ $rc != 0 ]; then
    echo "host: logs kept in $WORK (logs/n*.log agents, guest.out, guest.err, job/console.log)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ctl() { "$VMI/net.sh" exec "$BIN" "$@"; }   # the CLI, inside the namespace

# storage_dir I: where node I keeps LUN files: the one shared dir, or its
# own with replicated LUNs.
storage_dir() { if [ "$REPLICAS" = 0 ]; then echo "$WORK/storage"; else echo "$WORK/storage-n$1"; fi; }
start_agent() { # start_agent I
  local i=$1 j joins=()
  for j in "${NODES[@]}"; do [ "$j" = "$i" ] || joins+=(--join "10.77.0.$j"); done
  echo "=== $(ts) start" >>"$LOGS/n$i.log"
  # net.sh exec = exec ip netns exec = exec hatarget: $! is the agent itself
  "$VMI/net.sh" exec "$BIN" agent --name "n$i" --bind "10.77.0.$i" --data-dir "$WORK/n$i" \
    --bootstrap-expect 3 "${joins[@]}" --storage-dir "$(storage_dir "$i")" >>"$LOGS/n$i.log" 2>&1 &
  PID[$i]=$!
}
status_json() { ctl cluster status -o json --addr "$1" 2>/dev/null; }
json_leader() { sed -n 's/^  "leader": *"\([^"]*\)".*/\1/p' | head -1; }
json_healthy() { grep -c '"healthy": true' || true; }
json_gen_of() { # json_gen_of NAME: "NODE_GENERATION CLUSTER_GENERATION"
  awk -F'"' -v want="$1" '/"generation":/ {g=$3; gsub(/[^0-9]/,"",g); if (n=="") top=g; else if (n==want) mine=g}
    /"name":/ {n=$4} END{print mine+0, top+0}'
}
iso2s() { date -d "$1" +%s.%N; }
LUN=disk0
# lun_owner ADDR: "OWNER EPOCH" of $LUN as node ADDR's API reports it ("- 0" if unknown)
lun_owner() {
  local j; j=$(ctl lun show "$LUN" -o json --addr "$1" 2>/dev/null || true)
  echo "$(echo "$j" | sed -n 's/^ *"owner": *"\([^"]*\)".*/\1/p' | head -1) $(echo "$j" | sed -n 's/^ *"epoch": *\([0-9]*\).*/\1/p' | head -1)" |
    awk '{print ($1==""?"-":$1), ($2==""?0:$2)}'
}
alive_api() { # alive_api [EXCEPT_INDEX]: the API of a running node other than EXCEPT_INDEX
  local i; for i in "${NODES[@]}"; do [ "$i" != "${1:-}" ] && [ -n "${PID[$i]:-}" ] && { echo "10.77.0.$i:9260"; return; }; done
}
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
# roll_node I: what a rolling upgrade does to node I, through another node's
# API; appends its timings to ROLL_STEPS, or returns non-zero with the step
# that failed in ROLL_ERR
ROLL_STEPS=() ROLL_ERR=""
roll_node() {
  local i=$1 api t0 t_drain t_stop t_up
  api=$(alive_api "$i")
  echo "n$i: draining" >"$JOB/rolling"
  t0=$(secs)
  ctl node drain "n$i" --wait --timeout 120s --addr "$api" >>"$LOGS/roll.log" 2>&1 || { ROLL_ERR="n$i: drain failed"; return 1; }
  t_drain=$(since "$t0")
  echo "n$i: stopping" >"$JOB/rolling"
  t0=$(secs)
  kill -TERM "${PID[$i]}"; wait "${PID[$i]}" 2>/dev/null || true
  t_stop=$(since "$t0")
  echo "=== $(ts) stopped with SIGTERM by the e2e test (rolling restart)" >>"$LOGS/n$i.log"
  unset "PID[$i]"
  sleep "$ROLL_DOWN"
  echo "n$i: starting" >"$JOB/rolling"
  t0=$(secs)
  start_agent "$i"
  ctl node undrain "n$i" --wait --timeout 180s --addr "$api" >>"$LOGS/roll.log" 2>&1 || { ROLL_ERR="n$i: undrain failed"; return 1; }
  t_up=$(since "$t0")
  ROLL_STEPS+=("n$i: drained ${t_drain}s, stopped ${t_stop}s, down ${ROLL_DOWN}s, started and caught up ${t_up}s")
}

# ---------------------------------------------------------------- setup
T_ALL=$(secs)
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  BIN=$WORK/hatarget
  (cd "$REPO" && CGO_ENABLED=0 go build -o "$BIN" ./cmd/hatarget)
fi
log "hatarget: $BIN ($("$BIN" version 2>/dev/null | head -1 || true))"
log "guest image: $VMI/build.sh"
T=$(secs); VMI_BUILD_QUIET=1 "$VMI/build.sh" >"$LOGS/vmi-build.log" 2>&1 ||
  { tail -20 "$LOGS/vmi-build.log"; echo "e2e: vm-initiator build failed" >&2; exit 1; }
T_BUILD=$(since "$T")

ip netns list 2>/dev/null | grep -qw "^$NS" || CREATED_NS=1
"$VMI/net.sh" up
if "$VMI/net.sh" exec ss -Htln 2>/dev/null | awk '{print $4}' | grep -qE '^10\.77\.0\.[123]:(3260|9260|9261|9262|9263|9264)$'; then
  "$VMI/net.sh" exec ss -tlnp | grep -E '10\.77\.0\.[123]:' >&2
  echo "e2e: something already listens on the test addresses in netns $NS; stop it first" >&2; exit 2
fi
log "network: $("$VMI/net.sh" status | tr -s ' ' | tr '\n' ' ')"

T=$(secs)
for i in "${NODES[@]}"; do start_agent "$i"; done
log "agents started: n1 pid ${PID[1]}, n2 pid ${PID[2]}, n3 pid ${PID[3]} (logs $LOGS)"
LEADER="" H=0
for _ in $(seq 120); do
  for i in "${NODES[@]}"; do kill -0 "${PID[$i]}" 2>/dev/null || { tail -20 "$LOGS/n$i.log" >&2; echo "e2e: agent n$i exited" >&2; exit 1; }; done
  J=$(status_json 10.77.0.1:9260 || true)
  LEADER=$(echo "$J" | json_leader); H=$(echo "$J" | json_healthy)
  [ -n "$LEADER" ] && [ "$H" = 3 ] && break
  sleep 0.5
done
[ -n "$LEADER" ] && [ "$H" = 3 ] || { echo "$J"; tail -5 "$LOGS"/n*.log; echo "e2e: no leader with 3 healthy nodes after 60 s" >&2; exit 1; }
T_CLUSTER=$(since "$T")
log "cluster formed in ${T_CLUSTER}s: leader $LEADER, $H healthy nodes"
# "iscsi_address,port_group" of every node, as SendTargets should list them
PG_STATUS=$(echo "$J" | awk -F'"' '/"iscsi_address":/ {a=$4} /"port_group":/ {gsub(/[^0-9]/,"",$3); print a "," $3}' | sort | tr '\n' ' ' | sed 's/ $//')
PG_NODES=$(echo "$J" | awk -F'"' '/"name":/ {n=$4} /"port_group":/ {gsub(/[^0-9]/,"",$3); printf "%s=%s ", n, $3}')
log "portal group tags by node (cluster status port_group): $PG_NODES"
ctl cluster status --addr "$API2" | sed 's/^/    /'

ctl target create "$IQN" --addr "$API2" | sed 's/^/    /'
if [ "$REPLICAS" = 0 ]; then
  ctl lun create "$IQN" 0 --name disk0 --shared --path "$WORK/storage/disk0.img" --size 1G --addr "$API2" | sed 's/^/    /'
else
  ctl lun create "$IQN" 0 --name disk0 --replicas "$REPLICAS" --size 1G --addr "$API2" | sed 's/^/    /'
fi
# every node serves the change within a second: wait until all report the same generation
for _ in $(seq 40); do
  GENS=$( (status_json "$API2" || true) | sed -n 's/^ *"generation": *\([0-9]*\).*/\1/p' | sort -u | wc -l)
  [ "$GENS" = 1 ] && break; sleep 0.25
done
log "target $IQN with LUN 0 (disk0, 1 GiB, $([ "$REPLICAS" = 0 ] && echo "shared, in $WORK/storage" || echo "$REPLICAS replicas, a copy per node")) created via $API2; all nodes at one generation: $([ "$GENS" = 1 ] && echo yes || echo no)"
OWNER=- EPOCH=0
for _ in $(seq 40); do read -r OWNER EPOCH <<<"$(lun_owner "$API2")"; [ "$OWNER" != - ] && break; sleep 0.25; done
[ "$OWNER" != - ] || { ctl lun show "$LUN" -o json --addr "$API2"; echo "e2e: LUN $LUN has no owner after 10 s" >&2; exit 1; }
OWNER_I=${OWNER#n}
OWNER_VIEWS=$(for i in "${NODES[@]}"; do printf 'n%s:%s ' "$i" "$(lun_owner "10.77.0.$i:9260" | tr ' ' '@')"; done)
log "LUN $LUN owner $OWNER (epoch $EPOCH, portal 10.77.0.$OWNER_I:3260); as each node's API reports it (owner@epoch): $OWNER_VIEWS"

# ---------------------------------------------------------------- the VM
mkdir -p "$JOB"
cp "$VMI/examples/multipath-smoke.sh" "$JOB/multipath-smoke.sh"   # /job/multipath-smoke.sh in the guest
FO_SECS=$((2 + KILL_AFTER + DOWN_FOR + 20))
[ "$SCENARIO" = rolling ] && FO_SECS=$ROLL_SECS
log "booting the guest: run.sh guest-cluster-smoke.sh 10.77.0.1:3260 3 $DATA_MB $FO_SECS"
T_VM=$(secs)
# shellcheck disable=SC2086
"$VMI/run.sh" -t 900 -j "$JOB" -e "E2E_RECOVERY_TMO=$RTMO" -e "E2E_OWNER_PORTAL=10.77.0.$OWNER_I" -e "E2E_SCENARIO=$SCENARIO" ${E2E_RUN_OPTS:-} \
  "$HERE/guest-cluster-smoke.sh" 10.77.0.1:3260 3 "$DATA_MB" "$FO_SECS" >"$WORK/guest.out" 2>"$WORK/guest.err" &
RUNPID=$!

MARKS=$JOB/out/marks
while kill -0 "$RUNPID" 2>/dev/null && [ ! -e "$MARKS/io-running" ] && [ ! -e "$MARKS/phase2-skip" ]; do sleep 0.1; done
VICTIM="" KILL_INFO="" RESTART_HEALTHY=- RESTART_CAUGHT_UP=- HEALTHY_GEN=- OUTAGE_STATUS=-
NEW_OWNER=- NEW_EPOCH=0 T_NEWOWNER=- OWNER_AFTER_RESTART=- OWNER_END=- OLD_OWNER=- OLD_EPOCH=0
ROLL_RESULT=- T_ROLL=-
if [ -e "$MARKS/io-running" ] && [ "$SCENARIO" = rolling ]; then
  log "guest: phase 1 done, phase 2 fio verify running for ${FO_SECS}s (VM up $(since "$T_VM")s)"
  sleep "$KILL_AFTER"
  J=$(status_json "$API2" || true); LEADER=$(echo "$J" | json_leader)
  ORDER=()
  for i in "${NODES[@]}"; do [ "n$i" = "$LEADER" ] || ORDER+=("$i"); done
  [ -n "$LEADER" ] && ORDER+=("${LEADER#n}")
  log "rolling restart, order ${ORDER[*]/#/n} (the Raft leader $LEADER last)"
  T=$(secs) ROLL_RESULT=ok
  for i in "${ORDER[@]}"; do
    T_STEP=$(secs)
    if ! roll_node "$i"; then ROLL_RESULT="$ROLL_ERR"; log "rolling restart: $ROLL_ERR (see $LOGS/roll.log)"; break; fi
    log "rolling restart: ${ROLL_STEPS[-1]} ($(since "$T_STEP")s in all); owner of $LUN now $(lun_owner "$(alive_api)")"
  done
  T_ROLL=$(since "$T")
  [ "$ROLL_RESULT" = ok ] && printf '%s; ' "${ROLL_STEPS[@]}" >"$JOB/rolled"
  log "rolling restart $ROLL_RESULT after ${T_ROLL}s; the guest's fio runs ${FO_SECS}s from its start"
  tail -20 "$LOGS/roll.log" | sed 's/^/    /'
elif [ -e "$MARKS/io-running" ]; then
  log "guest: phase 1 done, phase 2 fio verify running (VM up $(since "$T_VM")s)"
  sleep "$KILL_AFTER"
  J=$(status_json "$API2" || true); LEADER=$(echo "$J" | json_leader)
  # the victim is the LUN's owner as the API reports it right now
  read -r OLD_OWNER OLD_EPOCH <<<"$(lun_owner "$API2")"
  [ "$OLD_OWNER" != - ] || { OLD_OWNER=$OWNER; OLD_EPOCH=$EPOCH; log "WARNING: no owner from $API2 now; using $OWNER"; }
  [ "$OLD_OWNER" = "$OWNER" ] || log "WARNING: the owner moved from $OWNER to $OLD_OWNER before the kill (the guest was told $OWNER)"
  VICTIM=${OLD_OWNER#n}
  SURV=$(alive_api "$VICTIM"); SURV=${SURV%%:*}; SURV=${SURV##*.}
  kill -KILL "${PID[$VICTIM]}"; wait "${PID[$VICTIM]}" 2>/dev/null || true
  T_KILL=$(secs)
  echo "10.77.0.$VICTIM" >"$JOB/killed"
  echo "=== $(ts) killed with SIGKILL by the e2e test" >>"$LOGS/n$VICTIM.log"
  KILL_INFO="n$VICTIM = owner of $LUN (epoch $OLD_EPOCH; 10.77.0.$VICTIM, pid ${PID[$VICTIM]}; leader was $LEADER)"
  unset "PID[$VICTIM]"
  log "kill -9 $KILL_INFO"
  # failover: the leader moves ownership once gossip sees the owner gone
  # and its lease (1.5 s from the last grant) + 0.5 s have run out; poll a
  # survivor's API every 0.1 s
  while [ "$(since "$T_KILL" | cut -d. -f1)" -lt 30 ]; do
    read -r o e <<<"$(lun_owner "10.77.0.$SURV:9260")"
    if [ "$o" != - ] && [ "$o" != "$OLD_OWNER" ]; then NEW_OWNER=$o NEW_EPOCH=$e T_NEWOWNER=$(since "$T_KILL"); break; fi
    sleep 0.1
  done
  if [ "$NEW_OWNER" != - ]; then
    echo "10.77.0.${NEW_OWNER#n}" >"$JOB/newowner"
    log "new owner of $LUN: $NEW_OWNER (epoch $NEW_EPOCH, was $OLD_OWNER epoch $OLD_EPOCH) ${T_NEWOWNER}s after the kill (API of n$SURV)"
  else
    log "no new owner of $LUN within 30 s of the kill (API of n$SURV: $(lun_owner "10.77.0.$SURV:9260"))"
  fi
  grep -hE 'LUN failed over|LUN owner assigned' "$LOGS"/n*.log | sed 's/^/    /' || true
  # the survivors keep a quorum: a change still commits, status shows the dead node
  while [ "$(since "$T_KILL" | cut -d. -f1)" -lt 3 ]; do sleep 0.1; done
  J=$(status_json "10.77.0.$SURV:9260" || true)
  OUTAGE_STATUS="leader $(echo "$J" | json_leader), $(echo "$J" | json_healthy) healthy"
  log "cluster during the outage (via n$SURV): $OUTAGE_STATUS"
  ctl cluster status --addr "10.77.0.$SURV:9260" 2>&1 | sed 's/^/    /' || true
  while [ "$(since "$T_KILL" | cut -d. -f1)" -lt "$DOWN_FOR" ]; do sleep 0.1; done
  start_agent "$VICTIM"
  T_RESTART=$(secs)
  : >"$JOB/restarted"
  log "restarted n$VICTIM (pid ${PID[$VICTIM]}) after $(awk -v a="$T_KILL" -v b="$T_RESTART" 'BEGIN{printf "%.1f", b-a}')s down"
  for _ in $(seq 240); do
    J=$(status_json "$API2" || true)
    read -r VG CG <<<"$(echo "$J" | json_gen_of "n$VICTIM")"
    if [ "$RESTART_HEALTHY" = - ] && [ "$(echo "$J" | json_healthy)" = 3 ]; then
      RESTART_HEALTHY=$(since "$T_RESTART"); HEALTHY_GEN="generation $VG of $CG"
    fi
    [ "$VG" -gt 0 ] && [ "$VG" -ge "$CG" ] && { RESTART_CAUGHT_UP=$(since "$T_RESTART"); break; }
    sleep 0.25
  done
  log "n$VICTIM healthy in cluster status after ${RESTART_HEALTHY}s (then at $HEALTHY_GEN); its generation caught up after ${RESTART_CAUGHT_UP}s"
  read -r o e <<<"$(lun_owner "10.77.0.$SURV:9260")"; OWNER_AFTER_RESTART="$o@$e"
  # the guest's burst on the restored path may carry writes only if ownership moved back
  [ "$o" != - ] && echo "10.77.0.${o#n}" >"$JOB/owner_now"
  log "owner of $LUN after the restart: $OWNER_AFTER_RESTART; as each node's API reports it: $(for i in "${NODES[@]}"; do printf 'n%s:%s ' "$i" "$(lun_owner "10.77.0.$i:9260" | tr ' ' '@')"; done)"
else
  log "guest skipped phase 2 (or the VM ended early)"
fi
set +e   # from here on every failure is a check in the RESULT block
wait "$RUNPID"; VMRC=$?; RUNPID=
T_VMWALL=$(since "$T_VM")
[ -n "$VICTIM" ] && OWNER_END="$(for i in "${NODES[@]}"; do printf 'n%s:%s ' "$i" "$(lun_owner "10.77.0.$i:9260" | tr ' ' '@')"; done)"

cat "$WORK/guest.out"
grep -v 'job dir kept' "$WORK/guest.err" >&2 || true
VMLINE=$(grep '^vm-initiator: accel=' "$WORK/guest.err" | tail -1 || true)
BOOT=$(echo "$VMLINE" | grep -o 'boot=[0-9.]*s' | cut -d= -f2)
log "run.sh exit code $VMRC"

# the restarted agent's own log: when did it listen, when did it serve the target,
# which logins did it refuse in between
SERVE_NOTE=""
if [ -n "$VICTIM" ]; then
  VLOG=$LOGS/n$VICTIM.log
  start=$(grep -n '^=== .* start$' "$VLOG" | tail -1 | cut -d: -f1)
  tail -n +"$start" "$VLOG" >"$WORK/restart.log"
  t_of() { grep -m1 -E "$1" "$WORK/restart.log" | sed -n 's/^time=\([^ ]*\).*/\1/p'; }
  TL=$(t_of 'msg="iSCSI portal listening"'); TA=$(t_of 'msg="configuration applied" devices=[0-9]+ targets=[1-9]')
  NREF=$(grep -c 'msg="login failed"' "$WORK/restart.log" || true)
  if [ -n "$TL" ] && [ -n "$TA" ]; then
    SERVE_NOTE="portal listening $(dt "$T_RESTART" "$(iso2s "$TL")")s after the restart, target served after $(dt "$T_RESTART" "$(iso2s "$TA")")s; $NREF login(s) refused in between"
  else
    SERVE_NOTE="portal listening at ${TL:-never}, target served at ${TA:-never}; $NREF login(s) refused"
  fi
  log "restarted n$VICTIM: $SERVE_NOTE"
  grep -E 'msg="(login failed|configuration applied|iSCSI portal listening|login complete)"' "$WORK/restart.log" | sed 's/^/    /'
fi

# ---------------------------------------------------------------- result
g() { sed -n "s/^E2E $1=//p" "$WORK/guest.out" | tail -1; }
HOSTCHECKS=()
hc() { if [ "$1" = 0 ]; then HOSTCHECKS+=("CHECK PASS $2"); else HOSTCHECKS+=("CHECK FAIL $2"); fi; }
hc 0 "host: 3-node cluster formed (leader $LEADER) in ${T_CLUSTER}s; target + LUN created via $API2"
if [ "$SCENARIO" = rolling ]; then
  [ "$ROLL_RESULT" = ok ]; hc $? "host: phase 2 ran: every node drained, stopped, restarted and undrained in turn in ${T_ROLL}s: $ROLL_RESULT"
else
  [ -n "$VICTIM" ]; hc $? "host: phase 2 ran: kill -9 ${KILL_INFO:-nobody}, restarted after ${DOWN_FOR}s"
fi
[ "$OWNER" != - ]; hc $? "host: LUN $LUN has an owner: $OWNER (epoch $EPOCH); views owner@epoch by node: $OWNER_VIEWS"
if [ -n "$VICTIM" ]; then
  [ "n$VICTIM" = "$OWNER" ]; hc $? "host: the victim n$VICTIM is the owner the guest was told ($OWNER)"
  [ "$NEW_OWNER" != - ] && [ "$NEW_OWNER" != "$OLD_OWNER" ] && [ "$NEW_EPOCH" -gt "$OLD_EPOCH" ]
  hc $? "host: ownership failed over $OLD_OWNER@$OLD_EPOCH -> $NEW_OWNER@$NEW_EPOCH (new owner, higher epoch) ${T_NEWOWNER}s after the kill"
  # the leader waits out the owner's lease (1.5 s) and a margin (0.5 s)
  # from its last grant, which came at most one grant interval (0.25 s)
  # before the kill
  [ "$T_NEWOWNER" != - ] && awk -v t="$T_NEWOWNER" 'BEGIN{exit !(t>=1.75 && t<15)}'
  hc $? "host: time to new owner ${T_NEWOWNER}s is plausible (>= lease 1.5 s + margin 0.5 s - grant interval 0.25 s, < 15 s)"
fi
if [ "$SCENARIO" = kill ]; then
  [ "$OUTAGE_STATUS" != - ] && echo "$OUTAGE_STATUS" | grep -q ', 2 healthy'
  hc $? "host: during the outage the survivors report: $OUTAGE_STATUS"
  [ "$RESTART_HEALTHY" != - ] && [ "$RESTART_CAUGHT_UP" != - ]
  hc $? "host: restarted node healthy in cluster status after ${RESTART_HEALTHY}s, caught up with the cluster's generation after ${RESTART_CAUGHT_UP}s"
else
  J=$(status_json "$API2" || true)
  [ "$(echo "$J" | json_healthy)" = 3 ]
  hc $? "host: after the rolling restart $(echo "$J" | json_healthy) healthy nodes, leader $(echo "$J" | json_leader)"
fi
for i in "${!PID[@]}"; do kill -0 "${PID[$i]}" 2>/dev/null || hc 1 "host: agent n$i still running at the end"; done
# SendTargets tags as the guest saw them vs. the port groups cluster status assigns
PG_GUEST=$(g discovered | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')
[ -n "$PG_GUEST" ] && [ "$PG_GUEST" = "$PG_STATUS" ]
hc $? "host: SendTargets portal,tag pairs [$PG_GUEST] = cluster status iscsi_address,port_group [$PG_STATUS]"
GUESTCHECKS=$(grep -E '^CHECK (PASS|FAIL) ' "$WORK/guest.out" | awk '!seen[$0]++' || true)
[ -n "$GUESTCHECKS" ]; hc $? "host: guest reported its checks"
[ "$VMRC" = 0 ]; hc $? "host: guest script exit code $VMRC (0 = all guest checks passed; 124 timeout, 125 VM failure)"
NFAIL=$( (printf '%s\n' "${HOSTCHECKS[@]}"; echo "$GUESTCHECKS") | grep -c '^CHECK FAIL' || true)
[ "$NFAIL" = 0 ] && RC=0 || RC=1
VERDICT=$([ $RC = 0 ] && echo PASS || echo FAIL)

echo
echo "==================================================================== e2e cluster-multipath"
printf '%s\n' "${HOSTCHECKS[@]}"
echo "$GUESTCHECKS"
echo "--------------------------------------------------------------------"
echo "timings: guest image build/check ${T_BUILD}s; cluster formation ${T_CLUSTER}s; VM boot ${BOOT:--}; VM run ${T_VMWALL}s; total $(since "$T_ALL")s"
echo "         ($VMLINE)"
echo "phase 1: SendTargets via 10.77.0.1:3260 -> $(g discovered_portals) portals: $(g discovered) (port groups: $PG_NODES);" \
     "$(g sessions_logged_in) sessions; map $(g map): $(g map_active_paths) active paths, hwhandler $(g hwhandler)," \
     "$(g path_groups) path group(s), prios $(g path_prios)"
echo "         $(g dd); $(g fio); paths that carried writes: $(g paths_with_writes)"
echo "         ALUA: owner $OWNER (epoch $EPOCH) = path $(g owner_sd); path groups (sd:group prio:group status): $(g groups_phase1); writes per path in phase 1: $(g phase1_writes_per_path)"
if [ "$SCENARIO" = rolling ]; then
echo "phase 2: rolling restart ($ROLL_RESULT, ${T_ROLL}s): $(printf '%s; ' "${ROLL_STEPS[@]}")"
echo "         fio: $(g fo_writes) writes, $(g fo_verify_reads) verify reads, $(g fo_iops) IOPS avg, rc $(g fo_fio_rc);" \
     "longest completion gap $(g fo_longest_gap), max latency $(g fo_max_latency); $(g final_active_paths) active paths at the end"
fi
if [ -n "$VICTIM" ]; then
echo "phase 2: kill -9 $KILL_INFO, ${KILL_AFTER}s into fio; down ${DOWN_FOR}s; guest replacement_timeout ${RTMO}s"
echo "         OWNER KILL: time to new owner (API) ${T_NEWOWNER}s -> $NEW_OWNER (epoch $NEW_EPOCH);" \
     "I/O pause: longest completion gap $(g fo_longest_gap), max latency $(g fo_max_latency); first write after the kill completed $(g first_write_after_kill) after it"
echo "         guest timeline (s since fio start): kill seen by the initiator $(g kill_seen_by_initiator), dm failed the path $(g path_failed_dm), new owner file seen $(g newowner_seen)," \
     "new owner's path $(g new_owner_sd) active/optimized (prio 50, active group) $(g regrouped), reinstated old path $(g path_reinstated_dm)"
echo "         old owner path (portal/sd) $(g victim): failed $(g path_failed_after_kill) after the kill; groups after failover: $(g groups_after_failover)"
echo "         writes per path kill->restart: $(g writes_per_path_while_down); regrouped->restart: $(g writes_per_path_after_regroup); after the pause $(g writes_while_down_after_pause) writes"
echo "         fio: $(g fo_writes) writes, $(g fo_verify_reads) verify reads, $(g fo_iops) IOPS avg, rc $(g fo_fio_rc)"
echo "         restart: node healthy after ${RESTART_HEALTHY}s (at $HEALTHY_GEN), generation caught up after ${RESTART_CAUGHT_UP}s;"
echo "                  $SERVE_NOTE"
echo "                  path active/ready $(g path_back_after_restart) after the restart; groups then: $(g groups_after_restart);" \
     "owner after the restart $OWNER_AFTER_RESTART, at the end (by node) $OWNER_END"
echo "                  5 s burst writes per path: $(g burst_writes_per_path); $(g final_active_paths) active paths at the end"
fi
echo "RESULT: $VERDICT ($NFAIL failed check(s))"
exit $RC
