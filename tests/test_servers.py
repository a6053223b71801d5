"""Every built server (target/servers/, ``make servers``) keeps the contract and survives a
short volley-bench run."""

from __future__ import annotations

import os

import pytest
from helpers import QUICK, SERVERS, bench, check, strict_loads

# Every test here starts real servers or volley processes (the slow tier).
pytestmark = pytest.mark.real

BUILT = (
    sorted(p.name for p in SERVERS.glob("*") if p.is_file() and os.access(p, os.X_OK))
    if SERVERS.is_dir()
    else []
)


@pytest.mark.parametrize("name", BUILT)
def test_server_passes_check(name):
    done = check("--json", "-", SERVERS / name)
    report = strict_loads(done.stdout) if done.stdout else {}
    failures = [c for c in report.get("checks", []) if not c["passed"]]
    assert done.status == 0, failures or done.stderr
    assert report["passed"] == report["total"] > 0


@pytest.mark.parametrize("name", BUILT)
def test_server_survives_a_short_bench(name):
    done = bench(
        "--clients",
        "8",
        "--max-time",
        "3s",
        *QUICK,
        "--json",
        "-",
        SERVERS / name,
    )
    assert done.status in (0, 3), done.stderr
    result = done.json()
    assert result["n"] > 0
    assert not result.get("error"), result["error"]
