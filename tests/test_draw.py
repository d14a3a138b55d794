"""draw: diagrams fold blocks by depth, carry shapes on edges, mark training-only parts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import archcompiler
from archcompiler.draw import PALETTE, diagram, render

SPEC = Path(__file__).parents[1] / "specs" / "googlenet.yaml"


@pytest.fixture(scope="module")
def graph():
    return archcompiler.compile_graph(SPEC)


def nodes(source: str) -> set[str]:
    return set(re.findall(r'^\s*"?([\w.]+)"? \[', source, re.M))


def test_depth_one_draws_one_box_per_block_instance(graph):
    src = diagram(graph, 1).source
    boxes = nodes(src)
    assert {"inception3a", "inception5b", "aux1", "aux2", "conv1", "fc"} <= boxes
    assert not any(b.startswith("inception3a.") for b in boxes)
    assert 'inception3a -> inception3b [label="28x28x256"]' in src
    assert src.count("style=\"rounded,filled,dashed\"") >= 2  # the aux heads and their outputs


def test_full_depth_draws_every_layer_in_clusters(graph):
    src = diagram(graph, None).source
    assert set(graph.nodes) <= nodes(src)
    assert "subgraph cluster_inception3a" in src and "label=\"inception3a: inception\"" in src


def test_depth_two_opens_blocks_one_level(graph):
    boxes = nodes(diagram(graph, 2).source)
    assert {"inception3a.branch1", "inception3a.branch2", "inception3a.concat"} <= boxes
    assert "inception3a.branch2.0" not in boxes


def test_colours_come_from_the_palette(graph):
    src = diagram(graph, None).source
    used = set(re.findall(r'fillcolor="(#[0-9a-f]{6})"', src))
    assert used <= set(PALETTE.values()) and len(used) >= 5


def test_rankdir(graph):
    assert "rankdir=LR" in diagram(graph, 1, "LR").source


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_render_svg_names_every_block_instance(graph):
    import xml.etree.ElementTree as ET

    svg = render(graph, "svg", 1).decode()
    ET.fromstring(svg)
    for scope in graph.scopes.values():
        if scope.block:
            assert f">{scope.id}<" in svg
