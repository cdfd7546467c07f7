"""The one table writer (segpets.command.tables) behind eval's, summarize's and bench's
tables: CSV round trips, Markdown cells, eval's metrics table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from segpets.command.tables import format_cell, markdown, write_csv
from segpets.eval import metrics_table


def test_markdown_cells_and_header() -> None:
    rows = [{"name": "a", "dice": 0.123456, "n": 3}, {"name": "b", "dice": math.nan}]
    assert markdown(rows).splitlines() == [
        "| name | dice | n |",
        "|---|---|---|",
        "| a | 0.1235 | 3 |",
        "| b | – |  |",  # NaN is a dash, a missing value an empty cell
    ]
    custom = markdown(rows, ["n"], lambda column, value: f"<{value}>")
    assert custom.splitlines()[2:] == ["| <3> |", "| <None> |"]
    assert format_cell("x", None) == "" and format_cell("x", 2) == "2"


def test_csv_round_trip_and_column_order(tmp_path: Path) -> None:
    rows = [{"b": 1, "a": 0.5}, {"b": 2, "a": math.nan}]
    write_csv(tmp_path / "t.csv", rows, ["a", "b"])
    with (tmp_path / "t.csv").open() as f:
        back = list(csv.reader(f))
    assert back == [["a", "b"], ["0.5", "1"], ["nan", "2"]]
    write_csv(tmp_path / "default.csv", rows)  # the first row's keys
    assert (tmp_path / "default.csv").read_text().splitlines()[0] == "b,a"
    with pytest.raises(ValueError):
        write_csv(tmp_path / "bad.csv", rows, ["a"])  # a row key outside the columns


def test_eval_metrics_table_is_markdown_with_one_column_per_variant() -> None:
    columns = {"eval-res": {"dice": 0.84301, "iou": 0.73}, "full-res": {"dice": 0.842}}
    assert metrics_table(columns).splitlines() == [
        "| metric | eval-res | full-res |",
        "|---|---|---|",
        "| dice | 0.8430 | 0.8420 |",
        "| iou | 0.7300 |  |",
    ]
