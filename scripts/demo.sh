#!/usr/bin/env bash
# Install into .venv, then start the API in front of a throw-away salt-master with two minions.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
. scripts/lib.sh
ensure_venv
"$VENV/bin/python" -m pip install -q --disable-pip-version-check '.[demo]'
"$VENV/bin/python" scripts/install_salt.py "${SALT_VERSION:-3008.5}"
exec "$VENV/bin/python" -m saltapi_twisted.demo "$@"
