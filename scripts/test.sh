#!/usr/bin/env bash
# scripts/test.sh - `make test` (and CI through .ci/run): install what is missing, start
# fresh PostgreSQL, NATS (JetStream) and SMTP catcher instances named "test" (own data
# dirs and new free ports, apart from `make up`'s "dev" ones), then run
#   cargo fmt --all --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   cargo nextest run --workspace
# and stop the servers on exit. Exits non-zero on the first failure.
#
# The variables the tests read are also written to .data/test.env, so that while the
# servers run (`make services` starts them in the background) a developer can
#   set -a; . .data/test.env; set +a; cargo nextest run -p ...
#
# --services-only (or SERVICES_ONLY=1): start the servers, print the variables, run a
# smoke check of each server, stop them. Needs no Rust code.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ORDERS_ROOT"

SERVICES_ONLY=${SERVICES_ONLY:-0}
KEEP_RUNNING=0
for arg in "$@"; do
    case $arg in
    --services-only) SERVICES_ONLY=1 ;;
    # Used by `make services`: start the test servers and leave them running.
    --start-only) KEEP_RUNNING=1 ;;
    *) die "unknown argument: $arg (known: --services-only, --start-only)" ;;
    esac
done
INSTANCE="test"
TEST_ENV=$DATA_DIR/test.env

claim_run test

ensure_packages
ensure_venv
ensure_browser

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    local status=$?
    trap '' INT TERM
    if [ "$KEEP_RUNNING" != 1 ]; then
        stop_instance "$INSTANCE"
        rm -f "$TEST_ENV"
    fi
    release_run test
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# fresh: wiped data and new ports on every run, so nothing from an earlier (or
# aborted) run leaks into this one.
start_pg "$INSTANCE" fresh
start_nats "$INSTANCE" fresh
start_smtp "$INSTANCE" fresh

# The role is a superuser: the tests create a database per test from this URL.
export ORDERS_TEST_DATABASE_URL="postgres://$PG_ROLE@127.0.0.1:$PG_PORT/postgres"
export ORDERS_TEST_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export ORDERS_TEST_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT"
export ORDERS_TEST_MAILDIR="$MAILDIR"
export ORDERS_TEST_PG_BINDIR="$PG_BINDIR"
export NATS_SERVER_BIN
# The browser tests: the venv's Python (with Playwright and axe-core) and Chromium.
export ORDERS_TEST_PYTHON="$PYTHON"
export ORDERS_TEST_CHROMIUM="$CHROMIUM_BIN"
test_vars=(ORDERS_TEST_DATABASE_URL ORDERS_TEST_NATS_URL ORDERS_TEST_SMTP_URL ORDERS_TEST_MAILDIR ORDERS_TEST_PG_BINDIR NATS_SERVER_BIN ORDERS_TEST_PYTHON ORDERS_TEST_CHROMIUM)

{
    echo "# written by scripts/test.sh for the running test servers; valid while they run"
    for var in "${test_vars[@]}"; do
        printf '%s=%q\n' "$var" "${!var}"
    done
} >"$TEST_ENV"

log "test servers are up; variables (also in $TEST_ENV):"
for var in "${test_vars[@]}"; do
    printf '    %s=%s\n' "$var" "${!var}" >&2
done

if [ "$KEEP_RUNNING" = 1 ]; then
    log "leaving the test servers running; stop them with: make down"
    exit 0
fi

smoke_check() {
    log "smoke check: PostgreSQL"
    [ "$(psql_q "$ORDERS_TEST_DATABASE_URL" -tAc 'select 1')" = 1 ] || die "select 1 failed"
    psql_q "$ORDERS_TEST_DATABASE_URL" -c 'create database smoke_check' -c 'drop database smoke_check'
    "$ORDERS_TEST_PG_BINDIR/pgbench" --version >/dev/null || die "pgbench does not run"

    log "smoke check: NATS (JetStream enabled) and SMTP (EHLO, one mail into the Maildir)"
    "$PYTHON" - <<'EOF'
import json, os, smtplib, socket, sys, time, uuid
from email.message import EmailMessage
from urllib.parse import urlsplit

nats = urlsplit(os.environ["ORDERS_TEST_NATS_URL"])
with socket.create_connection((nats.hostname, nats.port), timeout=5) as s:
    line = s.makefile("rb").readline().decode()
if not line.startswith("INFO "):
    sys.exit(f"NATS: unexpected greeting {line!r}")
info = json.loads(line[5:])
if not info.get("jetstream"):
    sys.exit("NATS: JetStream is not enabled")
print(f"    NATS {info.get('version')} with JetStream at {nats.hostname}:{nats.port}")

smtp = urlsplit(os.environ["ORDERS_TEST_SMTP_URL"])
token = str(uuid.uuid4())
msg = EmailMessage()
msg["From"] = "Orders <orders@localhost>"
msg["To"] = "smoke@example.test"
msg["Subject"] = f"smoke {token}"
msg.set_content(f"smoke check {token}\n")
with smtplib.SMTP(smtp.hostname, smtp.port, timeout=5) as c:
    code, _ = c.ehlo()
    if code != 250:
        sys.exit(f"SMTP: EHLO answered {code}")
    c.send_message(msg)
new = os.path.join(os.environ["ORDERS_TEST_MAILDIR"], "new")
deadline = time.time() + 5
while time.time() < deadline:
    for name in os.listdir(new):
        with open(os.path.join(new, name), encoding="utf-8", errors="replace") as f:
            if token in f.read():
                print(f"    SMTP mail delivered to {os.path.join(new, name)}")
                sys.exit(0)
    time.sleep(0.1)
sys.exit(f"SMTP: the mail did not reach {new}")
EOF
    log "smoke check passed"
}

if [ "$SERVICES_ONLY" = 1 ]; then
    smoke_check
    exit 0
fi

# ---- the checks --------------------------------------------------------------------
# rustfmt and clippy are rustup components a minimal toolchain may lack.
for component in fmt:rustfmt clippy:clippy; do
    if ! cargo "${component%%:*}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo ${component%%:*} is missing and there is no rustup to add ${component#*:}"
        log "adding rustup component ${component#*:}"
        rustup component add "${component#*:}"
    fi
done
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing; installing it (cargo install cargo-nextest --locked)"
    cargo install cargo-nextest --locked
fi

log "cargo fmt --all --check"
cargo fmt --all --check
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo nextest run --workspace"
cargo nextest run --workspace
log "all checks passed"
