"""draw: modules fold by depth and open by name, one block draws on its own,
edges carry shapes (and concat channels), colours come from one palette with a
legend, training-only parts are dashed, and every format renders."""

from __future__ import annotations

import re
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import archcompiler
from archcompiler.draw import LEGEND, PALETTE, block_diagram, diagram, is_module, module_title, render
from archcompiler.errors import UserError

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
    assert 'inception3a -> inception3b [label="28x28x256"]' in src
    assert src.count('style="rounded,filled,dashed"') >= 2  # the aux heads and their outputs


def test_plain_chains_are_lanes_not_boxes_and_list_modules_are_boxes():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    src = diagram(v4, 1).source
    assert not is_module(v4.scopes["features"]) and is_module(v4.scopes["features.6"])
    assert {f"features.{i}" for i in range(3, 22)} <= boxes(src)  # the modules inside the `features` list
    assert 'subgraph cluster_features {' in src and 'label=features' in src
    resnet = archcompiler.compile_graph(SPECS / "resnet50.yaml")
    assert {"layer1.0", "layer4.2"} <= boxes(diagram(resnet, 1).source)


def test_repeat_is_one_box_titled_with_its_block_and_count():
    irv2 = archcompiler.compile_graph(SPECS / "inception_resnet_v2.yaml")
    src = diagram(irv2, 1).source
    assert {"repeat", "repeat_1", "repeat_2", "block8", "mixed_6a"} <= boxes(src)
    assert module_title(irv2, irv2.scopes["repeat_1"]) == "block17(scale=0.1) x20"
    assert module_title(irv2, irv2.scopes["block8"]) == "block8(scale=1.0, act=None)"
    assert {"repeat.0", "repeat.9"} <= boxes(diagram(irv2, 2).source)  # depth 2 opens the repeats


def test_full_depth_draws_every_layer_in_labelled_clusters(graph):
    src = diagram(graph, None).source
    assert set(graph.nodes) <= boxes(src)
    assert 'subgraph cluster_inception3a {' in src and 'label="inception3a: inception(64, 96, 128, 16, 32, 32)"' in src
    assert 'subgraph "cluster_inception3a.branch2" {' in src  # a branch chain is a lane


def test_expand_opens_only_the_named_module(graph):
    src = diagram(graph, 1, expand=["inception3a"]).source
    assert {"inception3a.branch1", "inception3a.branch2.1", "inception3a.concat"} <= boxes(src)
    assert "inception3b" in boxes(src) and not any(b.startswith("inception3b.") for b in boxes(src))


def test_edges_into_a_concat_give_the_channels_they_fill(graph):
    src = diagram(graph, None).source
    assert 'label="28x28x64\n[0:64]"' in src and 'label="28x28x32\n[224:256]"' in src


def test_block_diagram_draws_one_template_from_its_input_to_its_output():
    v4 = archcompiler.compile_graph(SPECS / "inception_v4.yaml")
    src = block_diagram(v4, "inception_c").source
    assert {n for n in v4.scopes["features.19"].nodes} <= boxes(src)
    assert not any(b.startswith("features.20") for b in boxes(src))
    assert 'input [label="input\n8x8x1536"' in src and 'output [label="output\n8x8x1536"' in src
    assert 'label="inception_c, as features.19 of Inception-v4, timm layout"' in src
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
