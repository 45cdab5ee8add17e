"""Static checks of the package: ruff, mypy and bandit (checklist §5.1, "Static analysis").

The configurations are ``ruff.toml`` and ``mypy.ini`` at the repository root;
bandit runs with ``-ll`` (medium and high) and accepts only findings justified
inline with ``# nosec <id>``. A missing tool is a failure, never a skip: the
tools come with the ``test`` extras.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "saltapi_twisted"


def tool(name: str) -> str:
    """The path of a check tool installed beside this Python (or on PATH)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: install the test extras (pip install -e '.[test]')")
    return found


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed tools, no shell
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_ruff() -> None:
    result = run([tool("ruff"), "check", "--no-cache", "--output-format", "concise", PACKAGE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    tool("mypy")
    try:
        import mypy_zope  # noqa: F401
    except ImportError:
        pytest.fail("mypy-zope is not installed: install the test extras (pip install -e '.[test]')")
    cache = Path(tempfile.gettempdir()) / "saltapi_twisted-mypy-cache"  # outside the work tree
    result = run([tool("mypy"), "--cache-dir", str(cache), PACKAGE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_bandit() -> None:
    result = run([tool("bandit"), "-q", "-r", PACKAGE, "-ll", "-f", "custom",
                  "--msg-template", "{relpath}:{line}: {test_id} {severity} {msg}"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_shell_yaml_load_or_pickle() -> None:
    """Checklist §5.1: no ``shell=True``, unsafe ``yaml.load`` or ``pickle`` in the package."""
    offenders = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "shell=True" in code or "import pickle" in code or "pickle." in code:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            if "yaml.load(" in code and "Loader=_UniqueKeyLoader" not in code:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            if "yaml.unsafe_load" in code or "yaml.full_load" in code or "FullLoader" in code:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
