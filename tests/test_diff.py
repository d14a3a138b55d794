"""diff: per-stage comparison of two networks, its sums and its renderings."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import archcompiler
from archcompiler import diff as D
from archcompiler.analysis import analyze

SPECS = Path(__file__).parents[1] / "specs"


@functools.lru_cache(maxsize=None)
def graph(name: str):
    return archcompiler.compile_graph(SPECS / f"{name}.yaml")


@functools.lru_cache(maxsize=None)
def diff(a: str, b: str) -> D.Diff:
    return D.diff(graph(a), graph(b))


def render_table(d: D.Diff) -> str:
    out = io.StringIO()
    Console(file=out, width=300).print(D.to_table(d))
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_stages_add_up_to_the_eval_mode_totals(name):
    g = graph(name)
    rep = analyze(g)
    layers = [r for r in rep.rows if r.kind == "layer"]
    net = D.network(g)
    train_only_params = sum(r.params for r in layers if r.train_only)
    assert sum(s.params for s in net.stages) == net.params == rep.total_params - train_only_params
    assert net.train_only_params == train_only_params
    assert sum(s.macs for s in net.stages) == net.macs == rep.total_macs
    assert sum(s.layers for s in net.stages) == sum(not r.train_only for r in layers)
    assert len({s.grid for s in net.stages}) == len(net.stages) and net.stages[-1].grid == "head"


def test_training_only_heads_are_left_out_and_said_so():
    net = D.network(graph("googlenet"))
    assert net.train_only_params > 0 and net.train_only_macs > 0
    d = diff("googlenet", "googlenet")
    assert D.NOTE in D.to_markdown(d) and D.NOTE in render_table(d) and D.NOTE in json.loads(D.to_json(d))["notes"]


def test_inception_v4_against_inception_resnet_v2():
    d = diff("inception_v4", "inception_resnet_v2")
    assert [r.grid for r in d.rows] == ["149x149", "147x147", "73x73", "71x71", "35x35", "17x17", "8x8", "head"]
    assert all(r.a and r.b for r in d.rows)
    out = {r.grid: (r.a.output, r.b.output) for r in d.rows}
    # a stage's output is its trunk's (the block's concat or sum), not a branch inside the next reduction
    assert out["35x35"] == ((384, 35, 35), (320, 35, 35))
    assert out["17x17"] == ((1024, 17, 17), (1088, 17, 17))
    assert out["8x8"] == ((1536, 8, 8), (1536, 8, 8))
    assert out["head"] == ((1000,), (1000,))
    row = {r.grid: r for r in d.rows}
    assert row["35x35"].b.first == "maxpool_5a" and row["35x35"].b.last == "mixed_6a"
    assert row["149x149"].d_params == 0 and row["8x8"].d_params > 0  # the same first conv; block8's 2080 channels
    assert sum(r.d_params for r in d.rows) == d.b.params - d.a.params
    assert sum(r.d_macs for r in d.rows) == d.b.macs - d.a.macs


@pytest.mark.parametrize("name", ["inception_v4", "googlenet", "resnet50", "lenet5"])
def test_a_spec_against_itself_has_no_deltas(name):
    d = diff(name, name)
    assert all(r.a == r.b and r.d_params == 0 and r.d_macs == 0 for r in d.rows)
    data = json.loads(D.to_json(d))
    assert data["totals"]["delta"] == {"params": 0, "macs": 0}
    assert "\u0394" in render_table(d)


@pytest.mark.parametrize("a, b", [("lenet5", "alexnet"), ("googlenet", "inception_v3")])
def test_grids_only_one_network_has_render_with_an_empty_side(a, b):
    d = diff(a, b)
    assert any(r.a is None for r in d.rows) and any(r.b is None for r in d.rows)
    only_a = next(r for r in d.rows if r.b is None)
    assert only_a.d_params == -only_a.a.params  # the missing side counts as zero
    assert render_table(d) and D.to_markdown(d) and json.loads(D.to_json(d))["stages"]
    assert sum(r.d_params for r in d.rows) == d.b.params - d.a.params


@pytest.mark.parametrize("a, b", [("inception_v4", "inception_resnet_v2"), ("lenet5", "alexnet")])
def test_markdown_is_a_pipe_table(a, b):
    d = diff(a, b)
    lines = D.to_markdown(d).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert lines.index(table[0]) + len(table) - 1 == lines.index(table[-1])  # one block of rows
    cells = [line.strip("|").split("|") for line in table]
    assert {len(c) for c in cells} == {len(D.HEADERS)}
    assert all(set(c.strip()) <= set("-:") for c in cells[1])
    assert len(table) == 2 + len(d.rows) + 1  # header, separator, stages, total
    assert f"**{d.b.params:,}**" in table[-1]


def test_json_parses_back_to_the_same_figures():
    d = diff("inception_v4", "inception_resnet_v2")
    data = json.loads(D.to_json(d))
    for side, net in (("a", d.a), ("b", d.b)):
        assert data["totals"][side] == {"params": net.params, "macs": net.macs} == \
            {k: data[side][k] for k in ("params", "macs")}
        stages = [s[side] for s in data["stages"]]
        assert sum(s["params"] for s in stages) == net.params and sum(s["macs"] for s in stages) == net.macs
    assert data["totals"]["delta"]["params"] == sum(s["delta"]["params"] for s in data["stages"])
    assert data["stages"][4]["stage"] == "35x35" and data["stages"][4]["a"]["output"] == [384, 35, 35]


def test_deltas_are_signed_and_totals_relative():
    text = D.to_markdown(diff("inception_v4", "inception_resnet_v2"))
    assert "+13,163,648 (+30.8%)" in text and "\u2212128,544" in text
    text = D.to_markdown(diff("inception_resnet_v2", "inception_v4"))
    assert "\u221213,163,648 (\u221223.6%)" in text


def test_latex_diff_is_a_booktabs_table():
    from test_report import check_latex

    diffing = D
    root = Path(__file__).parents[1] / "specs"
    d = diffing.diff(archcompiler.compile_graph(root / "inception_v4.yaml"),
                     archcompiler.compile_graph(root / "inception_resnet_v2.yaml"))
    cells = check_latex(diffing.to_latex(d))
    assert cells[0][0] == "stage" and r"$\Delta$ params" in cells[0]
    assert cells[-1][0] == r"\textbf{total}" and len(cells) == 1 + len(d.rows) + 1
