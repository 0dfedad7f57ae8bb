"""Terminal tables, drawn by ``rich``: the CLI's listings and the audit's summaries.

:func:`text_table` renders rows as plain aligned text (for strings such as
:func:`~worldflux_gym.audit.summary_text` and ``report.md``); :func:`print_table` prints them,
styled and fitted to the width when the output is a terminal, as that plain text otherwise (so
that piped output stays one line per row).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

_UNLIMITED = 100_000  # characters: a table written to a string or a pipe is never wrapped


def _table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> Table:
    """The first row is the header; cells are taken as plain text (no rich markup in them); the
    columns numbered in ``right`` are right-aligned (figures)."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 1))
    for i, name in enumerate(rows[0]):
        table.add_column(Text(str(name)), justify="right" if i in right else "left")
    for row in rows[1:]:
        table.add_row(*(Text(str(cell)) for cell in row))
    return table


def text_table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """``rows`` (the first one the header) as aligned plain text, two spaces between columns; the
    columns numbered in ``right`` are right-aligned."""
    buffer = io.StringIO()
    Console(file=buffer, width=_UNLIMITED, color_system=None, highlight=False).print(_table(rows, right))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def print_table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print ``rows`` (the first one the header) to standard output (see :func:`text_table`)."""
    console = Console(file=sys.stdout, highlight=False)
    if console.is_terminal:
        console.print(_table(rows, right))
    else:
        print(text_table(rows, right))
