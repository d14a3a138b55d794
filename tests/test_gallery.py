"""scripts/gallery.py regenerates docs/gallery.md; the committed gallery covers every spec."""

from __future__ import annotations

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


def test_committed_gallery_shows_every_spec_and_a_module_of_every_inception_network():
    page = (ROOT / "docs" / "gallery.md").read_text()
    for spec in SPECS:
        assert f"![{spec}](gallery/{spec}.svg)" in page
        assert (ROOT / "docs" / "gallery" / f"{spec}.svg").exists()
    for spec in (s for s in SPECS if any(f in s for f in ("inception", "googlenet", "resnet", "mobilenet"))):
        section = page.split(f"`specs/{spec}.yaml`")[1].split("## ")[0]
        graph = archcompiler.compile_graph(ROOT / "specs" / f"{spec}.yaml")
        for block in {s.block for s in graph.scopes.values() if s.block}:  # every module of these families
            assert f"--block {block}`" in section, (spec, block)
            assert (ROOT / "docs" / "gallery" / f"{spec}.{block}.svg").exists()
