"""report: the JSON, CSV and Markdown renderings parse back to the report's figures."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import archcompiler
from archcompiler import report

SPEC = Path(__file__).parents[1] / "specs" / "googlenet.yaml"


@pytest.fixture(scope="module")
def rep():
    return archcompiler.summary(SPEC)


def test_json_round_trips_totals_and_rows(rep):
    data = json.loads(report.to_json(rep))
    assert data["total_params"] == rep.total_params and data["total_macs"] == rep.total_macs
    assert [n["name"] for n in data["nodes"]] == [r.name for r in rep.rows]
    assert data["conventions"].startswith("macs: multiply-accumulates of conv and linear")


@pytest.mark.parametrize("depth", [1, 2, None])
def test_every_depth_keeps_the_totals(rep, depth):
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep, depth))))
    top = [r for r in rows if "." not in r["name"]]
    assert sum(int(r["params"]) for r in top) == rep.total_params
    assert sum(int(r["macs"]) for r in top if r["train_only"] == "false") == rep.total_macs
    assert all(r["name"].count(".") < depth for r in rows) if depth else len(rows) == len(rep.rows)


def test_markdown_is_a_table_with_one_row_per_visible_row(rep):
    lines = report.to_markdown(rep, 1).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| name | op | output | params | MACs |"
    assert set(table[1].replace("|", "").split()) == {"---", "---:"}
    assert len(table) == 2 + len(report.visible(rep, 1)) + 1  # header, rule, rows, total
    assert all(line.count("|") == 6 for line in table)


def test_table_renders_every_visible_row(rep):
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(report.to_table(rep, 1))
    text = console.export_text()
    assert "13,004,888" in text and "1,498,376,192" in text
    for row in report.visible(rep, 1):
        assert row.name in text
