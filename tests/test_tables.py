"""Tables: rich on a terminal, plain aligned columns anywhere else (volley.present.tables),
and the commands that print them (compare, system, history show) through the CLI."""

from __future__ import annotations

import io
import re
from collections import Counter

import pytest
from test_compare import pair, write
from typer.testing import CliRunner

from volley.cli.app import app
from volley.present import tables
from volley.present.tables import Column
from volley.system import machine
from volley.system.machine import Item

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = re.compile("[\u2500-\u257f]")  # the box-drawing block rich draws its rules with

HEADS = [Column("statistic"), Column("estimate"), Column("runs", "right"), Column("verdict")]
ROWS = [
    ["mean", "50.00 us [49.70, 50.29] us", "10", "slower"],
    ["p99.9", "159.2 us [158.1, 160.2] us", "7", "no significant difference"],
]


def starts(line: str, words: list[str]) -> list[int]:
    """Where each of ``words`` starts in ``line``, searching left to right."""
    found, at = [], 0
    for word in words:
        at = line.index(word, at)
        found.append(at)
        at += len(word)
    return found


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def colour_allowed(monkeypatch):
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def test_plain_columns_line_up_with_no_escape_or_box_characters():
    lines = tables.table(HEADS, ROWS, None, title="two rows")
    assert lines[0] == "two rows"
    header, mean, tail = lines[1:]
    assert starts(header, ["statistic", "estimate"]) == starts(mean, ["mean", "50.00"])
    assert starts(header, ["statistic", "estimate"]) == starts(tail, ["p99.9", "159.2"])
    # "runs" keeps right: its cells end where the heading ends.
    assert header.index("runs") + 4 == mean.index("10") + 2 == tail.index(" 7") + 2
    assert mean.index("slower") == tail.index("no significant") == header.index("verdict")
    for line in lines:
        assert not ANSI.search(line) and not BOX.search(line) and line == line.rstrip()


def test_a_terminal_draws_the_same_cells_and_keeps_brackets_and_long_words():
    wide = tables.Console(file=io.StringIO(), force_terminal=True, width=120)
    drawn = "\n".join(tables.table(HEADS, ROWS, wide))
    assert ANSI.search(drawn) and BOX.search(drawn)
    text = ANSI.sub("", drawn)
    for cell in [h.header for h in HEADS] + [cell for row in ROWS for cell in row]:
        assert cell in text  # "[49.70, 50.29]" is not read as markup
    narrow = tables.Console(file=io.StringIO(), force_terminal=True, width=30)
    folded = ANSI.sub("", "\n".join(tables.table(HEADS, ROWS, narrow)))
    assert max(map(len, folded.splitlines())) <= 30
    # Wrapped or folded, never cut short: every character of every cell is still there.
    shown = Counter(re.sub(r"\s", "", folded))
    assert "\u2026" not in shown  # no ellipsis
    assert not Counter(re.sub(r"\s", "", "".join(c for row in ROWS for c in row))) - shown


def test_tables_are_drawn_only_on_a_terminal_that_takes_them(colour_allowed, monkeypatch):
    assert tables.console_for(io.StringIO()) is None
    assert tables.console_for(Terminal()) is not None
    monkeypatch.setenv("NO_COLOR", "1")
    assert tables.console_for(Terminal()) is None
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert tables.console_for(Terminal()) is None


def test_compare_prints_plain_columns_through_a_pipe(tmp_path):
    a, b = pair(11, runs=10, scale=1.03, spread=0.01)
    paths = [str(write(tmp_path / "a.json", a)), str(write(tmp_path / "b.json", b))]
    done = CliRunner().invoke(app, ["compare", *paths])
    assert done.exit_code == 0, done.output
    assert not ANSI.search(done.output) and not BOX.search(done.output)
    lines = done.output.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["A", "B"])
    verdict = header.index("verdict")
    rows = lines[lines.index(header) + 1 : lines.index(header) + 6]
    assert [row.split()[0] for row in rows] == ["mean", "p50", "p90", "p99", "p99.9"]
    assert all(row[verdict:] == "slower" for row in rows)
    assert all(starts(row, row.split()[:2])[1] == header.index("A") for row in rows)
    # A pipe into grep gets one whole row per line.
    assert [line for line in lines if "slower" in line] == rows


def test_system_prints_a_line_per_item_with_its_why_and_fix(monkeypatch):
    items = [
        Item("CPUs", "2 CPUs, 2 usable (0-1)", "the server needs CPUs", "add CPUs", True),
        Item("isolation", "no isolated CPUs", "the tick delays replies", "isolcpus=2", False),
        Item("turbo", "unknown", "it varies run to run", "echo 0 > boost", None),
    ]
    monkeypatch.setattr(machine, "readiness", lambda: items)
    done = CliRunner().invoke(app, ["system"])
    assert done.exit_code == 0, done.output
    assert not ANSI.search(done.output) and not BOX.search(done.output)
    header, *rows, verdict = done.output.splitlines()
    assert header.split() == ["item", "state", "why", "fix"]
    assert [re.split(r"\s{2,}", row) for row in rows] == [
        ["ok", "CPUs", "2 CPUs, 2 usable (0-1)", "the server needs CPUs"],  # ready: no fix
        ["!!", "isolation", "no isolated CPUs", "the tick delays replies", "isolcpus=2"],
        ["??", "turbo", "unknown", "it varies run to run", "echo 0 > boost"],
    ]
    assert len({row.index(item.why) for row, item in zip(rows, items, strict=True)}) == 1
    assert verdict == "1 of 3 items not ready (ok ready, !! not ready, ?? cannot tell)"


def test_system_lists_every_item_of_this_machine():
    done = CliRunner().invoke(app, ["system"])
    assert done.exit_code == 0, done.output
    named = [re.split(r"\s{2,}", line)[1] for line in done.output.splitlines()[1:-1]]
    assert named == [item.name for item in machine.readiness()]
