"""The static stages never import torch: summary, check, diff and draw stay instant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def test_summary_api_does_not_import_torch():
    out = _run(
        "import sys, json, archcompiler\n"
        "r = archcompiler.summary('specs/googlenet.yaml')\n"
        "from archcompiler.draw import diagram\n"
        "diagram(archcompiler.compile_graph('specs/googlenet.yaml'), None).source\n"
        "print(json.dumps([r.total_params, 'torch' in sys.modules]))"
    )
    assert json.loads(out) == [13_004_888, False]


def test_summary_imports_networkx_only_for_a_forward_from(tmp_path):
    # Every edge pointing forward, the order is the declaration's and there is no cycle to look for; a
    # `from:` naming a later layer needs networkx's topological sort.
    forward = tmp_path / "forward.yaml"
    forward.write_text("archc: 1\nname: f\ninput: [3, 8, 8]\nbody:\n"
                       "  a: {conv: {out: 4, k: 1}, from: b}\n  b: {relu: null, from: input}\noutputs:\n  out: a\n")
    code = ("import sys, json, archcompiler\n"
            "archcompiler.summary({!r})\n"
            "print(json.dumps('networkx' in sys.modules))")
    assert json.loads(_run(code.format("specs/inception_resnet_v2.yaml"))) is False
    assert json.loads(_run(code.format(str(forward)))) is True


def test_summary_and_check_commands_do_not_import_torch(tmp_path):
    # The commands one after another in one process: torch, once imported, stays in sys.modules, so the
    # first command that imports it is the first to print TORCH.
    commands = [["summary", "specs/googlenet.yaml", "--format", "json"], ["check", "specs/googlenet.yaml"],
                ["summary", "specs/googlenet_paper.yaml", "--paper", "--format", "csv"],
                ["diff", "specs/inception_v4.yaml", "specs/inception_resnet_v2.yaml", "--format", "json"],
                ["draw", "specs/googlenet.yaml", "-o", str(tmp_path / "archc-no-torch.dot"), "--depth", "full"]]
    code = (
        "import sys, runpy\n"
        f"for args in {commands!r}:\n"
        "    sys.argv = ['archc', *args]\n"
        "    try:\n"
        "        runpy.run_module('archcompiler.cli', run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (args, e.code)\n"
        "    print('@@', 'TORCH' if 'torch' in sys.modules else 'NO-TORCH', args[0], flush=True)"
    )
    verdicts = [line for line in _run(code).splitlines() if line.startswith("@@ ")]
    assert verdicts == [f"@@ NO-TORCH {args[0]}" for args in commands]
    assert (tmp_path / "archc-no-torch.dot").read_text().startswith("digraph")
