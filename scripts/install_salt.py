#!/usr/bin/env python3
"""Install a Salt release (the test and demo master) into the running Python.

Salt's releases pin ``certifi`` to a version newer than the package index may
serve. This installs Salt itself with ``--no-deps``, reads its declared
requirements from the installed metadata, relaxes only the ``certifi`` floor
and installs the rest, so ``salt-master`` and ``salt-minion`` run.

Usage: ``python scripts/install_salt.py [VERSION]`` (default: $SALT_VERSION or 3008.5).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

DEFAULT_VERSION = "3008.5"
#: Requirements that are relaxed to what the index serves.
RELAXED = {"certifi"}


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("salt")
    except importlib.metadata.PackageNotFoundError:
        return None


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    version = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SALT_VERSION", DEFAULT_VERSION)
    marker = os.path.join(sys.prefix, f".salt-{version}-deps-ok")
    if installed_version() == version and os.path.exists(marker):
        print(f"salt {version} already installed")
        return 0
    if installed_version() != version:
        pip("--no-deps", f"salt=={version}")
    from packaging.requirements import Requirement  # pip vendors packaging; setuptools needs it too

    requirements = []
    for line in importlib.metadata.distribution("salt").requires or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name.lower() in RELAXED:
            requirements.append(requirement.name)
        else:
            requirement.marker = None
            requirements.append(str(requirement))
    # Salt's transports need pyzmq even where its metadata does not list it.
    requirements.append("pyzmq>=25.1.1")
    pip(*requirements)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(version + "\n")
    print(f"salt {installed_version()} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
