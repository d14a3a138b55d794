"""docs/export.md's python blocks run, in order, in one namespace, from a scratch
directory that sees the repository's specs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_export_page_code_runs(tmp_path, monkeypatch):
    code = blocks(ROOT / "docs" / "export.md")
    assert len(code) >= 5
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_export"}
    for i, block in enumerate(code):
        exec(compile(block, f"docs/export.md block {i + 1}", "exec"), namespace)
    assert (tmp_path / "resnet50.py").exists() and (tmp_path / "lenet5.safetensors").exists()
