"""The examples of docs/training.md run.

The page's convention (stated at its top): every ```python block runs on a
CPU in a few seconds, in order, in one fresh namespace, from the repository
root; ```python no-run blocks (CUDA, NCCL) are only compiled; ```bash blocks
are commands whose scripts other tests run, so here they only have to name
files that exist.  The blocks run on one torch thread: on a small shared
machine a second thread that waits for a busy core slows every layer down.
Each block is compiled with its own line numbers in the
page, so a traceback points at the line of docs/training.md that failed.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "training.md"
TEXT = DOC.read_text(encoding="utf-8")

_FENCE = re.compile(r"^```([^`\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
KINDS = {"python", "python no-run", "bash"}


def _blocks() -> list[tuple[int, str, str]]:
    """(line of the first code line, info string, code) of every fenced block."""
    return [(TEXT[: m.start(2)].count("\n") + 1, m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(TEXT)]


BLOCKS = _blocks()
RUNNABLE = [b for b in BLOCKS if b[1] == "python"]
NO_RUN = [b for b in BLOCKS if b[1] == "python no-run"]


def _compile(line: int, code: str):
    # pad with blank lines so the code object's line numbers are the page's
    return compile("\n" * (line - 1) + code, str(DOC), "exec")


def test_every_block_follows_the_convention() -> None:
    assert {info for _, info, _ in BLOCKS} <= KINDS, [info for _, info, _ in BLOCKS]
    assert len(RUNNABLE) >= 8 and len(NO_RUN) >= 2
    assert "```python no-run" in TEXT[:2000]  # the convention is stated at the top
    for line, _, code in NO_RUN:
        _compile(line, code)  # syntax only: they need GPUs
    assert "RESULTS" not in TEXT  # the results table was filled in


def test_bash_blocks_name_existing_scripts() -> None:
    for _, info, code in BLOCKS:
        if info != "bash":
            continue
        for word in shlex.split(code.replace("\\\n", " "), comments=True):
            if word.endswith(".py") or word.startswith(("examples/", "specs/")):
                assert (ROOT / word).exists(), word


def test_python_blocks_run_in_order(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import torch
    import torch.distributed as dist

    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "docs_training"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small CPU models: a second thread waiting for a busy core costs 10x
    try:
        for line, _, code in RUNNABLE:
            try:
                exec(_compile(line, code), namespace)  # the page's own example code
            except Exception as error:
                raise AssertionError(f"the block at {DOC.name}:{line} failed: {error!r}") from error
    finally:
        torch.set_num_threads(threads)
        if dist.is_available() and dist.is_initialized():  # a failed block must not leak its process group
            dist.destroy_process_group()
    assert "'total':" in capsys.readouterr().out  # the losses() block printed its parts
