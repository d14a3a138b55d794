"""draw: modules fold by depth and open by name, one block draws on its own,
edges carry shapes (and concat channels), colours come from one palette with a
legend, training-only parts are dashed, and every format renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest

import archcompiler
from archcompiler.draw import (
    LEGEND,
    PAGE_MARGIN,
    PAGES,
    PALETTE,
    _id,
    block_diagram,
    block_instance,
    diagram,
    is_module,
    module_title,
    render,
    repeat_runs,
)
from archcompiler.errors import UserError
from archcompiler.ops import OPS

SPECS = Path(__file__).parents[1] / "specs"
SPEC = SPECS / "googlenet.yaml"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


@pytest.fixture(scope="module")
def graph():
    return archcompiler.compile_graph(SPEC)


def boxes(source: str) -> set[str]:
    return set(re.findall(r'^\s*"?([\w.]+)"? \[', source, re.M)) - {"graph", "node", "edge", "legend"}


def test_depth_one_draws_one_box_per_block_instance(graph):
    src = diagram(graph, 1).source
    assert {"inception3a", "inception5b", "aux1", "aux2", "conv1", "fc"} <= boxes(src)
    assert not any(b.startswith("inception3a.") for b in boxes(src))
    assert 'inception3a -> inception3b [label="256x28x28"]' in src
    assert src.count('style="rounded,filled,dashed"') >= 2  # the aux heads and their outputs


def test_plain_chains_are_lanes_not_boxes_and_list_modules_are_boxes():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    src = diagram(v4, 1).source
    assert not is_module(v4.scopes["features"]) and is_module(v4.scopes["features.6"])
    assert {f"features.{i}" for i in (3, 4, 5, 6, 10, 11, 18, 19)} <= boxes(src)  # the modules inside `features`
    assert 'subgraph cluster_features {' in src and 'label=features' in src
    resnet = archcompiler.compile_graph(SPECS / "resnet50.yaml")
    assert {"layer1.0", "layer4.1"} <= boxes(diagram(resnet, 1).source)


def test_repeat_is_one_box_titled_with_its_block_and_count():
    irv2 = archcompiler.compile_graph(SPECS / "inception_resnet_v2.yaml")
    src = diagram(irv2, 1).source
    assert {"repeat", "repeat_1", "repeat_2", "block8", "mixed_6a"} <= boxes(src)
    assert module_title(irv2, irv2.scopes["repeat_1"]) == "block17(scale=0.1) \u00d7 20"
    assert module_title(irv2, irv2.scopes["block8"]) == "block8(scale=1.0, act=None)"
    for depth in (1, 2, None):  # a repeat stays one box at every depth, `full` included
        drawn = boxes(diagram(irv2, depth).source)
        assert "repeat_1" in drawn and not any(b.startswith("repeat_1.") for b in drawn), depth
    unrolled = boxes(diagram(irv2, 2, unroll=["repeat"]).source)
    assert {"repeat.0", "repeat.9"} <= unrolled and "repeat_1" in unrolled  # only the one named opens


def test_a_run_of_identical_block_instances_is_one_box_with_its_count():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    assert repeat_runs(v4) == {"features.6": [f"features.{i}" for i in range(6, 10)],
                               "features.11": [f"features.{i}" for i in range(11, 18)],
                               "features.19": ["features.19", "features.20", "features.21"]}
    for depth in (1, 2, None):
        src = diagram(v4, depth).source
        assert src.count("inception_b \u00d7 7") == 1, depth
        assert not any(b.startswith(("features.12", "features.17")) for b in boxes(src)), depth
    src = diagram(v4, 1, unroll=["features.13"]).source  # any name in the run opens it
    assert {f"features.{i}" for i in range(11, 18)} <= boxes(src) and "inception_b \u00d7" not in src
    assert "inception_a \u00d7 4" in src
    resnet = archcompiler.compile_graph(SPECS / "resnet50.yaml")  # the first of a stage downsamples: not in the run
    assert repeat_runs(resnet)["layer3.1"] == [f"layer3.{i}" for i in range(1, 6)]


def test_cli_unroll_refuses_a_name_that_is_no_repeat(tmp_path):
    from typer.testing import CliRunner

    from archcompiler.cli import app

    out = tmp_path / "v4.dot"
    r = CliRunner().invoke(app, ["draw", str(SPECS / "inception_v4.yaml"), "-o", str(out), "--unroll", "features.11"])
    assert r.exit_code == 0, r.output
    assert '"features.12" [' in out.read_text()
    r = CliRunner().invoke(app, ["draw", str(SPECS / "inception_v4.yaml"), "-o", str(out), "--unroll", "stem"])
    assert r.exit_code != 0 and "no repeat of that name" in r.output


def test_full_depth_draws_every_layer_in_labelled_clusters(graph):
    src = diagram(graph, None).source
    assert set(graph.nodes) <= boxes(src)
    assert 'subgraph cluster_inception3a {' in src and 'label="inception3a: inception(64, 96, 128, 16, 32, 32)"' in src
    assert 'subgraph "cluster_inception3a.branch2" {' not in src  # a branch's chain is no cluster: rows hold it


def test_expand_opens_only_the_named_module(graph):
    src = diagram(graph, 1, expand=["inception3a"]).source
    assert {"inception3a.branch1", "inception3a.branch2.1", "inception3a.concat"} <= boxes(src)
    assert "inception3b" in boxes(src) and not any(b.startswith("inception3b.") for b in boxes(src))


def test_edges_into_a_concat_give_the_channels_they_fill(graph):
    src = diagram(graph, None).source
    assert 'label="64x28x28\n[0:64]"' in src and 'label="32x28x28\n[224:256]"' in src


def test_block_diagram_draws_one_template_from_its_input_to_its_output():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    src = block_diagram(v4, "inception_c").source
    assert {n for n in v4.scopes["features.19"].nodes} <= boxes(src)
    assert not any(b.startswith("features.20") for b in boxes(src))
    assert 'input [label="input\n1536x8x8"' in src and 'output [label="output\n1536x8x8"' in src
    assert 'label="inception_c, in Inception-v4, timm layout"' in src and 'tooltip="features.19"' in src
    with pytest.raises(UserError, match="has no block 'inception_z'"):
        block_diagram(v4, "inception_z")


def test_colours_come_from_the_palette_with_a_legend_of_those_used(graph):
    src = diagram(graph, None).source
    used = set(re.findall(r'fillcolor="(#[0-9a-f]{6})"', src))
    assert used <= set(PALETTE.values()) and len(used) >= 5
    legend = re.search(r"legend \[label=<(.*)>", src).group(1)
    assert "convolution" in legend and "pooling" in legend and "training mode only" in legend
    assert "normalisation" not in legend  # googlenet has no separate norm layer
    assert set(LEGEND) <= set(PALETTE)


def test_rankdir(graph):
    assert "rankdir=LR" in diagram(graph, 1, "LR").source


@needs_dot
def test_svg_parses_and_names_every_block_instance(graph):
    svg = render(graph, "svg", 1).decode()
    texts = {t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    assert {s.id for s in graph.scopes.values() if s.block} <= texts


@needs_dot
@pytest.mark.parametrize("view", [{"depth": 1}, {"depth": None}, {"block": "inception"}])
def test_png_is_a_valid_image(graph, view):
    data = render(graph, "png", **view)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100


def _layout(dot) -> dict[str, tuple[float, float]]:
    """Box centres as dot lays them out (points, y upwards)."""
    out = subprocess.run(["dot", "-Tjson0"], input=dot.source.encode(), capture_output=True, check=True).stdout
    return {o["name"]: tuple(map(float, o["pos"].split(","))) for o in json.loads(out)["objects"] if "pos" in o}


def _concats_in_order(graph, dot, centred: bool = True) -> int:
    """Assert that every concat drawn in `dot` has its branches left to right in the spec's order, itself centred
    below them; return how many were checked.  An input that also feeds another input (a dense layer's carried
    features) is not a branch; a concat folded into a box is not drawn."""
    pos = _layout(dot)
    checked = 0
    for node in graph.nodes.values():
        if not OPS[node.op].channel_ranges or _id(node.id) not in pos:
            continue
        carried = set().union(*(nx.ancestors(graph.dag, i) for i in node.inputs))
        branches = [_id(i) for i in node.inputs if i not in carried]
        if len(branches) < 2 or not all(b in pos for b in branches):
            continue
        xs = [pos[b][0] for b in branches]
        x, y = pos[_id(node.id)]
        assert xs == sorted(xs) and len(set(xs)) == len(xs), f"{node.id}: branches at x = {xs}"
        assert not centred or abs(x - (xs[0] + xs[-1]) / 2) <= 0.2 * (xs[-1] - xs[0]) + 10, f"{node.id} at {x}: {xs}"
        assert all(y < pos[b][1] for b in branches), f"{node.id} is not below its branches"
        checked += 1
    return checked


@needs_dot
@pytest.mark.parametrize("spec", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_every_concat_keeps_the_specs_branch_order_left_to_right_in_the_laid_out_diagram(spec):
    graph = archcompiler.compile_graph(SPECS / f"{spec}.yaml")
    checked = _concats_in_order(graph, diagram(graph, None))
    for block in sorted({s.block for s in graph.scopes.values() if s.block}):
        checked += _concats_in_order(graph, block_diagram(graph, block))
    joins = sum(1 for n in graph.nodes.values() if OPS[n.op].channel_ranges
                and len(n.inputs) - len(set(n.inputs) & set().union(*(nx.ancestors(graph.dag, i) for i in n.inputs))) > 1)
    assert (checked > 0) == (joins > 0), (checked, joins)


@needs_dot
def test_unrolled_repeats_keep_the_branch_order_too():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    # In order, but inception_c's concat is not centred when every copy is drawn (its nested splits are wide).
    unrolled = diagram(v4, None, unroll=["features.6", "features.11", "features.19"])
    assert _concats_in_order(v4, unrolled, centred=False) == 25


GENERATED = re.compile(r"\brepeat_\d|[A-Za-z_]{2,}\w*\.\d+\b|(^|[.\s])_\w")  # repeat_1, features.6, _1ab


def _labels(source: str) -> list[str]:
    found = re.finditer(r'\blabel=(?:"((?:[^"\\]|\\.)*)"|([\w.]+))', source, re.S)
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in found]


@pytest.mark.parametrize("spec", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_labels_carry_no_generated_names_nor_say_a_thing_twice_and_tooltips_carry_the_dotted_name(spec):
    graph = archcompiler.compile_graph(SPECS / f"{spec}.yaml")
    views = [diagram(graph, 1), diagram(graph, None)]
    views += [block_diagram(graph, b) for b in sorted({s.block for s in graph.scopes.values() if s.block})]
    for dot in views:
        src = dot.source
        for label in _labels(src):
            lines = [line for line in label.split("\n") if line]
            for line in lines:
                assert not GENERATED.search(line), f"{dot.name}: generated name in label {label!r}"
            assert len(set(lines)) == len(lines), f"{dot.name}: {label!r} says a line twice"
            assert len(lines) < 2 or not lines[0].isdigit(), f"{dot.name}: a list position titles {label!r}"
            if len(lines) >= 2:
                assert lines[1].split()[0].split("(")[0] != lines[0], f"{dot.name}: {label!r}"
        for box in boxes(src) - {"input", "output"}:
            if box in graph.nodes or box in graph.scopes:
                assert re.search(rf'"?{re.escape(box)}"? \[[^\]]*tooltip="?{re.escape(box)}', src), box


def test_edges_and_boxes_write_shapes_as_the_summary_does(graph):
    src = diagram(graph, 1).source
    assert 'inception3a -> inception3b [label="256x28x28"]' in src and "28x28x256" not in src
    assert 'input [label="input\n3x224x224"' in src


def test_annotate_adds_a_line_of_counts_per_box_and_totals_in_the_legend():
    resnet = archcompiler.compile_graph(SPECS / "resnet50.yaml")
    src = diagram(resnet, 1, annotate=("params", "macs", "rf")).source
    assert 'label="conv1\nconv 7x7/2, 64\n9.41K params, 118 MMACs, RF 7"' in src
    assert "bottleneck(c=256, s=1, project=False) \u00d7 5\n1024x14x14\n5.59M params, 1.09 GMACs, RF 267" in src
    assert "total: 25.6M params, 4.09 GMACs, RF 619" in src
    only = diagram(resnet, 1, annotate=("params",)).source
    assert "total: 25.6M params<" in only and "MACs" not in only and "RF " not in only
    assert "params" not in diagram(resnet, 1).source
    g = archcompiler.compile_graph(SPEC)
    block = block_diagram(g, "inception", annotate=("params", "macs")).source
    assert "this inception: 156K params, 122 MMACs" in block
    assert "conv 3x3, 128 +BN +relu\n111K params, 86.7 MMACs" in block


def test_cli_annotate_refuses_an_unknown_count(tmp_path):
    from typer.testing import CliRunner

    from archcompiler.cli import app

    out = tmp_path / "r.dot"
    r = CliRunner().invoke(app, ["draw", str(SPECS / "resnet50.yaml"), "-o", str(out), "--annotate", "params,rf"])
    assert r.exit_code == 0, r.output
    assert "RF 619" in out.read_text()
    r = CliRunner().invoke(app, ["draw", str(SPECS / "resnet50.yaml"), "-o", str(out), "--annotate", "flops"])
    assert r.exit_code != 0 and "--annotate takes params, macs, rf" in r.output


@needs_dot
def test_dpi_sets_a_pngs_resolution(graph):
    def width(data: bytes) -> int:
        return struct.unpack(">II", data[16:24])[0]

    low, high = render(graph, "png", 1, dpi=48), render(graph, "png", 1, dpi=192)
    assert 3.8 < width(high) / width(low) < 4.2
    with pytest.raises(UserError, match="--dpi is for PNG"):
        render(graph, "svg", 1, dpi=300)


HEAVY = os.environ.get("ARCHC_HEAVY", "") not in ("", "0")
# Every spec file in the default run (the variants of a family differ in depth, which the runs fold); every model
# of the zoo with ARCHC_HEAVY=1.
PAGE_CASES = sorted(archcompiler.zoo.list_models()) if HEAVY else sorted(str(p) for p in SPECS.glob("*.yaml"))


def _printed(svg_bytes: bytes) -> tuple[float, float, float]:
    """(width, height, smallest text) of an SVG as placed on the page, in points: its text sizes are in the
    units of its viewBox, which its width and height scale."""
    svg = ET.fromstring(svg_bytes)
    width, height = (float(svg.get(k).removesuffix("pt")) for k in ("width", "height"))
    view_width = float(svg.get("viewBox").split()[2])
    sizes = [float(t.get("font-size")) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    return width, height, min(sizes) * width / view_width


@needs_dot
@pytest.mark.parametrize("spec", PAGE_CASES, ids=lambda p: Path(p).stem)
def test_every_zoo_overview_fits_one_a4_page_with_8pt_text(spec):
    g = archcompiler.compile_graph(spec)
    width, height, smallest = _printed(render(g, "svg", 1, page="A4"))
    text_width, text_height = (d - 2 * PAGE_MARGIN for d in PAGES["A4"])
    assert width <= text_width and height <= text_height, (width, height)
    assert smallest >= 8 - 1e-6, smallest


@needs_dot
def test_the_wrapped_page_layout_keeps_the_branch_order():
    g = archcompiler.compile_graph(SPEC)
    wrapped = diagram(g, None, columns=3, style="print")
    assert len(re.findall(r"__wrap\"? \[label", wrapped.source)) == 4  # two column breaks, each a lane of two points
    # In order; a concat whose module sits beside an auxiliary head is not always centred when wrapped.
    assert _concats_in_order(g, wrapped, centred=False) == 9
    v2 = archcompiler.compile_graph(SPECS / "inception_v2.yaml")
    assert _concats_in_order(v2, diagram(v2, 2, columns=2, style="print")) > 0


@needs_dot
def test_a_figure_that_fits_no_page_is_refused_with_its_size_and_what_to_do():
    irv2 = archcompiler.compile_graph(SPECS / "inception_resnet_v2.yaml")
    with pytest.raises(UserError, match=r"does not fit one A5 page .* 312 x 487 pt, and the figure is \d+ x \d+ pt") as e:
        render(irv2, "svg", None, "LR", unroll=["repeat", "repeat_1", "repeat_2"], page="A5")
    assert "a smaller --depth, or --block NAME" in e.value.hint
    with pytest.raises(UserError, match="unknown page size"):
        render(irv2, "svg", 1, page="B5")


@needs_dot
def test_page_wraps_an_overview_into_columns_to_fit_one_page():
    vgg = archcompiler.compile_graph("vgg19_bn")  # 47 boxes: 1207 pt tall in one column of the print style
    wrapped = {b for b in boxes(diagram(vgg, 1, columns=2).source) if not b.endswith("__wrap")}
    assert wrapped == boxes(diagram(vgg, 1).source)
    source = render(vgg, "dot", 1, page="A4").decode()
    assert len(re.findall(r"__wrap\"? \[label", source)) >= 4 and "newrank=true" in source  # wrapped: at least three columns
    width, height, _ = _printed(render(vgg, "svg", 1, page="A4"))
    assert width <= PAGES["A4"][0] - 2 * PAGE_MARGIN and height <= PAGES["A4"][1] - 2 * PAGE_MARGIN


def test_a_block_figure_draws_its_fullest_instance_or_the_one_named():
    mv2 = archcompiler.compile_graph("mobilenet_v2")
    assert len(mv2.scopes["features.1"].nodes) < len(block_instance(mv2, "inverted_residual").nodes)  # t = 1
    src = block_diagram(mv2, "inverted_residual").source
    assert "conv 1x1, 144" in src and "conv 3x3, 144 g144" in src  # the expansion, then the depthwise conv
    assert 'input -> "features.3.add"' in src and '"features.3.add" [label="residual add"' in src  # the residual
    first = block_diagram(mv2, "features.1").source  # one instance by its dotted name
    assert "residual add" not in first and 'tooltip="features.1"' in first
    resnet = archcompiler.compile_graph(SPECS / "resnet50.yaml")  # of equals, the first: it has the projection
    assert block_instance(resnet, "bottleneck").id == "layer1.0"
    with pytest.raises(UserError, match="or give one instance by its dotted name"):
        block_diagram(mv2, "bottleneck")


def test_a_run_whose_blocks_differ_in_a_rate_alone_is_one_box_with_the_range():
    convnext = archcompiler.compile_graph("convnext_base")
    assert repeat_runs(convnext)["features.5.0"] == [f"features.5.{i}" for i in range(27)]
    assert "cnblock(n=6\u202632, c=512) \u00d7 27" in diagram(convnext, 1).source
    mv2 = archcompiler.compile_graph("mobilenet_v2")  # a 1x1 then a 3x3 conv block: the same shapes, not a run
    assert not any(box.startswith("features.3.conv") for box in repeat_runs(mv2))


def test_a_block_fed_by_the_network_input_draws_an_input_box_with_its_shape():
    effnet = archcompiler.compile_graph(SPECS / "efficientnet.yaml")
    src = block_diagram(effnet, "features.0").source  # the stem's cna takes the network's input
    assert 'input [label="input\n3x224x224"' in src and 'input -> "features.0.0"' in src


@needs_dot
def test_the_docs_draw_examples_run(tmp_path, monkeypatch):
    import shlex

    from typer.testing import CliRunner

    from archcompiler.cli import app

    text = (SPECS.parent / "docs" / "summaries.md").read_text(encoding="utf-8")
    section = text.split("## `archc draw`", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    examples = [shlex.split(line.split("  #", 1)[0])[1:] for line in section.splitlines() if line.strip()]
    assert len(examples) >= 6 and ["--page", "A4"] == examples[4][-2:]
    monkeypatch.chdir(tmp_path)  # the examples write into the current folder
    for args in examples:
        args = [str(SPECS.parent / a) if a.startswith("specs/") else a for a in args]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
        assert (tmp_path / args[args.index("-o") + 1]).stat().st_size > 0


@needs_dot
def test_a_module_figure_for_print_fits_the_page_or_is_refused_saying_what_to_do():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    width, height, smallest = _printed(render(v4, "svg", block="inception_c", page="A4"))
    assert width <= PAGES["A4"][0] - 2 * PAGE_MARGIN and height <= PAGES["A4"][1] - 2 * PAGE_MARGIN
    assert smallest >= 8 - 1e-6
    mv3 = archcompiler.compile_graph(SPECS / "mobilenet_v3.yaml")  # its bneck is taller than the page
    with pytest.raises(UserError, match="does not fit one A4 page") as e:
        render(mv3, "svg", block="bneck", page="A4")
    assert "not wrapped into columns" in e.value.hint and "--rankdir LR" in e.value.hint
