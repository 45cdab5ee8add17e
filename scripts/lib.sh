# Shared by scripts/test.sh and scripts/demo.sh.
ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 'setuptools>=64' wheel packaging
}

# Debian packages the tests drive (openssl for TLS checks, chromium for browser tests).
ensure_system_packages() {
    local missing=()
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
