"""docs/zoo.md's table states what the specs compute, and lists every spec."""

from __future__ import annotations

from pathlib import Path

import pytest

import archcompiler

ROOT = Path(__file__).parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def table() -> dict[str, dict[str, str]]:
    lines = (ROOT / "docs" / "zoo.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| spec |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        out[cells["spec"].strip("`")] = cells
    return out


def test_every_spec_has_a_row_and_every_row_a_spec():
    assert sorted(table()) == [p.name for p in SPECS]


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_row_states_the_computed_figures(spec):
    row = table()[spec.name]
    report = archcompiler.summary(spec)
    assert row["input"] == "x".join(map(str, report.input))
    assert row["params"] == f"{report.total_params:,}"
    assert float(row["GMACs"]) == float(f"{report.total_macs / 1e9:.4g}")
    assert int(row["spec lines"]) == len(spec.read_text().splitlines())


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_spec_cites_its_paper_and_stays_short(spec):
    graph = archcompiler.compile_graph(spec)
    assert graph.paper and graph.title
    assert len(spec.read_text().splitlines()) <= 200


def test_generated_model_table_is_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "scripts" / "zoo_table.py")
    zoo_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo_table)
    doc = (ROOT / "docs" / "zoo.md").read_text()
    assert zoo_table.current_section(doc) == zoo_table.section(), (
        "docs/zoo.md's generated model table is stale: run .venv/bin/python scripts/zoo_table.py --write")
