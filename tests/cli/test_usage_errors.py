"""Bad usage is one line on stderr and exit code 2, never a box or a traceback."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "arguments",
    [
        ["emit", "run_x", "phase_changed", "--payload", "{bad"],
        ["emit", "run_x", "phase_changed", "--payload", "[1]"],
        ["keys", "create", "--org", "nope"],
        ["tokens", "create", "--run", "run_x", "--ttl", "25h"],
        ["prune", "--ended-before", "garbage"],
        ["serve", "--port", "abc"],
        ["no-such-command"],
    ],
)
def test_usage_error_is_one_line_and_exit_two(arguments: list[str]) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "app.cli.main", *arguments],
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr.startswith("error: ")
    assert finished.stderr.count("\n") == 1
