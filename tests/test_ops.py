"""The op registry: every op is complete, and every spec op compiles, lowers and runs as inferred."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F

import archcompiler
from archcompiler.draw import PALETTE
from archcompiler.lower import shape_mismatches
from archcompiler.ops import OPS, Args, JoinArgs, spec_ops

from conftest import make_spec

# op -> (input shape, body) of a tiny spec whose last layer `out` is that op
TINY = {
    "hardswish": ((3, 7, 6), "out: hardswish"),
    "hardsigmoid": ((3, 7, 6), "out: hardsigmoid"),
    "layernorm2d": ((3, 7, 6), "out: {layernorm2d: {eps: 1.0e-6}}"),
    "layernorm": ((3, 7, 6), "out: {layernorm: {eps: 1.0e-6}}"),
    "permute": ((3, 7, 6), "out: {permute: {dims: [1, 2, 0]}}"),
    "reshape": ((3, 7, 6), "out: {reshape: {shape: [3, -1]}}"),
    "chunk": ((4, 7, 6), "out: {chunk: {n: 2, index: 1}}"),
    "channel_shuffle": ((4, 7, 6), "out: {channel_shuffle: {groups: 2}}"),
    "stochastic_depth": ((3, 7, 6), "out: {stochastic_depth: {p: 0.2}}"),
    "layer_scale": ((3, 7, 6), "out: {layer_scale: {init: 0.5}}"),
    "mul": ((3, 7, 6), "g: global_avgpool\nout: {mul: null, act: relu, from: [input, g]}"),
    "conv": ((3, 7, 6), "out: {conv: {out: 4, k: 3, s: 2, pad: 1, norm: true, act: relu}}"),
    "maxpool": ((3, 7, 6), "out: {maxpool: {k: 3, s: 2, ceil: true}}"),
    "avgpool": ((3, 7, 6), "out: {avgpool: {k: 3, s: 2, pad: 1}}"),
    "adaptive_avgpool": ((3, 7, 6), "out: {adaptive_avgpool: {size: [2, 3]}}"),
    "adaptive_maxpool": ((3, 7, 6), "out: {adaptive_maxpool: {size: 2}}"),
    "global_avgpool": ((3, 7, 6), "out: global_avgpool"),
    "global_maxpool": ((3, 7, 6), "out: global_maxpool"),
    "batchnorm": ((3, 7, 6), "out: batchnorm"),
    "lrn": ((6, 7, 6), "out: {lrn: {size: 3}}"),
    "relu": ((3, 7, 6), "out: relu"),
    "relu6": ((3, 7, 6), "out: relu6"),
    "leaky_relu": ((3, 7, 6), "out: leaky_relu"),
    "elu": ((3, 7, 6), "out: elu"),
    "gelu": ((3, 7, 6), "out: gelu"),
    "silu": ((3, 7, 6), "out: silu"),
    "sigmoid": ((3, 7, 6), "out: sigmoid"),
    "tanh": ((3, 7, 6), "out: tanh"),
    "scaled_tanh": ((3, 7, 6), "out: scaled_tanh"),
    "subsample": ((3, 8, 6), "out: {subsample: {k: 2, act: scaled_tanh}}"),
    "rbf": ((3, 7, 4), "f: flatten\nout: {rbf: {out: 10}}"),
    "linear": ((3, 7, 6), "f: flatten\nout: {linear: {out: 5}}"),
    "flatten": ((3, 7, 6), "out: flatten"),
    "dropout": ((3, 7, 6), "out: {dropout: {p: 0.3}}"),
    "identity": ((3, 7, 6), "c: {conv: {out: 2, k: 1}}\nout: identity"),
    "softmax": ((3, 7, 6), "out: {softmax: {dim: 1}}"),
    "scale": ((3, 7, 6), "out: {scale: {factor: 0.5}}"),
    # the joins take their inputs from a `from:` list; their arguments are the container's options
    "concat": ((3, 7, 6), "a: {conv: {out: 2, k: 1}}\nout: {concat: null, from: [a, input]}"),
    "add": ((3, 7, 6), "a: {conv: {out: 3, k: 1}}\nout: {add: null, act: relu, from: [a, input]}"),
}

# ops whose lowered value is a fixed torch function of the input
REFERENCE = {
    "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
    "layernorm2d": lambda x: F.layer_norm(x.permute(0, 2, 3, 1), (3,), eps=1e-6).permute(0, 3, 1, 2),
    "layernorm": lambda x: F.layer_norm(x, (6,), eps=1e-6),
    "permute": lambda x: x.permute(0, 2, 3, 1), "reshape": lambda x: x.reshape(2, 3, -1),
    "chunk": lambda x: x.chunk(2, 1)[1],
    "channel_shuffle": lambda x: x.view(2, 2, 2, 7, 6).transpose(1, 2).reshape(2, 4, 7, 6),
    "stochastic_depth": lambda x: x, "layer_scale": lambda x: x * 0.5,
    "mul": lambda x: F.relu(x * x.mean((2, 3), keepdim=True)),
    "maxpool": lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
    "avgpool": lambda x: F.avg_pool2d(x, 3, 2, 1),
    "adaptive_avgpool": lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
    "adaptive_maxpool": lambda x: F.adaptive_max_pool2d(x, 2),
    "global_avgpool": lambda x: x.mean((2, 3), keepdim=True),
    "global_maxpool": lambda x: x.amax((2, 3), keepdim=True),
    "lrn": lambda x: F.local_response_norm(x, 3),
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "scaled_tanh": lambda x: 1.7159 * torch.tanh(x * 2 / 3),
    "flatten": lambda x: x.flatten(1),
    "dropout": lambda x: x,  # eval mode
    "softmax": lambda x: torch.softmax(x, 1),
    "scale": lambda x: x * 0.5,
    "batchnorm": lambda x: x / (1 + 1e-5) ** 0.5,  # fresh running stats: mean 0, var 1
}


def test_every_spec_op_has_a_tiny_spec():
    assert sorted(TINY) == spec_ops()


def test_internal_ops_are_the_joins():
    assert sorted(n for n, op in OPS.items() if op.internal) == ["residual_add"]  # concat and add: `from: [a, b]`
    assert all(OPS[n].args is JoinArgs for n in ("add", "concat", "residual_add"))
    assert OPS["concat"].arity is None and OPS["add"].arity is None and OPS["residual_add"].arity == 2


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_is_complete(name):
    op = OPS[name]
    assert op.name == name
    assert issubclass(op.args, Args)
    assert op.category in PALETTE
    if not op.internal:
        assert op.doc.strip()


@pytest.mark.parametrize("name", spec_ops())
def test_labels_of_compiled_nodes(name):
    shape, body = TINY[name]
    g = archcompiler.compile_graph(make_spec(body, input=shape, outputs="o: out"))
    node = g.nodes["out"]
    assert node.op == name
    label = OPS[name].label(node.args)
    assert isinstance(label, str) and label.strip()


@pytest.mark.parametrize("name", ["concat", "add", "residual_add"])
def test_join_labels(name):
    assert OPS[name].label(JoinArgs()).startswith(name.replace("_", " "))
    assert OPS[name].label(JoinArgs(scale=0.5, act="relu")).endswith("x0.5 +relu")


@pytest.mark.parametrize("name", spec_ops())
def test_tiny_spec_compiles_lowers_and_runs_as_inferred(name):
    shape, body = TINY[name]
    spec = make_spec(body, input=shape, outputs="o: out")
    graph = archcompiler.compile_graph(spec)
    model = archcompiler.build(spec, seed=0)
    assert shape_mismatches(model) == []
    model.eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (2, *graph.nodes["out"].shape)
    assert torch.isfinite(out).all()
    if name in REFERENCE:
        torch.testing.assert_close(out, REFERENCE[name](x), rtol=1e-5, atol=1e-6)
    report = archcompiler.summary(spec)
    assert report.row("out").output_shape == graph.nodes["out"].shape
    assert report.total_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.total_buffers == sum(b.numel() for b in model.buffers())


@pytest.mark.parametrize("name", spec_ops())
def test_bare_string_form_when_all_args_have_defaults(name):
    try:
        OPS[name].args()
    except pydantic.ValidationError:
        with pytest.raises(archcompiler.SpecError):
            archcompiler.compile_graph(make_spec("c: {conv: {out: 4, k: 1}}\nout: " + name, outputs="o: out"))
        return
    body = ("c: {conv: {out: 4, k: 1}}\nf: flatten\nout: " if name == "linear" else "c: {conv: {out: 4, k: 1}}\nout: ")
    g = archcompiler.compile_graph(make_spec(body + name, outputs="o: out"))
    assert g.nodes["out"].op == name
    assert g.nodes["out"].args == OPS[name].args()


@pytest.mark.parametrize("name", spec_ops())
def test_unknown_argument_is_refused(name):
    shape, body = TINY[name]
    if OPS[name].container is not None:  # `{add: {...}}` is the container: a join's arguments sit beside it
        body = body.replace(f"{{{name}: null, ", f"{{{name}: null, bogus: 1, ")
        with pytest.raises(archcompiler.SpecError, match=f"unknown key 'bogus' beside '{name}'"):
            archcompiler.compile_graph(make_spec(body, input=shape, outputs="o: out"))
        return
    if f"{{{name}: {{" in body:
        body = body.replace(f"{{{name}: {{", f"{{{name}: {{bogus: 1, ")
    else:
        body = body.replace(f"out: {name}", f"out: {{{name}: {{bogus: 1}}}}")
    with pytest.raises(archcompiler.SpecError, match=f"unknown key 'bogus' in {name} 'out'"):
        archcompiler.compile_graph(make_spec(body, input=shape, outputs="o: out"))


# ---------------------------------------------------------------------------
# the layers LeNet-5 needs

C3_TABLE = "[[0, 1, 2], [1, 2, 3], [0, 2, 3, 4], [5]]"


def test_partial_conv_counts_only_connected_kernels_and_matches_a_masked_dense_conv():
    spec = make_spec(f"out: {{conv: {{out: 4, k: 3, pad: 1, connections: {C3_TABLE}}}}}",
                     input=(6, 5, 5), outputs="o: out")
    report = archcompiler.summary(spec)
    assert report.row("out").params == (3 + 3 + 4 + 1) * 9 + 4
    assert report.row("out").macs == 25 * (3 + 3 + 4 + 1) * 9
    model = archcompiler.build(spec, seed=0).eval()
    conv = model.get_submodule("out")
    mask = torch.zeros(4, 6, 1, 1)
    for o, inputs in enumerate([[0, 1, 2], [1, 2, 3], [0, 2, 3, 4], [5]]):
        mask[o, inputs] = 1
    dense = conv.dense_weight()
    assert torch.equal(dense * (1 - mask), torch.zeros_like(dense))
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), F.conv2d(x, dense, conv.bias, padding=1))
    # a gradient reaches every connected kernel and nothing else exists to train
    model(x).sum().backward()
    assert conv.weight.grad.abs().flatten(1).sum(1).gt(0).all()


@pytest.mark.parametrize("table, message", [
    ("[[0], [1]]", "lists 2 output maps but out is 4"),
    ("[[0], [1], [2], [6]]", r"connections\[3\] must list distinct input maps from 0 to 5"),
    ("[[0], [1], [1, 1], [2]]", r"connections\[2\] must list distinct"),
])
def test_partial_conv_refuses_a_bad_table(table, message):
    with pytest.raises(archcompiler.SpecError, match=message):
        archcompiler.compile_graph(make_spec(f"out: {{conv: {{out: 4, k: 1, connections: {table}}}}}", input=(6, 5, 5)))


def test_subsample_is_window_sum_times_coefficient_plus_bias():
    spec = make_spec("out: {subsample: {k: 2}}", input=(3, 4, 6), outputs="o: out")
    model = archcompiler.build(spec, seed=0).eval()
    layer = model.get_submodule("out")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, -0.5]))
        layer.bias.copy_(torch.tensor([0.0, 1.0, 0.25]))
        x = torch.randn(1, 3, 4, 6)
        sums = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))
        torch.testing.assert_close(model(x), sums * layer.weight.view(1, 3, 1, 1) + layer.bias.view(1, 3, 1, 1))
    assert archcompiler.summary(spec).total_params == 6


def test_rbf_paley_prototypes_are_an_orthogonal_plus_minus_one_code_and_fixed():
    from archcompiler.ops import rbf_prototypes

    protos = torch.tensor(rbf_prototypes(83, 84), dtype=torch.float64)
    assert set(protos.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(protos @ protos.T, 84 * torch.eye(83, dtype=torch.float64))
    spec = make_spec("f: flatten\nout: {rbf: {out: 10}}", input=(1, 7, 12), outputs="o: out")
    model = archcompiler.build(spec).eval()
    assert list(model.parameters()) == []
    x = torch.randn(3, 1, 7, 12)
    expected = torch.cdist(x.flatten(1), protos[:10].float()).pow(2)
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size, message", [(85, "one more than a prime = 3 mod 4"), (12, "at most 11 prototypes")])
def test_rbf_paley_needs_a_suitable_input_size(size, message):
    with pytest.raises(archcompiler.SpecError, match=message):
        archcompiler.compile_graph(make_spec("f: flatten\nout: {rbf: {out: 12}}", input=(size, 1, 1)))


def test_rbf_random_code_is_seeded():
    from archcompiler.ops import rbf_prototypes

    assert rbf_prototypes(3, 20, "random", seed=1) == rbf_prototypes(3, 20, "random", seed=1)
    assert rbf_prototypes(3, 20, "random", seed=1) != rbf_prototypes(3, 20, "random", seed=2)


def test_linear_act_applies_after_the_layer():
    spec = make_spec("f: flatten\nout: {linear: {out: 5, act: scaled_tanh}}", input=(3, 2, 2), outputs="o: out")
    model = archcompiler.build(spec, seed=0).eval()
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), 1.7159 * torch.tanh(model.get_submodule("out")(x.flatten(1)) * 2 / 3))
