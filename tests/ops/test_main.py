"""The ``python -m ops`` dispatcher: help, unknown commands and the command list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def run_ops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )


def test_help_lists_commands_and_succeeds():
    result = run_ops("--help")

    assert result.returncode == 0
    for command in ("run", "teardown", "tunnel", "password"):
        assert f"  {command} " in result.stdout


def test_unknown_command_fails_with_usage():
    result = run_ops("deploy")

    assert result.returncode == 2
    assert "usage: python -m ops COMMAND" in result.stderr


def test_no_command_fails_with_usage():
    result = run_ops()

    assert result.returncode == 2
    assert "commands:" in result.stderr
