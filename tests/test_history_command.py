"""volley history show | path | clear, through the command line (no sockets)."""

from __future__ import annotations

from datetime import datetime

from typer.testing import CliRunner

from volley.cli.app import app
from volley.measure import history
from volley.numbers import stats


def keep(place, server: str, means: list[float]) -> history.History:
    found = history.History(place, {"server": server, "clients": 2, "client_cpus": [1]})
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
    assert "2 configurations in" in done.output
    assert "aaaa" in done.output and "2 sittings" in done.output and "15.00 us" in done.output
    assert "bbbb" in done.output and "1 sittings" in done.output
    empty = CliRunner().invoke(app, ["history", "show", "--history", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "no sittings kept" in empty.output


def test_clear_forgets_only_with_an_answer(tmp_path):
    kept = keep(tmp_path, "aaaa", [15e3])
    refused = CliRunner().invoke(app, ["history", "clear", "--history", str(tmp_path)], input="n\n")
    assert refused.exit_code != 0 and kept.path.exists()
    done = CliRunner().invoke(app, ["history", "clear", "--history", str(tmp_path), "--yes"])
    assert done.exit_code == 0 and "forgot the sittings of 1 configuration" in done.output
    assert not kept.path.exists() and history.kept(tmp_path) == []
