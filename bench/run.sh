#!/bin/sh
# One command for the benchmarks: installs what they need, then runs bench/run.py.
#   bench/run.sh [--quick] [--rounds N] [--only SCENARIO ...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
python="$repo/.venv/bin/python"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        echo "bench: wrk is missing; install it (apt-get install wrk) and run again" >&2
        exit 2
    fi
fi
if [ ! -x "$python" ]; then
    echo "bench: $python is missing; run scripts/test.sh (or create .venv and pip install -e '.[test]') first" >&2
    exit 2
fi
# Salt itself (salt-master, salt-minion, salt-api with rest_tornado), as the test suite installs it
"$python" -c 'import salt' 2>/dev/null || "$python" "$repo/scripts/install_salt.py"
# rest_cherrypy, the stream client (websockets; uvloop when available), psutil, pyzmq
for module in cherrypy:CherryPy websockets:websockets uvloop:uvloop psutil:psutil zmq:pyzmq msgpack:msgpack; do
    "$python" -c "import ${module%%:*}" 2>/dev/null || "$python" -m pip install --quiet "${module#*:}"
done
exec "$python" "$here/run.py" "$@"
