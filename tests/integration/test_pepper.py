"""salt-pepper, a real client of the API, against the server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from saltapi_twisted.sandbox import salt_program

from ..conftest import Api


def pepper(api: Api, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        salt_program("pepper"), "-u", api.url, "-a", "file", "--username", "saltdev", "--password", "saltdev",
        "--non-interactive", "-x", str(tmp_path / "pepper-cache"), "--out=json", *args,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)  # noqa: S603


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["*", "test.ping"], ['"minion-1": true', '"minion-2": true']),
        (["--client", "local_async", "*", "test.ping"], ['"jid"', '"minions"']),
        (["--client", "runner", "test.arg", "a", "b=c"], ['"args"', '"a"']),
        (["--client", "wheel", "key.list_all"], ['"minions"', '"minion-1"']),
        (["--run-uri", "*", "test.ping"], ['"minion-1": true']),
        (["--fail-if-incomplete", "*", "test.ping"], ['"minion-2": true']),
    ],
    ids=["local", "local_async", "runner", "wheel", "run-uri", "fail-if-incomplete"],
)
def test_pepper_commands(api: Api, tmp_path: Path, args: list[str], expected: list[str]) -> None:
    result = pepper(api, tmp_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout, result.stdout


def test_pepper_fail_if_incomplete_fails_when_minions_do_not_return_in_time(api: Api, tmp_path: Path) -> None:
    result = pepper(api, tmp_path, "--fail-if-incomplete", "-t", "10", "minion-1", "test.sleep", "20")
    assert result.returncode != 0
    assert '"Failed"' in result.stdout and "minion-1" in result.stdout
