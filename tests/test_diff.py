"""diff: per-stage comparison of two networks, its alignment by downsampling step, its sums and its renderings."""

from __future__ import annotations

import functools
import io
import json
import re
from pathlib import Path
from typing import Optional

import pytest
from rich.console import Console

import archcompiler
from archcompiler import diff as D
from archcompiler.analysis import analyze

SPECS = Path(__file__).parents[1] / "specs"


@functools.lru_cache(maxsize=None)
def graph(name: str, input_shape: Optional[tuple[int, ...]] = None):
    spec = SPECS / f"{name}.yaml"
    return archcompiler.compile_graph(spec if spec.exists() else name, input_shape=input_shape)


@functools.lru_cache(maxsize=None)
def diff(a: str, b: str) -> D.Diff:
    return D.diff(graph(a), graph(b))


def render_table(d: D.Diff) -> str:
    out = io.StringIO()
    Console(file=out, width=300).print(D.to_table(d))
    return out.getvalue()


def stages(d: D.Diff) -> dict[str, D.StageRow]:
    return {r.stage: r for r in d.rows}


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
    assert len({s.stage for s in net.stages}) == len(net.stages) and net.stages[-1].stage == "head"
    # strides only grow along the network: the stages come in the order the grid is downsampled
    strides = [s.stage for s in net.stages[:-1]]
    assert strides == sorted(strides, key=D._stage_order) and all(s.startswith("stride ") for s in strides)


def test_a_stage_is_a_stride_from_the_input_not_a_grid():
    """Inception-v3's 149x149 and 147x147 are one stage (stride 2), its 73x73 and 71x71 another (stride 4)."""
    net = D.network(graph("inception_v3"))
    by_stage = {s.stage: s for s in net.stages}
    assert list(by_stage) == ["stride 2", "stride 4", "stride 8", "stride 16", "stride 32", "head"]
    assert by_stage["stride 2"].first == "Conv2d_1a_3x3" and by_stage["stride 2"].last == "Conv2d_2b_3x3"
    assert by_stage["stride 2"].output == (64, 147, 147) and by_stage["stride 4"].output == (192, 71, 71)
    # AlexNet's first conv has stride 4: its first stage is stride 4, and no stride 2
    assert [s.stage for s in D.network(graph("alexnet")).stages][:2] == ["stride 4", "stride 8"]


def test_squeeze_and_excitation_stays_in_its_blocks_stage():
    """SE's 1x1 layers (pool, fc1, fc2, sigmoid) feed a feature map again: they are not the head."""
    g = graph("efficientnet")
    order = [n for n in g.order() if not g.nodes[n].train_only]
    stage = D.stage_of(g, order)
    se = [n for n in order if n.startswith("features.1.0.block.1.") and g.nodes[n].shape[1:] == (1, 1)]
    assert [n.rsplit(".", 1)[1] for n in se] == ["avgpool", "fc1", "activation", "fc2", "scale_activation"]
    assert {stage[n] for n in se} == {"stride 2"}
    head = {n for n in order if stage[n] == "head"}
    assert head == {n for n in order if not n.startswith("features.")}  # avgpool, flatten, classifier
    rep = analyze(g)
    assert D.network(g).stages[-1].params == sum(r.params for r in rep.rows
                                                 if r.kind == "layer" and r.name.startswith("classifier."))


def test_googlenet_against_inception_v3_pairs_their_stages():
    """224 against 299: no grid is shared but the head's, yet every stage pairs, and a note says how."""
    d = diff("googlenet", "inception_v3")
    assert [r.stage for r in d.rows] == ["stride 2", "stride 4", "stride 8", "stride 16", "stride 32", "head"]
    assert all(r.a and r.b for r in d.rows)
    grids = {r.stage: (r.a.grid, r.b.grid) for r in d.rows}
    assert grids == {"stride 2": ("112x112", "147x147"), "stride 4": ("56x56", "71x71"),
                     "stride 8": ("28x28", "35x35"), "stride 16": ("14x14", "17x17"), "stride 32": ("7x7", "8x8"),
                     "head": ("", "")}
    row = stages(d)
    assert row["stride 8"].a.last == "inception3b inception" and row["stride 32"].b.last == "Mixed_7c inception_e"
    note = D.pairing_note(d)
    assert note.startswith("The inputs differ (A 3x224x224, B 3x299x299): stages are paired by downsampling step")
    assert "stride 8 pairs 28x28 with 35x35" in note and "stride 32 pairs 7x7 with 8x8" in note
    for text in (render_table(d), D.to_markdown(d), D.to_latex(d).replace("\n", " ")):
        assert "stride 16 pairs 14x14 with 17x17" in " ".join(text.split())
    assert note in json.loads(D.to_json(d))["notes"]


def test_resnet50_against_resnet18():
    d = diff("resnet50", "resnet18")
    assert [r.stage for r in d.rows] == ["stride 2", "stride 4", "stride 8", "stride 16", "stride 32", "head"]
    row = stages(d)
    assert row["stride 2"].a == row["stride 2"].b  # the same stem: conv1, bn1, relu
    assert row["stride 2"].d_params == 0 and row["stride 2"].d_macs == 0
    # a stage's output is its trunk's: the last block's sum, 4x wider in the bottleneck network
    assert [(r.a.output, r.b.output) for r in d.rows[1:5]] == [
        ((256, 56, 56), (64, 56, 56)), ((512, 28, 28), (128, 28, 28)),
        ((1024, 14, 14), (256, 14, 14)), ((2048, 7, 7), (512, 7, 7))]
    assert row["head"].a.params == 2048 * 1000 + 1000 and row["head"].b.params == 512 * 1000 + 1000
    assert D.pairing_note(d) is None  # same input, same grids: nothing to explain
    assert sum(r.d_params for r in d.rows) == d.b.params - d.a.params == 11_689_512 - 25_557_032


def test_a_network_against_itself_at_two_inputs():
    """GoogLeNet at 224 and at 299: the same parameters per stage, the MACs of the larger grids, paired by stride."""
    d = D.diff(graph("googlenet"), graph("googlenet", (3, 299, 299)))
    assert all(r.a and r.b and r.d_params == 0 for r in d.rows)
    # each stage ends where the summary's module of that stride does, at either input
    for side, rep in (("a", analyze(graph("googlenet"))), ("b", analyze(graph("googlenet", (3, 299, 299))))):
        shape = {r.name: r.output_shape for r in rep.rows}
        assert [getattr(r, side).output for r in d.rows] == [shape[n] for n in ("conv1", "conv3", "inception3b",
                                                                                  "inception4e", "inception5b", "fc")]
    assert [r.b.grid for r in d.rows[:-1]] == ["150x150", "75x75", "37x37", "18x18", "9x9"]  # ceil-mode pools
    assert all(r.d_macs > 0 for r in d.rows[:-1]) and stages(d)["head"].d_macs == 0
    assert d.b.macs == analyze(graph("googlenet", (3, 299, 299))).total_macs
    assert "The inputs differ (A 3x224x224, B 3x299x299)" in D.pairing_note(d)


def test_totals_say_whether_training_only_heads_are_in_them():
    d = diff("googlenet", "inception_v3")
    table = " ".join(render_table(d).split())
    assert "total, eval mode" in table and "train-only" not in [r[0] for r in D._cells(d)]
    note = D.totals_note(d)
    a, b = d.a, d.b
    assert note == (f"The totals and stages are eval mode: training-only layers (auxiliary heads) are left out "
                    f"(A's aux1, aux2: {a.train_only_params:,} params, {a.train_only_macs:,} MACs; "
                    f"B's AuxLogits: {b.train_only_params:,} params, {b.train_only_macs:,} MACs); "
                    f"--include-train-only adds them to the totals.")
    assert note in table and note in D.to_markdown(d)
    assert a.train_only_params == 6_379_984 and b.train_only_params == 3_326_696  # torchvision's aux1+aux2, AuxLogits

    with_heads = D.diff(graph("googlenet"), graph("inception_v3"), train_only=True)
    *_, train_only, total = D._cells(with_heads)
    assert train_only[0] == "train-only" and train_only[1:3] == [f"{a.train_only_params:,}", f"{b.train_only_params:,}"]
    assert train_only[-2:] == ["aux1 \u2026 aux2", "AuxLogits"]
    assert total[0] == "total, with train-only"
    whole = [analyze(graph(n)) for n in ("googlenet", "inception_v3")]
    assert total[1:3] == [f"{r.total_params:,}" for r in whole]  # the summaries' totals, every layer counted
    assert total[4:6] == [f"{r.total_macs + r.train_only_macs:,}" for r in whole]
    data = json.loads(D.to_json(with_heads))["totals"]
    assert data["train_only_included"] and data["a"]["params"] == whole[0].total_params
    assert D.totals_note(with_heads).startswith("The totals include the training-only layers (auxiliary heads)")

    none = diff("resnet50", "resnet50")
    assert D.total_label(none) == "total" and D.totals_note(none).startswith("Neither network has training-only")
    assert len(D._cells(D.diff(graph("resnet50"), graph("resnet50"), train_only=True))) == len(none.rows) + 1


def test_inception_v4_against_inception_resnet_v2():
    d = diff("inception_v4", "inception_resnet_v2")
    assert [r.stage for r in d.rows] == ["stride 2", "stride 4", "stride 8", "stride 16", "stride 32", "head"]
    assert all(r.a and r.b for r in d.rows) and D.pairing_note(d) is None
    out = {r.stage: (r.a.output, r.b.output) for r in d.rows}
    # a stage's output is its trunk's (the block's concat or sum), not a branch inside the next reduction
    assert out["stride 8"] == ((384, 35, 35), (320, 35, 35))
    assert out["stride 16"] == ((1024, 17, 17), (1088, 17, 17))
    assert out["stride 32"] == ((1536, 8, 8), (1536, 8, 8))
    assert out["head"] == ((1000,), (1000,))
    row = stages(d)
    assert row["stride 8"].b.first == "maxpool_5a" and row["stride 8"].b.last == "mixed_6a"
    assert row["stride 2"].d_params == 0 and row["stride 32"].d_params > 0  # the same stem convs; block8's 2080 channels
    assert sum(r.d_params for r in d.rows) == d.b.params - d.a.params
    assert sum(r.d_macs for r in d.rows) == d.b.macs - d.a.macs


@pytest.mark.parametrize("name", ["inception_v4", "googlenet", "resnet50", "lenet5"])
def test_a_spec_against_itself_has_no_deltas(name):
    d = diff(name, name)
    assert all(r.a == r.b and r.d_params == 0 and r.d_macs == 0 for r in d.rows)
    data = json.loads(D.to_json(d))
    assert data["totals"]["delta"] == {"params": 0, "macs": 0}
    assert "\u0394" in render_table(d) and D.pairing_note(d) is None


@pytest.mark.parametrize("a, b, only_a, only_b", [("lenet5", "alexnet", ["stride 1", "stride 2"],
                                                   ["stride 8", "stride 16", "stride 32"]),
                                                  ("efficientnet", "convnext", ["stride 2"], [])])
def test_stages_only_one_network_has_render_with_an_empty_side(a, b, only_a, only_b):
    d = diff(a, b)
    assert [r.stage for r in d.rows if r.b is None] == only_a and [r.stage for r in d.rows if r.a is None] == only_b
    first = next(r for r in d.rows if r.b is None)
    assert first.d_params == -first.a.params  # the missing side counts as zero
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
    assert not data["totals"]["train_only_included"] and data["a"]["train_only_modules"] == []
    assert data["stages"][2]["stage"] == "stride 8" and data["stages"][2]["a"]["output"] == [384, 35, 35]
    assert data["stages"][2]["a"]["grid"] == "35x35"


def test_deltas_are_signed_and_totals_relative():
    text = D.to_markdown(diff("inception_v4", "inception_resnet_v2"))
    assert "+13,163,648 (+30.8%)" in text and "| \u2212100,896 |" in text  # stride 4: the v4 stem's mixed_3a, mixed_4a
    text = D.to_markdown(diff("inception_resnet_v2", "inception_v4"))
    assert "\u221213,163,648 (\u221223.6%)" in text


def test_latex_diff_is_a_booktabs_table():
    from test_report import check_latex

    d = diff("googlenet", "inception_v3")
    text = D.to_latex(d)
    cells = check_latex(text)
    assert cells[0][0] == "stage" and r"$\Delta$ params" in cells[0]
    assert cells[-1][0] == r"\textbf{total, eval mode}" and len(cells) == 1 + len(d.rows) + 1
    assert "Mixed\\_7c" in text  # names' underscores escaped


# ------------------------------------------------------------------------------ the command


def test_cli_inputs_for_both_and_for_each():
    from conftest import run_archc

    def stage_grids(*args: str) -> dict[str, list]:
        r = run_archc("diff", "googlenet", "inception_v3", "-f", "json", *args)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        return {"inputs": [data["a"]["input"], data["b"]["input"]],
                **{s["stage"]: [s["a"]["grid"], s["b"]["grid"]] for s in data["stages"]}}

    assert stage_grids()["stride 8"] == ["28x28", "35x35"]
    both = stage_grids("--input", "3,299,299")
    assert both["inputs"] == [[3, 299, 299]] * 2 and both["stride 8"] == ["37x37", "35x35"]
    each = stage_grids("--input-a", "3,448,448", "--input-b", "3,342,342")
    direct = D.diff(graph("googlenet", (3, 448, 448)), graph("inception_v3", (3, 342, 342)))
    assert each["inputs"] == [[3, 448, 448], [3, 342, 342]]
    assert [each[r.stage] for r in direct.rows] == [[r.a.grid, r.b.grid] for r in direct.rows]
    assert each["stride 8"][0] == "56x56"
    over = stage_grids("--input", "3,299,299", "--input-b", "3,342,342")
    assert over["inputs"] == [[3, 299, 299], [3, 342, 342]]
    r = run_archc("diff", "googlenet", "inception_v3", "--include-train-only", "-f", "json")
    assert json.loads(r.stdout)["totals"]["train_only_included"]
    bad = run_archc("diff", "googlenet", "googlenet", "--input-b", "3,0,224")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("archc: error: --input-b expects three positive sizes C,H,W")


# ------------------------------------------------------------------------------ the docs

ROOT = Path(__file__).parents[1]


def _diff_section() -> str:
    text = (ROOT / "docs" / "summaries.md").read_text(encoding="utf-8")
    start = text.index("## `archc diff A B`")
    return text[start:text.index("\n## ", start + 1)]


def test_docs_diff_examples_run_and_print_what_the_docs_show():
    import shlex

    from conftest import run_archc

    section = _diff_section()
    fences = re.findall(r"^```(\w+)\n(.*?)^```$", section, re.S | re.M)
    commands = [line for kind, body in fences if kind == "bash" for line in body.splitlines()
                if line.startswith("archc diff ")]
    assert len(commands) >= 4
    for line in commands:
        r = run_archc(*shlex.split(line)[1:], cwd=ROOT)
        assert r.returncode == 0 and r.stdout, (line, r.stderr)
    shown = [body for kind, body in fences if kind == "text" and body.startswith("$ archc diff ")]
    assert len(shown) == 2
    for body in shown:
        command, *lines = body.splitlines()
        r = run_archc(*shlex.split(command)[2:], cwd=ROOT)
        assert r.returncode == 0, r.stderr
        for line in lines:
            assert line in r.stdout, (command, line)


def test_readme_diff_example_runs_and_its_synopsis_names_the_commands_options():
    from test_report import doc_commands

    from conftest import run_archc

    examples = doc_commands("README.md", "diff")
    assert examples == [["diff", "specs/googlenet.yaml", "specs/inception_v3.yaml"]]
    for args in examples:
        r = run_archc(*args, cwd=ROOT)
        assert r.returncode == 0 and "stride 8" in r.stdout, (args, r.stderr)

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    synopsis = next(line for line in readme.splitlines() if line.startswith("- `archc diff "))
    options = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    assert {"--input", "--input-a", "--input-b", "--include-train-only", "--format"} <= options
    help_text = run_archc("diff", "--help").stdout
    for option in options:
        assert re.search(rf"{option}(?![a-z-])", help_text), option


@pytest.mark.parametrize("a, b", [("googlenet", "inception_v3"), ("resnet50", "resnet18"),
                                  ("inception_v4", "inception_resnet_v2")])
@pytest.mark.parametrize("width", [80, 120])
def test_the_table_fits_the_width_without_cutting_a_number_and_says_what_it_left_out(a, b, width):
    d = diff(a, b)
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(D.to_table(d, width=width))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width and "\u2026" not in text
    assert "stride 8" in text and "head" in text  # every stage is a row
    header = next(line for line in lines if "stage" in line)
    kept = [h for h in D.HEADERS if h in header]
    assert kept[:7] == list(D.HEADERS[:7]), header  # the counts and deltas always stay
    if kept != list(D.HEADERS):
        assert f"To fit {width} columns:" in text
    wide = Console(width=1000, file=io.StringIO(), color_system=None)
    wide.print(D.to_table(d))  # no width: every column, exact numbers
    assert all(h in wide.file.getvalue() for h in D.HEADERS) and "To fit" not in wide.file.getvalue()
    assert f"{d.total(d.a, 'params'):,}" in wide.file.getvalue()
