#!/usr/bin/env bash
# scripts/services.sh - manage the background servers outside `make up` / `make test`.
#   start    start the "test" servers (PostgreSQL, NATS, SMTP catcher) on new ports and
#            leave them running; the variables for `cargo nextest run` by hand are in
#            .data/test.env  (set -a; . .data/test.env; set +a)
#   stop     stop everything started by up.sh / test.sh / start (by their pid files)
#   status   show what runs
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ORDERS_ROOT"

status_of() {
    local name=$1 pg
    if pid_alive "$DATA_DIR/orders-$name.pid" orders; then
        echo "$name: orders service running (pid $(cat "$DATA_DIR/orders-$name.pid"))"
    fi
    if [ -e "$DATA_DIR/pg-$name" ] && find_pg_bindir; then
        pg=$(readlink -f "$DATA_DIR/pg-$name")
        if pg_is_running "$pg"; then
            echo "$name: PostgreSQL on 127.0.0.1:$(pg_running_port "$pg") (data $pg)"
        fi
    fi
    if pid_alive "$DATA_DIR/nats-$name.pid" nats-server; then
        echo "$name: NATS on 127.0.0.1:$(cut -d' ' -f1 "$DATA_DIR/nats-$name.port")"
    fi
    if pid_alive "$DATA_DIR/smtp-$name.pid" aiosmtpd; then
        echo "$name: SMTP catcher on 127.0.0.1:$(cat "$DATA_DIR/smtp-$name.port") (Maildir $DATA_DIR/maildir-$name)"
    fi
}

case ${1:-} in
start)
    exec bash "$ORDERS_ROOT/scripts/test.sh" --start-only
    ;;
stop)
    # A running `make up` stops its own servers once its service exits: stop the
    # service, give up.sh a moment to do that, then stop whatever is left.
    if pid_alive "$DATA_DIR/orders-dev.pid" orders; then
        stop_pid "$DATA_DIR/orders-dev.pid" orders "orders service 'dev'"
        for _ in $(seq 1 300); do
            pid_alive "$DATA_DIR/up.run" up.sh || break
            sleep 0.1
        done
    fi
    for name in dev test; do
        stop_instance "$name"
    done
    rm -f "$DATA_DIR/test.env"
    ;;
status)
    status_of dev
    status_of test
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
