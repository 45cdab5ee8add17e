#!/usr/bin/env bash
# Install everything into .venv (Python 3.11+), then run the whole test suite.
# Usage: scripts/test.sh [pytest arguments]     SALT_VERSION=3006.30 picks another master.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
. scripts/lib.sh
ensure_venv
ensure_system_packages
"$VENV/bin/python" -m pip install -q --disable-pip-version-check '.[test]'
"$VENV/bin/python" scripts/install_salt.py "${SALT_VERSION:-3008.5}"
exec "$VENV/bin/python" -m pytest "$@"
