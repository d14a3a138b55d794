"""report: every rendering carries the report's figures and its conventions.

JSON and CSV parse back to the same totals; the Markdown is a pipe table a
Markdown renderer accepts; the rich table is a tree with the totals, memory
and model sizes; `--units si` rounds, `raw` does not.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import archcompiler
from archcompiler import report
from archcompiler.analysis import CONVENTIONS

SPEC = Path(__file__).parents[1] / "specs" / "googlenet.yaml"


@pytest.fixture(scope="module")
def rep():
    return archcompiler.summary(SPEC)


def test_json_round_trips_totals_and_rows(rep):
    data = json.loads(report.to_json(rep))
    assert data["total_params"] == rep.total_params and data["total_macs"] == rep.total_macs
    assert data["total_buffers"] == rep.total_buffers and data["activation_bytes"] == 4 * rep.total_activations
    assert data["model_bytes"] == {"fp32": 4 * (rep.total_params + rep.total_buffers),
                                   "fp16": 2 * (rep.total_params + rep.total_buffers),
                                   "int8": rep.total_params + rep.total_buffers}
    assert [n["name"] for n in data["nodes"]] == [r.name for r in rep.rows]
    assert data["nodes"][0]["receptive_field"] == [7, 7] and data["nodes"][0]["jump"] == [2, 2]
    assert data["conventions"] == CONVENTIONS and "BatchNorm, pooling, activations and adds count 0" in CONVENTIONS


@pytest.mark.parametrize("depth", [1, 2, None])
def test_every_depth_keeps_the_totals(rep, depth):
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep, depth))))
    top = [r for r in rows if "." not in r["name"]]
    assert sum(int(r["params"]) for r in top) == rep.total_params
    assert sum(int(r["buffers"]) for r in top) == rep.total_buffers
    assert sum(int(r["macs"]) for r in top if r["train_only"] == "false") == rep.total_macs
    assert sum(int(r["activation_bytes"]) for r in top if r["train_only"] == "false") == rep.activation_bytes
    assert all(r["name"].count(".") < depth for r in rows) if depth else len(rows) == len(rep.rows)


def test_csv_columns_and_receptive_fields(rep):
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report.to_csv(rep)))}
    assert list(next(iter(rows.values()))) == list(report.COLUMNS)
    assert rows["inception5b"]["receptive_field"] == "379" and rows["inception5b"]["jump"] == "32"


def markdown_table(text: str) -> list[list[str]]:
    """The cells of the one pipe table in `text`, checked to be well formed."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert len({len(row) for row in cells}) == 1, "every row has the header's number of cells"
    assert all(set(c) <= set("-:") and "-" in c for c in cells[1]), "the second line is the separator"
    return cells


@pytest.mark.parametrize("units", report.UNITS)
def test_markdown_is_a_table_with_one_row_per_visible_row(rep, units):
    text = report.to_markdown(rep, 1, units)
    cells = markdown_table(text)
    assert cells[0] == ["name", "op", "output", "params", "buffers", "MACs", "activation memory", "RF / jump"]
    assert len(cells) == 2 + len(report.visible(rep, 1)) + 1  # header, rule, rows, total
    assert cells[-1][3] == (f"**{rep.total_params:,}**" if units == "raw" else "**13.0M**")
    assert CONVENTIONS in text


def test_markdown_renders_as_an_html_table(rep):
    from markdown_it import MarkdownIt  # rich's own Markdown parser

    html = MarkdownIt("commonmark").enable("table").render(report.to_markdown(rep, 1))
    assert html.count("<tr>") == 1 + len(report.visible(rep, 1)) + 1  # header, rows, total
    assert ">params</th>" in html and html.count("<table>") == 1


def test_table_is_a_tree_with_totals_memory_and_model_sizes(rep):
    from rich.console import Console

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(report.to_table(rep, 2))
    text = console.export_text()
    assert "13,004,888" in text and "1,498,376,192" in text and "1.498 GMACs" in text
    assert f"model size {4 * (rep.total_params + rep.total_buffers):,} fp32" in text
    assert "├─ branch1" in text and "└─ concat" in text  # tree guides under inception3a
    for row in report.visible(rep, 2):
        assert row.name.rsplit(".", 1)[-1] in text
    assert "* runs in training mode only" in text


def test_si_units(rep):
    assert [report.count(n, "si") for n in (999, 1_000, 13_004_888, 1_498_376_192)] == ["999", "1.00K", "13.0M", "1.50G"]
    assert report.count(13_004_888, "raw") == "13,004,888"
    assert [report.size(n, "si") for n in (512, 52_019_552, 3_100_000_000)] == ["512 B", "52.0 MB", "3.10 GB"]
    from rich.console import Console

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(report.to_table(rep, 1, "si"))
    text = console.export_text()
    assert "13.0M" in text and "13,004,888" not in text


def test_tree_prefixes_mark_last_children():
    rows = [archcompiler.analysis.Row(name, "layer", "relu", "relu", depth, (1,), 0, 0, 0, 1, False)
            for name, depth in [("a", 1), ("a.x", 2), ("a.x.p", 3), ("a.y", 2), ("b", 1)]]
    assert report.tree_prefixes(rows) == ["", "├─ ", "│  └─ ", "└─ ", ""]
