# shellcheck shell=bash
# Sourced by serve.sh and test.sh: find Python 3.11+, make .venv, and install the project
# (with its dev tools) only when pyproject.toml changed since the last install.

parkspot_find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "parkspot needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

# parkspot_bootstrap ROOT: afterwards ROOT/.venv/bin has parkspot, pytest, ruff and mypy.
parkspot_bootstrap() {
    local root=$1
    local venv=$root/.venv
    local stamp=$venv/.parkspot-install.sha256
    local python wanted installed
    if [[ ! -x $venv/bin/python ]]; then
        python=$(parkspot_find_python) || return 1
        echo "==> creating $venv ($("$python" --version 2>&1))"
        if ! "$python" -m venv "$venv"; then
            echo "could not create the virtual environment; on Debian/Ubuntu:" \
                "apt-get install python3-venv" >&2
            return 1
        fi
    fi
    wanted=$("$venv/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
        "$root/pyproject.toml") || return 1
    installed=$(cat "$stamp" 2>/dev/null || true)
    if [[ $wanted != "$installed" ]]; then
        echo "==> installing parkspot into .venv (pyproject.toml is new or changed)"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --editable "$root[dev]" || return 1
        echo "$wanted" >"$stamp"
    fi
}
