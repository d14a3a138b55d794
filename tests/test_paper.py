"""paper: the papers' table form is read off the spec's blocks.

Each expected row below is a row of a paper's own table (GoogLeNet's Table 1,
BN-Inception's figure 5, seed 003's Inception-v2 tables); the table is
computed from the spec and must reproduce it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import archcompiler
from archcompiler import paper
from archcompiler.analysis import analyze

SPECS = Path(__file__).parents[1] / "specs"


def table(spec: str) -> paper.PaperTable:
    graph = archcompiler.compile_graph(SPECS / f"{spec}.yaml")
    return paper.paper_table(graph, analyze(graph))


def rows(spec: str) -> dict[str, paper.PaperRow]:
    return {r.name: r for r in table(spec).rows}


def test_googlenet_paper_has_table_1s_columns_and_rows():
    t = table("googlenet_paper")
    assert t.columns == ["#1x1", "#3x3 reduce", "#3x3", "#5x5 reduce", "#5x5", "pool proj"]
    r = rows("googlenet_paper")
    # Table 1: inception (3a) 28x28x256, depth 2, 64 96 128 16 32 32, 159K, 128M
    assert (r["inception3a"].type, r["inception3a"].output, r["inception3a"].depth) == ("inception", "28x28x256", 2)
    assert r["inception3a"].branches == {"#1x1": "64", "#3x3 reduce": "96", "#3x3": "128", "#5x5 reduce": "16",
                                         "#5x5": "32", "pool proj": "max + 32"}
    assert r["inception5b"].branches["#5x5 reduce"] == "48" and r["inception5b"].output == "7x7x1024"
    assert (r["conv1"].type, r["conv1"].patch, r["conv1"].output, r["conv1"].depth) == ("convolution", "7x7/2", "112x112x64", 1)
    assert (r["pool1"].type, r["pool1"].patch, r["pool1"].depth) == ("max pool", "3x3/2", 0)
    assert (r["avgpool"].patch, r["dropout"].type, r["fc"].output) == ("7x7/1", "dropout (40%)", "1x1x1000")
    assert "flatten" not in r  # reshaping is not a row of the papers' tables
    assert r["inception3a"].params == archcompiler.summary(SPECS / "googlenet_paper.yaml").row("inception3a").params
    assert t.omitted == ["aux1", "aux2"] and t.omitted_params > 0


def test_bn_inception_has_figure_5s_columns():
    t = table("bn_inception")
    assert t.columns == ["#1x1", "#3x3 reduce", "#3x3", "double #3x3 reduce", "double #3x3", "pool proj"]
    r = rows("bn_inception")
    assert r["inception_3c"].branches == {"#3x3 reduce": "128", "#3x3": "160", "double #3x3 reduce": "64",
                                          "double #3x3": "96", "pool proj": "max + pass through"}
    assert r["inception_3c"].patch == "stride 2" and r["inception_3a"].patch == ""
    assert r["inception_5b"].branches["pool proj"] == "max + 128" and r["inception_5a"].branches["pool proj"] == "avg + 128"
    assert r["inception_4a"].depth == 3
    assert [n for n in r if n.startswith("conv2")] == ["conv2.0", "conv2.1"]  # a plain chain is opened


def test_factorised_and_split_convolutions_name_their_branch_like_the_papers():
    r = rows("inception_v2")
    # seed 003: Inception(5a) 192 96 160 96 160 Avg+256, with 7x7 factorised into 1x7 and 7x1
    assert r["inception_4a"].branches == {"#1x1": "192", "#7x7 reduce": "96", "#7x7": "160",
                                          "double #7x7 reduce": "96", "double #7x7": "160", "pool proj": "avg + 256"}
    # seed 003: Inception(2a) 256 128 160 128 240 Avg+224, the last 3x3s split into 1x3 and 3x1
    assert r["inception_5a"].branches == {"#1x1": "256", "#3x3 reduce": "128", "#3x3": "160+160",
                                          "double #3x3 reduce": "128", "double #3x3": "240+240", "pool proj": "avg + 224"}


def test_repeats_stay_one_row_and_two_branches_of_one_kind_get_two_columns():
    r = rows("inception_resnet_v2")
    assert r["repeat"].type == "block35 x10" and r["repeat"].depth == 40
    assert r["repeat_1"].branches == {"#1x1": "192", "#7x7 reduce": "128", "#7x7": "192"}
    assert r["mixed_7a"].branches == {"#3x3 reduce": "256", "#3x3": "384", "#3x3 reduce (2)": "256", "#3x3 (2)": "288",
                                      "double #3x3 reduce": "256", "double #3x3": "320", "pool proj": "max + pass through"}


@pytest.mark.parametrize("spec", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_every_spec_has_a_paper_table_whose_rows_add_up(spec):
    t = table(spec)
    report = archcompiler.summary(SPECS / f"{spec}.yaml")
    assert sum(r.params for r in t.rows) + t.omitted_params == report.total_params
    assert sum(r.ops for r in t.rows) == report.total_macs


def test_renderings_carry_the_same_rows():
    t = table("googlenet_paper")
    data = json.loads(paper.to_json(t))
    assert [r["name"] for r in data["rows"]] == [r.name for r in t.rows]
    parsed = list(csv.DictReader(io.StringIO(paper.to_csv(t))))
    assert sum(int(r["params"]) for r in parsed) == sum(r.params for r in t.rows)
    md = [line for line in paper.to_markdown(t, "si").splitlines() if line.startswith("|")]
    assert len(md) == 2 + len(t.rows) and len({line.count("|") for line in md}) == 1
    assert "| inception | inception3a |  | 28x28x256 | 2 | 64 | 96 | 128 | 16 | 32 | max + 32 | 164K | 128M |" in md


def test_latex_paper_table_is_a_booktabs_table():
    from test_report import check_latex

    paper_mod = paper
    graph = archcompiler.compile_graph(Path(__file__).parents[1] / "specs" / "googlenet_paper.yaml")
    table = paper_mod.paper_table(graph, analyze(graph))
    cells = check_latex(paper_mod.to_latex(table))
    assert cells[0][:2] == ["type", "name"] and r"\#3x3 reduce" in cells[0]
    assert len(cells) == 1 + len(table.rows)
