"""DDP and FSDP2 on compiled specs: two CPU processes under torchrun (gloo).

Each case launches examples/train_ddp.py with
``python -m torch.distributed.run --standalone --nproc_per_node 2`` (the
standalone rendezvous picks a free port) and reads the ``rank{R}.json``
each rank writes.  After training, both ranks must hold identical
parameters, must have seen different data (their own shards), must agree on
the all-reduced loss, and that loss must have fallen.  Cases: LeNet-5 (RBF
penalties, a partially connected conv, a prototype buffer) under DDP, and a
tiny network with BatchNorm and a training-only auxiliary head (the loss is
`archcompiler.training.losses` over both heads) under DDP and under FSDP2
(``--wrap fsdp``), which must train it to the same bits.  About 10 s per
launch, mostly start-up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "examples" / "train_ddp.py"



def test_gloo_is_available():
    # torch's CPU wheel ships gloo; everything below needs it.
    assert dist.is_available() and dist.is_gloo_available()

# A network with BatchNorm and an auxiliary classifier that runs only in training mode.
TINY_AUX = """\
archc: 1
name: tiny_aux
input: [1, 32, 32]
params:
  num_classes: 10
body:
  stem: {conv: {out: 8, k: 3, pad: 1, bias: false, norm: true, act: relu}}
  pool1: {maxpool: {k: 2, s: 2}}
  stage: {conv: {out: 16, k: 3, pad: 1, bias: false, norm: true, act: relu}}
  aux:
    seq:
      pool: {adaptive_avgpool: {size: 4}}
      flatten: flatten
      fc: {linear: {out: $num_classes}}
    from: pool1
  pool: {adaptive_avgpool: {size: 4}, from: stage}
  flatten: flatten
  fc: {linear: {out: $num_classes}}
outputs:
  logits: fc
  aux: {node: aux, train_only: true}
"""

CASES = {  # name: (spec text or None for specs/NAME.yaml, wrapper, worker options, heads)
    "lenet5-ddp": (None, "ddp", ["--lr", "1e-3"], ["main"]),
    "tiny_aux-ddp": (TINY_AUX, "ddp", ["--lr", "1e-2"], ["logits", "aux"]),
    "tiny_aux-fsdp": (TINY_AUX, "fsdp", ["--lr", "1e-2"], ["logits", "aux"]),
}
STEPS = 20


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run(case) -> (both ranks' records, rank 0's stdout); each case is launched once per module."""
    done: dict[str, tuple[list[dict], str]] = {}

    def launch(case: str) -> tuple[list[dict], str]:
        if case not in done:
            spec_text, wrapper, extra, _ = CASES[case]
            tmp = tmp_path_factory.mktemp(case)
            name = case.split("-")[0]
            spec = ROOT / "specs" / f"{name}.yaml"
            if spec_text is not None:
                spec = tmp / f"{name}.yaml"
                spec.write_text(spec_text)
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       str(WORKER), "--spec", str(spec), "--wrap", wrapper, "--steps", str(STEPS),
                       "--backend", "gloo", "--out", str(tmp / "out"), *extra]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per rank on a small machine
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            done[case] = ([json.loads((tmp / "out" / f"rank{r}.json").read_text()) for r in (0, 1)], result.stdout)
        return done[case]

    return launch


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_agree_and_learn(run, case: str) -> None:
    ranks, stdout = run(case)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" and r["wrap"] == CASES[case][1] for r in ranks)
    assert all(r["heads"] == CASES[case][3] for r in ranks)
    # gradients averaged over the ranks: the same parameters on both after every step ...
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]
    # ... although each rank trained on its own shard of the data,
    assert ranks[0]["losses"][0] != ranks[1]["losses"][0]
    # and both saw the same all-reduced loss, which fell.
    mean = ranks[0]["mean_losses"]
    assert mean == ranks[1]["mean_losses"] and len(mean) == STEPS
    first, last = sum(mean[:5]) / 5, sum(mean[-5:]) / 5
    assert last < 0.6 * first, mean
    assert re.search(r"^test accuracy: \d+\.\d\d %$", stdout, re.M), stdout


def test_fsdp_trains_exactly_like_ddp(run) -> None:
    """Both average the same two gradients ((a + b) / 2 is exact in binary floating point whatever the
    order), and Adam is elementwise: sharding changes where the numbers live, not what they are."""
    ddp, _ = run("tiny_aux-ddp")
    fsdp, _ = run("tiny_aux-fsdp")
    assert fsdp[0]["mean_losses"] == ddp[0]["mean_losses"]
    assert fsdp[0]["params_sha256"] == ddp[0]["params_sha256"]
