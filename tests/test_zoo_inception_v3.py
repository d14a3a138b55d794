"""specs/inception_v3.yaml's aux head behaves like torchvision's.

The reference checks (keys, counts, logits) are in test_zoo_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

import archcompiler

SPEC = Path(__file__).parents[1] / "specs" / "inception_v3.yaml"


def test_parameter_counts_with_and_without_aux_logits():
    assert archcompiler.summary(SPEC).total_params == 27_161_264
    assert archcompiler.summary(SPEC, aux_logits=False).total_params == 23_834_568


def test_train_mode_returns_logits_and_aux_logits_like_torchvision():
    model = archcompiler.build(SPEC, num_classes=10)
    model.train()
    out = model(torch.randn(2, 3, 299, 299))
    assert out._fields == ("logits", "aux_logits")  # torchvision's InceptionOutputs
    assert out.logits.shape == out.aux_logits.shape == (2, 10)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 299, 299)).shape == (2, 10)


def test_without_aux_logits_the_aux_head_is_not_built():
    model = archcompiler.build(SPEC, aux_logits=False)
    assert not any(k.startswith("AuxLogits") for k in model.state_dict())
