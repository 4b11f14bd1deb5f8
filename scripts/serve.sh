#!/usr/bin/env bash
# Run parkspot locally with demo data: bootstrap .venv, migrate, seed, serve on 127.0.0.1:8000.
# Extra arguments go to `parkspot serve` (e.g. --port 9000). SQLite under ./var unless
# PARKSPOT_DATABASE_URL says otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
parkspot_bootstrap "$root"

.venv/bin/parkspot migrate
.venv/bin/parkspot seed-demo
exec .venv/bin/parkspot serve "$@"
