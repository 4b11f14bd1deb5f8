#!/usr/bin/env bash
# parkspot's full check: ruff format, ruff check, mypy, then pytest twice - embedded (SQLite,
# in-process cache/bus) and on PostgreSQL + Redis. Extra arguments go to both pytest runs.
#
# PostgreSQL and Redis are looked for at PARKSPOT_TEST_DATABASE_URL / PARKSPOT_TEST_REDIS_URL
# (default: the local servers on loopback). Without CI=true, when either is unreachable the
# second pass is reported as NOT RUN. With CI=true the script tries to start local servers and
# fails if they still cannot be reached: CI never skips the second pass silently.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
if ! parkspot_bootstrap "$root"; then
    echo "test.sh: could not prepare .venv" >&2
    exit 1
fi

pg_url=${PARKSPOT_TEST_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/postgres}
redis_url=${PARKSPOT_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
# The suite configures parkspot itself: no PARKSPOT_* setting of the caller's shell leaks in.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep '^PARKSPOT_' || true)
in_ci=false
if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then
    in_ci=true
fi

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
names=()
results=()

record() {
    names+=("$1")
    results+=("$2")
}

# step NAME COMMAND...: runs the command and records passed / FAILED.
step() {
    local name=$1 code
    shift
    echo
    echo "==> $name"
    "$@"
    code=$?
    if [[ $code -eq 0 ]]; then
        record "$name" "passed"
    elif [[ $name == pytest* && $code -eq 5 ]]; then
        record "$name" "FAILED (no tests were collected)"
    else
        record "$name" "FAILED (exit $code)"
    fi
}

# unreachable URL DEFAULT_PORT: prints why the server cannot be reached; false when it can.
unreachable() {
    .venv/bin/python - "$1" "$2" <<'PY'
import socket
import sys
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
host, port = url.hostname or "127.0.0.1", url.port or int(sys.argv[2])
try:
    socket.create_connection((host, port), timeout=1).close()
except OSError as exc:
    print(f"{host}:{port} unreachable ({exc.strerror or exc})")
    sys.exit(0)
sys.exit(1)
PY
}

# services_down: one line per unreachable service; empty when both answer.
services_down() {
    local why
    if why=$(unreachable "$pg_url" 5432); then
        echo "PostgreSQL $why"
    fi
    if why=$(unreachable "$redis_url" 6379); then
        echo "Redis $why"
    fi
}

start_services() {
    local version
    if unreachable "$pg_url" 5432 >/dev/null; then
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        if [[ -n $version ]] && command -v pg_ctlcluster >/dev/null; then
            echo "==> starting PostgreSQL $version"
            pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
                echo "could not start PostgreSQL $version" >&2
        else
            echo "no local PostgreSQL cluster to start" >&2
        fi
    fi
    if unreachable "$redis_url" 6379 >/dev/null; then
        if command -v redis-server >/dev/null; then
            echo "==> starting Redis"
            redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no ||
                echo "could not start Redis" >&2
        else
            echo "no redis-server to start" >&2
        fi
    fi
    for _ in $(seq 20); do
        [[ -z $(services_down) ]] && return 0
        sleep 0.5
    done
}

step "ruff format" .venv/bin/ruff format --check .
step "ruff check" .venv/bin/ruff check .
step "mypy" .venv/bin/mypy
step "pytest embedded" .venv/bin/pytest --junitxml="$reports/embedded.xml" "$@"

second="pytest postgresql+redis"
down=$(services_down)
if [[ -n $down && $in_ci == true ]]; then
    echo
    echo "==> CI: $(echo "$down" | paste -sd ';' -); trying to start the local servers"
    start_services
    down=$(services_down)
fi
if [[ -z $down ]]; then
    step "$second" env PARKSPOT_TEST_DATABASE_URL="$pg_url" PARKSPOT_TEST_REDIS_URL="$redis_url" \
        .venv/bin/pytest --junitxml="$reports/postgresql.xml" "$@"
elif [[ $in_ci == true ]]; then
    record "$second" "FAILED (not run: $(echo "$down" | paste -sd ';' -))"
else
    record "$second" "NOT RUN ($(echo "$down" | paste -sd ';' -))"
fi

echo
echo "==================== parkspot checks ===================="
status=0
for i in "${!names[@]}"; do
    printf '%-26s %s\n' "${names[$i]}" "${results[$i]}"
    [[ ${results[$i]} == FAILED* ]] && status=1
done
# Test totals over the pytest passes that ran, as the last line.
.venv/bin/python - "$reports" <<'PY'
import pathlib
import sys
import xml.etree.ElementTree as ET

totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
for report in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    try:
        suites = list(ET.parse(report).getroot().iter("testsuite"))
    except ET.ParseError:
        continue
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"tests: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
exit $status
