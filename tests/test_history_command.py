"""volley history show | path | clear, through the command line (no sockets)."""

from __future__ import annotations

import re
from datetime import datetime

from typer.testing import CliRunner

from volley.cli.app import app
from volley.measure import history
from volley.numbers import stats

KEY = {"clients": 2, "client_cpus": [1]}


def keep(place, server: str, means: list[float]) -> history.History:
    found = history.History(place, KEY | {"server": server})
    for mean in means:
        found.add(
            history.Sitting(
                datetime.now().isoformat(timespec="seconds"),
                {name: mean for name in stats.STATISTICS},
                {name: 1.0e4 for name in stats.STATISTICS},
            )
        )
    return found


def test_path_names_the_place_and_off_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VOLLEY_HISTORY", str(tmp_path / "h"))
    done = CliRunner().invoke(app, ["history", "path"])
    assert done.exit_code == 0 and done.output.strip() == str(tmp_path / "h")
    off = CliRunner().invoke(app, ["history", "path", "--history", "off"])
    assert off.exit_code == 2 and "the history is off" in off.output


def test_show_lists_each_configuration_with_its_sittings(tmp_path):
    keep(tmp_path, "aaaa", [15e3, 16e3])
    keep(tmp_path, "bbbb", [40e3])
    (tmp_path / "stray.jsonl").write_text('{"not": "a history"}\n')
    done = CliRunner().invoke(app, ["history", "show", "--history", str(tmp_path)])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0] == f"2 configurations in {tmp_path}:"
    assert lines[1].split()[:6] == ["server", "clients", "client", "CPUs", "server", "CPUs"]
    rows = {line.split()[0]: re.split(r"\s{2,}", line) for line in lines[2:]}
    # server, clients, client CPUs, server CPUs, sittings, last, means, file
    assert rows["aaaa"][:5] == ["aaaa", "2", "1", "-", "2"]
    assert rows["aaaa"][6] == "15.00 us, 16.00 us"
    assert rows["bbbb"][:5] == ["bbbb", "2", "1", "-", "1"] and rows["bbbb"][6] == "40.00 us"
    assert rows["aaaa"][7] == history.History(tmp_path, KEY | {"server": "aaaa"}).path.name
    empty = CliRunner().invoke(app, ["history", "show", "--history", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "no sittings kept" in empty.output


def test_clear_forgets_only_with_an_answer(tmp_path):
    kept = keep(tmp_path, "aaaa", [15e3])
    refused = CliRunner().invoke(app, ["history", "clear", "--history", str(tmp_path)], input="n\n")
    assert refused.exit_code != 0 and kept.path.exists()
    done = CliRunner().invoke(app, ["history", "clear", "--history", str(tmp_path), "--yes"])
    assert done.exit_code == 0 and "forgot the sittings of 1 configuration" in done.output
    assert not kept.path.exists() and history.kept(tmp_path) == []
