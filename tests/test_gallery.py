"""scripts/gallery.py regenerates docs/gallery.md; the committed gallery covers every spec."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import archcompiler

ROOT = Path(__file__).parents[1]
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_gallery_script_draws_a_spec_and_its_block_figure(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gallery.py"), "--only", "googlenet_paper",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pictures = sorted(p.name for p in (tmp_path / "gallery").iterdir())
    assert pictures == ["googlenet_paper.aux.svg", "googlenet_paper.inception.svg", "googlenet_paper.svg"]
    for name in pictures:
        ET.fromstring((tmp_path / "gallery" / name).read_text())
    page = (tmp_path / "gallery.md").read_text()
    assert "![googlenet_paper](gallery/googlenet_paper.svg)" in page
    assert "--block inception" in page


def test_gallery_script_refuses_an_unknown_spec(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gallery.py"), "--only", "nonet", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no spec named nonet" in r.stderr


def _gallery_script():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "scripts" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_gallery_shows_every_spec_and_every_module():
    gallery = _gallery_script()
    page = (ROOT / "docs" / "gallery.md").read_text()
    left_out = set()
    for spec in SPECS:
        assert f"![{spec}](gallery/{spec}.svg)" in page
        assert (ROOT / "docs" / "gallery" / f"{spec}.svg").exists()
        section = page.split(f"`specs/{spec}.yaml`")[1].split("## ")[0]
        graph = archcompiler.compile_graph(ROOT / "specs" / f"{spec}.yaml")
        for block in {s.block for s in graph.scopes.values() if s.block}:
            if gallery.is_stage(graph, block):
                left_out.add((spec, block))
                continue
            assert f"--block {block}`" in section, (spec, block)
            assert (ROOT / "docs" / "gallery" / f"{spec}.{block}.svg").exists()
    # Only stages are left out: blocks whose every layer sits in a nested block.
    assert left_out == {("efficientnet", "stage"), ("efficientnet_v2", "stage"), ("resnet", "stage"),
                        ("mobilenet_v3", "large_features")}
    for spec, block in [("mobilenet_v2", "inverted_residual"), ("mobilenet_v3", "se"), ("convnext", "cnblock"),
                        ("densenet", "dense_layer"), ("shufflenet_v2", "unit"), ("regnet", "bottleneck"),
                        ("resnet", "bottleneck")]:  # the newer families' modules
        assert f"archc draw specs/{spec}.yaml --block {block}`" in page, (spec, block)
    drawn = {p.name for p in (ROOT / "docs" / "gallery").iterdir()}
    linked = set(re.findall(r"\]\(gallery/([^)]+)\)", page))
    assert drawn == linked  # no picture left over from an older gallery
