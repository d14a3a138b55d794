"""Seeded train-mode outputs equal the reference's: the forward runs the aux heads where they branch off.

The references' outputs were recorded by scripts/record_train_mode.py (torchvision, the deterministic
fill, training mode, `torch.manual_seed(0)`) into tests/fixtures/train_mode/.  With dropout on, they are
equal only when archc draws the dropout masks in the reference's order (codegen.execution_order).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archcompiler

from reference import fill, reference_input, relative_error

FIXTURES = Path(__file__).parent / "fixtures" / "train_mode"


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_seeded_train_mode_outputs_equal_the_reference(name: str) -> None:
    recorded = torch.load(FIXTURES / f"{name}.pt")
    model = archcompiler.build(name)
    fill(model)
    model.train()
    torch.manual_seed(recorded["seed"])
    with torch.no_grad():
        out = model(reference_input(name))
    assert set(out._fields) == set(recorded["outputs"])
    for key, ref in recorded["outputs"].items():
        got = getattr(out, key)
        assert got.shape == ref.shape
        # Other masks would differ by tens of percent (the control below: over 0.1).  The same masks differ
        # by rounding only, which depends on the CPU's kernels: recorded on one machine, inception_v3's
        # aux_logits differ by 1.4e-4 on an AVX-512 one, and googlenet's outputs by under 1e-5.
        assert relative_error(got, ref) < 1e-3, key


def test_aux_heads_run_last_would_draw_other_masks(monkeypatch) -> None:
    """The control: with the aux heads run after the trunk (archc's old order) the outputs differ."""
    import archcompiler.lower as lower

    monkeypatch.setattr(lower, "execution_order", lambda g: [n for n in g.order() if not g.nodes[n].train_only]
                        + [n for n in g.order() if g.nodes[n].train_only])
    recorded = torch.load(FIXTURES / "googlenet.pt")
    model = archcompiler.build("googlenet")
    fill(model)
    model.train()
    torch.manual_seed(recorded["seed"])
    with torch.no_grad():
        out = model(reference_input("googlenet"))
    assert relative_error(out.logits, recorded["outputs"]["logits"]) > 0.1
