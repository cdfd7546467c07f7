"""The one table writer of every command's report: rows (dicts) as a CSV file (Python's
:class:`csv.DictWriter`) and as a Markdown table. Used by ``segpets.eval`` (the metrics
table, ``per_*.csv``), ``segpets.summarize`` (``summary.csv``, the runs table) and
``segpets.bench`` (``bench.csv``, ``bench.md``)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segpets.command.outputs import atomic_write_text


def format_cell(column: str, value: Any) -> str:
    """A Markdown cell: floats to 4 decimals, NaN as ``–``, ``None`` (no value) empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown(
    rows: list[dict],
    columns: Sequence[str] | None = None,
    cell: Callable[[str, Any], str] = format_cell,
) -> str:
    """A Markdown table: a header of ``columns`` (default: the first row's keys), then one
    line per row, each value written by ``cell(column, value)`` (a missing key is ``None``).
    No trailing newline."""
    columns = list(columns if columns is not None else (rows[0] if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], columns: Sequence[str] | None = None) -> None:
    """``rows`` as a CSV file with a header of ``columns`` (default: the first row's keys;
    an empty table is a header ``empty`` alone). Raises ``ValueError`` for a row key outside
    ``columns``, ``OSError`` if ``path`` cannot be written. Written whole
    (:func:`~segpets.command.outputs.atomic_write_text`): a kill leaves the old file or none."""
    columns = list(columns if columns is not None else (rows[0] if rows else ["empty"]))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
