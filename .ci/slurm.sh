#!/usr/bin/env bash
# A one-node Slurm on this machine for tests/test_slurm.py: Debian's slurmctld, slurmd,
# slurm-client and munge, a minimal slurm.conf (this host as the only node, its CPUs as
# `slurmd -C` reports them, no cgroup plugins), the daemons started as root.
#
# Never fails CI: when apt, the packages or the daemons are unavailable it prints
# "slurm: skipped (<why>)" and exits 0, and the Slurm tests skip with a reason. Idempotent:
# with the node already up it only says so. It prints "slurm: started (...)" when it
# started the daemons. Nothing is stopped or cleaned up afterwards.
set -uo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
# libpmix2 makes `srun --mpi=pmix` work (Slurm's plugin loads it), so that the tests see what
# minidl does under PMIx too; --no-install-recommends keeps the install small.
PACKAGES=(slurmctld slurmd slurm-client munge libpmix2)
WAIT_SECONDS=${MINIDL_SLURM_WAIT:-60}

skip() { echo "slurm: skipped ($*); tests/test_slurm.py will skip"; exit 0; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
node_state() { sinfo --noheader --node="$NODE" --format=%t 2>/dev/null | head -n1; }

started=$(now)
[ "$(id -u)" = 0 ] || { command -v sinfo >/dev/null && sinfo >/dev/null 2>&1 && \
  { echo "slurm: not root; using the running Slurm: $(sinfo --noheader --format='%P %D %t' | head -n1)"; exit 0; }
  skip "not root, so neither Debian's packages nor the daemons can be set up"; }

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v srun >/dev/null \
   || ! command -v munged >/dev/null || ! compgen -G "/usr/lib/*/pmix2/lib/libpmix.so.2" >/dev/null; then
  command -v apt-get >/dev/null || skip "no apt-get to install ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  install() { apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/tmp/minidl-slurm-apt.log 2>&1; }
  if ! install; then
    apt-get update -q >/tmp/minidl-slurm-apt-update.log 2>&1 || skip "apt-get update failed (see /tmp/minidl-slurm-apt-update.log)"
    install || skip "apt-get install ${PACKAGES[*]} failed (see /tmp/minidl-slurm-apt.log)"
  fi
  echo "slurm: installed ${PACKAGES[*]} in $(since "$started") s"
fi
NODE=$(hostname -s)
# Debian's mpi/pmix plugin dlopens pmix2/lib/libpmix.so, which only libpmix-dev (with autoconf,
# automake, ...) provides; the symlink to libpmix2's library is all it needs.
for lib in /usr/lib/*/pmix2/lib/libpmix.so.2; do
  [ -e "$lib" ] && [ ! -e "${lib%.2}" ] && ln -s libpmix.so.2 "${lib%.2}"
done

# ---------------------------------------------------------------- already up?
if scontrol ping >/dev/null 2>&1 && [[ "$(node_state)" =~ ^(idle|mix|alloc|comp) ]]; then
  echo "slurm: already running ($(slurmd -V), node $NODE $(node_state), $(sinfo --noheader --node="$NODE" --format='%c CPUs'))"
  exit 0
fi

# ---------------------------------------------------------------- munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --force >/dev/null 2>&1 \
    || /usr/sbin/munged --force >/dev/null 2>&1
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || skip "munged did not start (/var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------- slurm.conf
node_line=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=') || skip "slurmd -C printed no node line"
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
new_conf=$(cat <<EOF
# Written by minidl's .ci/slurm.sh: one localhost node for tests/test_slurm.py.
ClusterName=minidl-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
[ -f "$CONF" ] && [ "$(cat "$CONF")" = "$new_conf" ] || printf '%s\n' "$new_conf" >"$CONF"

# ---------------------------------------------------------------- daemons
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running /run/slurmctld.pid || slurmctld || skip "slurmctld did not start ($LOG_DIR/slurmctld.log)"
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
scontrol ping >/dev/null 2>&1 || skip "slurmctld does not answer ($(tail -n3 $LOG_DIR/slurmctld.log | tr '\n' ' '))"
running /run/slurmd.pid || slurmd || skip "slurmd did not start ($LOG_DIR/slurmd.log)"
for _ in $(seq $((WAIT_SECONDS * 5))); do
  [[ "$(node_state)" =~ ^(idle|mix|alloc|comp) ]] && break
  [[ "$(node_state)" =~ ^(down|drain|drng|fail) ]] && scontrol update nodename="$NODE" state=resume >/dev/null 2>&1
  sleep 0.2
done
state=$(node_state)
[[ "$state" =~ ^(idle|mix|alloc|comp) ]] || skip "node $NODE is '${state:-unknown}' after ${WAIT_SECONDS} s ($(tail -n3 $LOG_DIR/slurmd.log | tr '\n' ' '))"
echo "slurm: started ($(slurmd -V), node $NODE $state, $(sinfo --noheader --node="$NODE" --format='%c CPUs'), mpi plugins: $(srun --mpi=list 2>&1 | grep -Eo '(none|pmi2|pmix[_v0-9]*|cray_shasta)' | sort -u | tr '\n' ' ')in $(since "$started") s)"
