"""specs/googlenet.yaml is torchvision's GoogLeNet: same keys, same count, same numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archcompiler
from reference import facts, fill, keys, reference_input, relative_error

SPEC = Path(__file__).parents[1] / "specs" / "googlenet.yaml"


@pytest.fixture(scope="module")
def model():
    return archcompiler.build(SPEC)


def test_state_dict_keys_and_shapes_equal_torchvision_in_order(model):
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == keys("googlenet")


def test_parameter_counts_with_and_without_aux_heads(model):
    assert sum(p.numel() for p in model.parameters()) == facts("googlenet")["params_total"] == 13_004_888
    assert archcompiler.summary(SPEC).total_params == 13_004_888
    assert archcompiler.summary(SPEC, aux_logits=False).total_params == 6_624_904
    assert sum(b.numel() for b in model.buffers()) == facts("googlenet")["buffers_total"]


def test_eval_logits_under_deterministic_fill_match_torchvision(model):
    fill(model)
    model.eval()
    with torch.no_grad():
        out = model(reference_input("googlenet"))
    assert relative_error(out, torch.tensor(facts("googlenet")["logits"])) < 1e-4


def test_top_level_output_shapes_match_torchvision():
    graph = archcompiler.compile_graph(SPEC)
    for name, shape in facts("googlenet")["child_output_shapes"].items():
        node = graph.scopes[name].output if name in graph.scopes else name
        assert graph.nodes[node].shape == tuple(shape[1:]), name


def test_static_macs_equal_fvcore_reference_counts():
    report = archcompiler.summary(SPEC)
    by_op = facts("googlenet")["fvcore_macs_by_operator_batch1"]
    assert report.total_macs == by_op["conv"] + by_op["linear"]


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
