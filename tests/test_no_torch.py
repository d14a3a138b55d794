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


def test_summary_and_check_commands_do_not_import_torch():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['archc', {args}]\n"
        "try:\n"
        "    runpy.run_module('archcompiler.cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    for args in ("'summary', 'specs/googlenet.yaml', '--format', 'json'", "'check', 'specs/googlenet.yaml'",
                 "'summary', 'specs/googlenet_paper.yaml', '--paper', '--format', 'csv'",
                 "'diff', 'specs/inception_v4.yaml', 'specs/inception_resnet_v2.yaml', '--format', 'json'",
                 "'draw', 'specs/googlenet.yaml', '-o', '/tmp/archc-no-torch.dot', '--depth', 'full'"):
        assert _run(code.format(args=args)).strip().endswith("NO-TORCH")
