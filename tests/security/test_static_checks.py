"""Static checks of the package: ruff, mypy and bandit (checklist §5.1, "Static analysis").

The configurations are ``ruff.toml`` and ``mypy.ini`` at the repository root;
bandit runs with ``-ll`` (medium and high) and accepts only findings justified
inline with ``# nosec <id>``. A missing tool is a failure, never a skip: the
tools come with the ``test`` extras.
"""

from __future__ import annotations

import ast
import re
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


# --------------------------------------------------------------------------
# Checklist §5.1 "Secret comparison": secrets the API holds are compared with
# hmac.compare_digest; identifiers it mints come from ``secrets``.

_SECRET_WORDS = ("token", "digest", "password", "secret")


def _secret_names(node: ast.AST) -> list[str]:
    found = []
    for child in ast.walk(node):
        name = child.id if isinstance(child, ast.Name) else child.attr if isinstance(child, ast.Attribute) else None
        if name and any(word in name.lower() for word in _SECRET_WORDS):
            found.append(name)
    return found


def _is_length_or_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("len", "isinstance")


def secret_comparisons(source: str) -> list[tuple[int, str]]:
    """``==``/``!=``/``in`` between values whose names say they are tokens, digests, passwords or secrets."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        if any(_is_length_or_constant(side) for side in sides):
            continue
        if isinstance(node.ops[0], (ast.In, ast.NotIn)):
            # membership of a secret value in a container (a dict of secrets, a set of tokens)
            if _secret_names(node.left):
                found.append((node.lineno, ast.unparse(node)))
        elif any(_secret_names(side) for side in sides):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_secret_comparisons_are_timing_safe() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in sorted((ROOT / PACKAGE).rglob("*.py"))
        for line, text in secret_comparisons(path.read_text())
    ]
    assert offenders == [], "compare secrets with hmac.compare_digest:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("if token == other: pass", True),
        ("ok = stream.token != token", True),
        ("ok = token_digest(token) in self._revoked", True),
        ("ok = hmac.compare_digest(token, other)", False),
        ("ok = len(token) != length", False),
        ("ok = token is None", False),
        ("ok = token == ''", False),
        ("ok = key in ('token', 'password')", False),
    ],
)
def test_secret_comparison_lint_itself(source: str, flagged: bool) -> None:
    assert bool(secret_comparisons(source)) is flagged


def test_minted_identifiers_use_secrets() -> None:
    """No ``random`` module anywhere in the package (identifiers come from ``secrets``)."""
    users = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / PACKAGE).rglob("*.py"))
        if re.search(r"^\s*(import random|from random import)", path.read_text(), re.MULTILINE)
    ]
    assert users == []
