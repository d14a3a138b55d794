"""specs/googlenet.yaml's aux heads behave like torchvision's.

The reference checks (keys, counts, logits) are in test_zoo_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archcompiler

SPEC = Path(__file__).parents[1] / "specs" / "googlenet.yaml"


@pytest.fixture(scope="module")
def model():
    return archcompiler.build(SPEC)


def test_parameter_counts_with_and_without_aux_heads():
    assert archcompiler.summary(SPEC).total_params == 13_004_888
    assert archcompiler.summary(SPEC, aux_logits=False).total_params == 6_624_904


def test_train_mode_returns_main_and_aux_logits_as_named_tuple(model):
    model.train()
    out = model(torch.randn(2, 3, 224, 224))
    assert out._fields == ("logits", "aux2", "aux1")
    assert all(t.shape == (2, 1000) for t in out)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_without_aux_logits_training_returns_plain_logits():
    model = archcompiler.build(SPEC, aux_logits=False, num_classes=10)
    model.train()
    out = model(torch.randn(2, 3, 224, 224))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert not any(k.startswith("aux") for k in model.state_dict())
