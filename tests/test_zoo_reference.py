"""Every spec written after a reference implementation is that implementation.

For each pair (spec, reference facts in tests/fixtures/reference/):
- the state_dict keys, shapes and dtypes equal the reference's, in order;
- the parameter and buffer counts equal the reference's;
- under the deterministic fill, the eval logits are within 1e-4 relative
  error of the reference's;
- every top-level child has the reference's output shape;
- the static conv + linear MACs equal fvcore's counts on the reference.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archcompiler

from reference import facts, keys, reference_input, reference_state, relative_error

SPECS = Path(__file__).parents[1] / "specs"

# spec file stem -> reference facts name
REFERENCES = {
    "googlenet": "googlenet",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "inception_resnet_v2": "inception_resnet_v2",
    "alexnet": "alexnet",
    "vgg16": "vgg16",
    "resnet50": "resnet50",
}


@pytest.fixture(scope="module", params=sorted(REFERENCES))
def case(request):
    spec = SPECS / f"{request.param}.yaml"
    torch.manual_seed(0)
    return spec, REFERENCES[request.param], archcompiler.build(spec)


def test_state_dict_keys_shapes_and_dtypes_equal_reference_in_order(case):
    _, name, model = case
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == keys(name)


def test_parameter_and_buffer_counts_equal_reference(case):
    spec, name, model = case
    assert sum(p.numel() for p in model.parameters()) == facts(name)["params_total"]
    assert sum(b.numel() for b in model.buffers()) == facts(name)["buffers_total"]
    assert archcompiler.summary(spec).total_params == facts(name)["params_total"]


def test_eval_logits_under_deterministic_fill_match_reference(case):
    _, name, model = case
    model.load_state_dict(reference_state(name), strict=True)  # the fill, by the reference's keys
    model.eval()
    with torch.no_grad():
        out = model(reference_input(name))
    assert relative_error(out, torch.tensor(facts(name)["logits"])) < 1e-4


def test_top_level_output_shapes_match_reference(case):
    spec, name, _ = case
    graph = archcompiler.compile_graph(spec)
    for child, shape in facts(name)["child_output_shapes"].items():
        node = graph.scopes[child].output if child in graph.scopes else child
        assert graph.nodes[node].shape == tuple(shape[1:]), child


def test_static_macs_equal_fvcore_reference_counts(case):
    spec, name, _ = case
    by_op = facts(name)["fvcore_macs_by_operator_batch1"]
    assert archcompiler.summary(spec).total_macs == by_op["conv"] + by_op["linear"]
