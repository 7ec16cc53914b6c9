#!/usr/bin/env bash
# A real single-node Slurm for CI: slurmctld + slurmd from Debian's packages, one
# fake GPU as a GRES, no systemd. tests/test_slurm.py grades an array of fixture
# submissions on it (`python -m grader slurm`, `status`, `collect`).
#
#   scripts/ci_slurm.sh start    install (apt-get), configure, start, wait until the node is idle
#   scripts/ci_slurm.sh stop     stop the daemons by their pid files
#   scripts/ci_slurm.sh status   is it up?
#
# Run as root, on a throw-away machine (CI): it writes /etc/slurm/slurm.conf and
# refuses to overwrite one it did not write. AUTH=munge (default) or AUTH=none.
# Facts it relies on (Slurm 22.05 on Debian 12):
# - node name and SlurmctldHost must be `hostname -s`;
# - a gpu GRES needs File= or slurmd drops it and the node drains: File=/dev/null;
# - no slurmdbd: plain sacct does not work; jobcomp/filetxt keeps a record instead;
# - proctrack/linuxproc + task/none: no cgroups needed (none in a container);
# - stale pid files break the packages' removal scripts: delete them after stopping.
set -euo pipefail

AUTH=${AUTH:-munge}
CONF=/etc/slurm/slurm.conf
MARK="# written by attention-kit scripts/ci_slurm.sh"
LOGS=/var/log/slurm
PIDS=(/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid)
START_TIMEOUT_S=${START_TIMEOUT_S:-90}

say() { echo "[ci_slurm] $*" >&2; }
die() { say "ERROR: $*"; dump_logs; exit 1; }

dump_logs() {
  for f in "$LOGS/slurmctld.log" "$LOGS/slurmd.log"; do
    [ -f "$f" ] && { say "--- last lines of $f"; tail -n 30 "$f" >&2; }
  done
  return 0
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
  local f pid
  for f in "${PIDS[@]}"; do
    alive "$f" || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    say "stopped $(basename "$f" .pid) (pid $pid)"
  done
  rm -f /run/slurmd.pid /run/slurmctld.pid
}

up() { scontrol ping 2>/dev/null | grep -q "is UP"; }

start() {
  local t0 t1 host
  t0=$(date +%s)
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real Slurm installation"
  fi
  stop  # a previous run's daemons (same machine reused): start from a clean state

  export DEBIAN_FRONTEND=noninteractive
  local pkgs="slurmctld slurmd slurm-client"
  [ "$AUTH" = munge ] && pkgs="$pkgs munge"
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
    say "installing $pkgs (apt-get)"
    apt-get update -qq || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null || die "apt-get install $pkgs failed"
  fi
  t1=$(date +%s)

  host=$(hostname -s)
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*   # no jobs from an earlier run come back
  chown slurm:slurm /var/spool/slurmctld "$LOGS"
  : > "$LOGS/slurmctld.log"; : > "$LOGS/slurmd.log"; chown slurm:slurm "$LOGS/slurmctld.log"
  cat > "$CONF" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=$host
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/$AUTH
CredType=cred/$AUTH
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
$(slurmd -C | head -1) Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat > /etc/slurm/gres.conf <<EOF
$MARK
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
EOF

  if [ "$AUTH" = munge ]; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    munge -n | unmunge >/dev/null || die "munge does not work"
  fi
  /usr/sbin/slurmctld || die "slurmctld did not start"
  /usr/sbin/slurmd || die "slurmd did not start"

  local deadline=$(( $(date +%s) + START_TIMEOUT_S ))
  until up; do [ "$(date +%s)" -lt "$deadline" ] || die "slurmctld not UP after ${START_TIMEOUT_S} s"; sleep 0.5; done
  until [ "$(sinfo -h -n "$host" -o %T 2>/dev/null)" = idle ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { sinfo -R >&2 || true; die "node $host not idle after ${START_TIMEOUT_S} s"; }
    sleep 0.5
  done
  sinfo >&2
  say "Slurm is up on $host: install $((t1 - t0)) s, configure+start $(( $(date +%s) - t1 )) s, total $(( $(date +%s) - t0 )) s"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if up; then sinfo; else echo "Slurm is not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
