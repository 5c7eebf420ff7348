#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for CI and the tests marked `slurm`:
#   bash scripts/slurm_cluster.sh start   # installs the packages when missing, starts every daemon, waits
#   bash scripts/slurm_cluster.sh stop    # stops every daemon it started, by PID
#   bash scripts/slurm_cluster.sh conf    # prints the slurm.conf path (export SLURM_CONF=<it> for sbatch/sinfo)
# Needs root on Debian/Ubuntu; works without systemd or cgroups (proctrack/linuxproc, task/none). Everything
# (configs, munge key, database, spool, logs, PID files) lives in LORAZOO_SLURM_DIR (default
# /tmp/lorazoo-slurm); nothing under /etc is changed. munged listens on its default socket (/run/munge) and the
# daemons on Slurm's default ports (6817-6819), so no other Slurm may run here. Exit status 3: this machine
# cannot run Slurm.
# Settings that worked on a 2-core Debian VM with Slurm 22.05 (issue 26): DefMemPerCPU keeps one job from
# taking all memory; accounting through slurmdbd because submitit reads job states from sacct.
set -euo pipefail

STATE=${LORAZOO_SLURM_DIR:-/tmp/lorazoo-slurm}
DB_PORT=${LORAZOO_SLURM_DB_PORT:-33061}
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)
export SLURM_CONF=$STATE/slurm.conf

say() { echo "[slurm_cluster] $*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

install_packages() {
    local missing=0
    for tool in slurmctld slurmd slurmdbd munged mariadbd sacct; do
        command -v "$tool" >/dev/null || missing=1
    done
    [ "$missing" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root" 3
    command -v apt-get >/dev/null || die "Slurm is not installed and this machine has no apt-get" 3
    say "installing ${PACKAGES[*]} (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    # no systemd here: the packages' postinst cannot start services (and must not)
    if ! { apt-get install -y "${PACKAGES[@]}" || { apt-get update && apt-get install -y "${PACKAGES[@]}"; }; } \
        >"${TMPDIR:-/tmp}/lorazoo-slurm-apt.log" 2>&1; then
        die "apt-get install ${PACKAGES[*]} failed (see ${TMPDIR:-/tmp}/lorazoo-slurm-apt.log)" 3
    fi
}

write_configs() {
    local cpus mem_mb
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys OMP_NUM_THREADS (the test suite sets 1)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)
    mkdir -p "$STATE"/{munge,ctld,spool,log,run}
    cat >"$STATE/slurm.conf" <<EOF
ClusterName=lorazoo
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem_mb / cpus < 2000 ? mem_mb / cpus : 2000))
ReturnToService=2
KillWait=5
MinJobAge=600
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
NodeName=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$STATE/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=lorazoo
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/slurmdbd.conf"
}

start_munge() {
    # munged listens on its default socket: slurmctld's connection to slurmdbd ignores AuthInfo=socket=
    local dir=$STATE/munge socket=/run/munge/munge.socket.2
    if [ -S "$socket" ] && munge -n -S "$socket" >/dev/null 2>&1; then
        die "a munged not started by this script already answers on $socket; stop it first" 3
    fi
    mkdir -p /run/munge
    chown munge:munge "$dir" /run/munge
    chmod 700 "$dir"
    if [ ! -f "$dir/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$dir/munge.key"
        chmod 400 "$dir/munge.key"
    fi
    # --force: the state dir may sit under a world-writable /tmp, which munged otherwise refuses
    runuser -u munge -- munged --force --socket="$socket" --key-file="$dir/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
    cp "$dir/munged.pid" "$STATE/run/munged.pid"
    chmod 755 "$dir"
}

start_database() {
    local data=$STATE/mysql sock=$STATE/mysql-run/mysql.sock
    mkdir -p "$data" "$STATE/mysql-run"
    chown mysql:mysql "$data" "$STATE/mysql-run"  # mariadbd runs as mysql: its socket, PID and log live here
    if [ ! -d "$data/mysql" ]; then
        mariadb-install-db --user=mysql --datadir="$data" --auth-root-authentication-method=socket \
            >"$STATE/log/mariadb-install.log" 2>&1
    fi
    mariadbd --user=mysql --datadir="$data" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --socket="$sock" --pid-file="$STATE/mysql-run/mariadbd.pid" \
        --log-error="$STATE/mysql-run/mariadbd.log" --skip-name-resolve >/dev/null 2>&1 &
    echo $! >"$STATE/run/mariadbd.pid"
    wait_for "mariadbd" mariadb --socket="$sock" -e "select 1"
    mariadb --socket="$sock" -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'lorazoo';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'lorazoo';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

wait_for() {  # wait_for <what> <command...>: poll the command (each try at most 5 s) for up to 60 s
    local what=$1 deadline=$((SECONDS + 60))
    shift
    while [ "$SECONDS" -lt "$deadline" ]; do
        timeout 5 "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up within 60 s (logs: $STATE/log)" 3
}

node_idle() { [ "$(timeout 5 sinfo -h -n localhost -o %t 2>/dev/null)" = idle ]; }

start() {
    if [ -f "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null && node_idle; then
        say "already running ($STATE)"
        return 0
    fi
    stop quiet
    trap 'stop quiet' EXIT  # a cluster that did not come up is not left half running
    trap 'exit 130' INT TERM
    install_packages
    write_configs
    start_munge
    start_database
    slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for "slurmdbd" bash -c "echo | timeout 2 bash -c '</dev/tcp/127.0.0.1/6819'"
    sacctmgr -i add cluster lorazoo >/dev/null 2>&1 || true
    slurmctld -f "$SLURM_CONF"
    slurmd -D -N localhost -f "$SLURM_CONF" >"$STATE/log/slurmd.out" 2>&1 &
    echo $! >"$STATE/run/slurmd.pid"
    wait_for "the node" bash -c '[ "$(sinfo -h -n localhost -o %t)" = idle ]'
    wait_for "sacct" sacct -n -X
    trap - EXIT INT TERM
    say "up: SLURM_CONF=$SLURM_CONF"
}

stop() {
    local pidfile pid
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        pidfile=$STATE/run/$name.pid
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$pidfile"
    done
    [ "${1:-}" = quiet ] || say "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
conf) echo "$SLURM_CONF" ;;
*) die "usage: $0 start|stop|conf" 2 ;;
esac
