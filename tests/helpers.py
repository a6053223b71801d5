"""Shared by the tests: where things are, and how to run volley as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "target" / "servers"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FAULTY = FIXTURES / "faulty_server.py"
# Marks every process a test starts, so the suite can find any it left behind.
RUN_MARK = "VOLLEY_TEST_RUN"

# Short runs: tests check behaviour, not precision.
QUICK = ["--warmup", "0.1s", "--run-time", "0.2s", "--min-runs", "3", "--quiet"]
# A run of about a second that only has to work, not to be precise.
BRIEF = ["--max-time", "1s", "--precision", "50%", *QUICK]


def not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (jq, JavaScript and Go refuse it)")


def strict_loads(text: str) -> Any:
    """Parse JSON the way strict parsers do: NaN and Infinity are errors."""
    return json.loads(text, parse_constant=not_json)


@dataclass
class Completed:
    status: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        return strict_loads(self.stdout)


def volley(*args: str | Path, timeout: float = 60, env: dict[str, str] | None = None) -> Completed:
    """Run ``python -m volley ARGS`` to completion (bounded) and capture its output."""
    command = [sys.executable, "-m", "volley", *map(str, args)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Completed(done.returncode, done.stdout, done.stderr)


def bench_command(*args: str | Path) -> list[str]:
    """The command line of ``volley bench ARGS``, for tests that start it themselves."""
    return [sys.executable, "-m", "volley", "bench", *map(str, args)]


def bench(*args: str | Path, timeout: float = 60) -> Completed:
    return volley("bench", *args, timeout=timeout)


def check(*args: str | Path, timeout: float = 90) -> Completed:
    return volley("check", *args, timeout=timeout)


def server(name: str) -> Path:
    path = SERVERS / name
    if not path.exists():
        subprocess.run(["make", f"server-{name}"], cwd=ROOT, check=True, capture_output=True)
    return path
