"""docs/architecture.md is the map of the package: it names every module, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "archcompiler"
MAP = (ROOT / "docs" / "architecture.md").read_text()


def test_every_module_is_on_the_map():
    modules = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py"}
    named = set(re.findall(r"`([a-z_]+\.py)`", MAP))
    assert modules - named == set(), "describe these in docs/architecture.md"
    families = {p.name for p in (PACKAGE / "ops").glob("*.py")} - {"__init__.py"}
    assert families - named == set(), "name these op families in docs/architecture.md"


def test_the_map_names_no_module_that_does_not_exist():
    existing = {p.name for p in PACKAGE.rglob("*.py")}
    named = set(re.findall(r"`([a-z_]+\.py)`", MAP))
    assert named - existing == set()


def test_the_dropout_example_is_the_registered_code():
    block = re.search(r"```python\n(register\(OpDef\(\"dropout\".*?)```", MAP, re.S)[1]
    assert block.strip() in (PACKAGE / "ops" / "dense.py").read_text()
