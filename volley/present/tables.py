"""Tables as a person reads them: drawn by rich (typer's own) on a terminal, and anywhere
else (a pipe, a file, ``NO_COLOR``, ``TERM=dumb``) plain columns aligned with spaces, one
row a line, with no box characters or escape codes, so that ``volley compare a.json b.json
| grep slower`` and scripts read the same words a person sees."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """A column's heading and which side its cells keep to."""

    header: str
    align: Literal["left", "right"] = "left"


def columns(*headers: str) -> list[Column]:
    """Left-aligned columns with these headings."""
    return [Column(header) for header in headers]


def console_for(stream: TextIO) -> Console | None:
    """The console that draws tables on ``stream``, decided once per command; None when
    they go out plain: not a terminal, a dumb one, or colour refused (``NO_COLOR``)."""
    console = Console(file=stream, highlight=False, markup=False, emoji=False)
    if not console.is_terminal or console.is_dumb_terminal or os.environ.get("NO_COLOR"):
        return None
    return console


def table(
    heads: Sequence[Column],
    rows: Sequence[Sequence[str]],
    console: Console | None = None,
    title: str | None = None,
) -> list[str]:
    """The table's lines: drawn for ``console``, or plain when there is none."""
    if console is None:
        return plain(heads, rows, title)
    drawn = Table(
        title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, pad_edge=False
    )
    for head in heads:
        drawn.add_column(Text(head.header), justify=head.align, overflow="fold")
    for row in rows:
        # Text, not str: a cell such as "[48.58, 64.09] us" is no markup.
        drawn.add_row(*(Text(cell) for cell in row))
    with console.capture() as captured:
        console.print(drawn)
    return captured.get().rstrip("\n").split("\n")


def plain(
    heads: Sequence[Column], rows: Sequence[Sequence[str]], title: str | None = None
) -> list[str]:
    """Columns two spaces apart, each as wide as its widest cell; no trailing blanks."""
    lines = [[head.header for head in heads], *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(heads))]

    def aligned(line: list[str]) -> str:
        cells = (
            cell.rjust(width) if head.align == "right" else cell.ljust(width)
            for cell, width, head in zip(line, widths, heads, strict=True)
        )
        return "  ".join(cells).rstrip()

    return ([title] if title else []) + [aligned(line) for line in lines]
