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
    "linear": ((3, 7, 6), "f: flatten\nout: {linear: {out: 5}}"),
    "flatten": ((3, 7, 6), "out: flatten"),
    "dropout": ((3, 7, 6), "out: {dropout: {p: 0.3}}"),
    "identity": ((3, 7, 6), "c: {conv: {out: 2, k: 1}}\nout: identity"),
    "softmax": ((3, 7, 6), "out: {softmax: {dim: 1}}"),
    "scale": ((3, 7, 6), "out: {scale: {factor: 0.5}}"),
}

# ops whose lowered value is a fixed torch function of the input
REFERENCE = {
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
    "flatten": lambda x: x.flatten(1),
    "dropout": lambda x: x,  # eval mode
    "softmax": lambda x: torch.softmax(x, 1),
    "scale": lambda x: x * 0.5,
    "batchnorm": lambda x: x / (1 + 1e-5) ** 0.5,  # fresh running stats: mean 0, var 1
}


def test_every_spec_op_has_a_tiny_spec():
    assert sorted(TINY) == spec_ops()


def test_internal_ops_are_the_joins():
    assert sorted(n for n, op in OPS.items() if op.internal) == ["add", "concat", "residual_add"]
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
    if f"{{{name}: {{" in body:
        body = body.replace(f"{{{name}: {{", f"{{{name}: {{bogus: 1, ")
    else:
        body = body.replace(f"out: {name}", f"out: {{{name}: {{bogus: 1}}}}")
    with pytest.raises(archcompiler.SpecError, match=f"unknown key 'bogus' in {name} 'out'"):
        archcompiler.compile_graph(make_spec(body, input=shape, outputs="o: out"))
