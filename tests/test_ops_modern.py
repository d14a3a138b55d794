"""The ops of torchvision's modern CNN families: hardswish / hardsigmoid, mul (squeeze-and-excitation),
layernorm / layernorm2d, permute, reshape, flatten over a range, chunk, channel_shuffle, linear along an
axis, stochastic_depth and layer_scale (a parameter at the layer's own path).

For each: shape inference against the runtime shape, parameters against the module's, values against a
direct torch computation, a bad input giving a located SpecError, and the standalone source and the ONNX
export computing what the compiled model computes.
"""

from __future__ import annotations

import importlib.util
import math
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import archcompiler
from archcompiler.emit import emit_python
from archcompiler.lower import shape_mismatches
from archcompiler.ops import ACTIVATIONS, CATEGORIES, OPS
from archcompiler.spec import parse_spec

from conftest import make_spec, run_archc, spec_text

NEW_OPS = ["hardswish", "hardsigmoid", "mul", "layernorm", "layernorm2d", "permute", "reshape", "chunk",
           "channel_shuffle", "stochastic_depth", "layer_scale"]


def compiled(body: str, input=(4, 6, 5), **header):
    """(graph, eval-mode model built with seed 0) of a spec whose result is the layer `out`."""
    spec = make_spec(body, input=input, outputs="o: out", **header)
    graph = archcompiler.compile_graph(spec)
    model = archcompiler.build(spec, seed=0).eval()
    assert shape_mismatches(model) == []
    report = archcompiler.summary(spec)
    assert report.total_params == sum(p.numel() for p in model.parameters())
    assert report.total_buffers == sum(b.numel() for b in model.buffers())
    return graph, model


def sample(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def run(model, x):
    with torch.no_grad():
        return model(x)


def refused(body: str, match: str, input=(4, 6, 5)) -> archcompiler.SpecError:
    """The SpecError of a spec whose bad layer is `out`: one line, located at that layer's line."""
    text = spec_text(body, input=input)
    with pytest.raises(archcompiler.SpecError, match=match) as info:
        archcompiler.compile_graph(parse_spec(text, "bad.yaml"))
    err = info.value
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("  out:"))
    assert (err.path, err.line) == ("bad.yaml", line), str(err)
    assert "\n" not in str(err) and str(err).startswith(f"bad.yaml:{line}:")
    return err


# ---------------------------------------------------------------------------
# the registry


@pytest.mark.parametrize("name", NEW_OPS)
def test_each_new_op_is_registered_once_and_complete(name):
    op = OPS[name]
    assert op.category in CATEGORIES and op.doc.strip() and not op.internal
    assert archcompiler.ops.spec_ops().count(name) == 1


def test_hardswish_and_hardsigmoid_are_activations_for_act():
    assert ACTIVATIONS["hardswish"][0] == "nn.Hardswish" and ACTIVATIONS["hardsigmoid"][0] == "nn.Hardsigmoid"


def test_only_conv_and_linear_like_ops_count_macs():
    assert archcompiler.ops.counted_ops() == ["conv", "linear", "rbf"]


# ---------------------------------------------------------------------------
# activations


@pytest.mark.parametrize("name, fn", [("hardswish", F.hardswish), ("hardsigmoid", F.hardsigmoid)])
def test_hard_activations_as_ops_and_as_act(name, fn):
    x = sample(2, 4, 6, 5) * 4
    graph, model = compiled(f"out: {name}")
    assert graph.nodes["out"].shape == (4, 6, 5)
    assert isinstance(model.get_submodule("out"), getattr(nn, name.capitalize()))
    torch.testing.assert_close(run(model, x), fn(x))
    _, model = compiled(f"out: {{conv: {{out: 3, k: 1, act: {name}}}}}")
    torch.testing.assert_close(run(model, x), fn(model.get_submodule("out")(x)))
    _, model = compiled(f"f: flatten\nout: {{linear: {{out: 5, act: {name}}}}}")
    torch.testing.assert_close(run(model, x), fn(model.get_submodule("out")(x.flatten(1))))
    assert OPS["conv"].label(OPS["conv"].args(out=3, k=1, act=name)).endswith(f"+{name}")


def test_gelu_is_the_exact_erf_form():
    x = sample(2, 4, 6, 5) * 3
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    _, model = compiled("out: gelu")
    assert model.get_submodule("out").approximate == "none"
    torch.testing.assert_close(run(model, x), exact)
    _, model = compiled("f: flatten\nout: {linear: {out: 5, act: gelu}}")
    y = model.get_submodule("out")(x.flatten(1))
    torch.testing.assert_close(run(model, x), 0.5 * y * (1 + torch.erf(y / math.sqrt(2))))
    assert not torch.allclose(run(model, x), F.gelu(y, approximate="tanh"), rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------
# mul


def test_mul_gates_a_map_by_a_per_channel_vector():
    graph, model = compiled("g: {global_avgpool: {}}\nout: {mul: null, from: [input, g]}")
    assert graph.nodes["out"].shape == (4, 6, 5) and graph.nodes["out"].inputs == ["input", "g"]
    x = sample(2, 4, 6, 5)
    torch.testing.assert_close(run(model, x), x * x.mean((2, 3), keepdim=True))
    report = archcompiler.summary(make_spec("g: {global_avgpool: {}}\nout: {mul: null, from: [input, g]}",
                                            input=(4, 6, 5), outputs="o: out"))
    assert (report.row("out").params, report.row("out").macs) == (0, 0)
    assert OPS["mul"].container == "mul" and OPS["mul"].join_name == "mul" and OPS["mul"].arity is None


def test_mul_broadcasts_each_axis_and_takes_act_and_many_inputs():
    body = """
    a: {conv: {out: 1, k: 1}}
    g: {global_avgpool: {}, from: input}
    h: {conv: {out: 4, k: 1}}
    out: {mul: null, act: sigmoid, from: [a, g, h]}
    """
    graph, model = compiled(body)
    assert graph.nodes["a"].shape == (1, 6, 5) and graph.nodes["g"].shape == (4, 1, 1)
    assert graph.nodes["out"].shape == (4, 6, 5)
    x = sample(2, 4, 6, 5)
    a, h = model.get_submodule("a"), model.get_submodule("h")
    with torch.no_grad():
        g = x.mean((2, 3), keepdim=True)
        torch.testing.assert_close(run(model, x), torch.sigmoid(a(x) * g * h(g)))
    assert OPS["mul"].label(graph.nodes["out"].args) == "mul +sigmoid"


def test_mul_refuses_shapes_that_do_not_broadcast():
    refused("a: {conv: {out: 3, k: 1}}\ng: {global_avgpool: {}, from: input}\nout: {mul: null, from: [a, g]}",
            r"'out' \(mul on 3x6x5, 4x1x1\): mul cannot broadcast 3x6x5, 4x1x1: axis 0 has sizes 3, 4")
    refused("f: flatten\nout: {mul: null, from: [input, f]}",
            r"mul needs inputs with the same number of axes, got 4x6x5, 120")


# ---------------------------------------------------------------------------
# layernorm, layernorm2d


def test_layernorm2d_is_layer_norm_over_the_channels_at_each_position():
    graph, model = compiled("out: {layernorm2d: {eps: 1.0e-6}}")
    norm = model.get_submodule("out")
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [("out.weight", (4,)), ("out.bias", (4,))]
    with torch.no_grad():
        norm.weight.copy_(sample(4, seed=1))
        norm.bias.copy_(sample(4, seed=2))
    x = sample(2, 4, 6, 5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (4,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(run(model, x), expected)
    assert norm.eps == 1e-6 and graph.nodes["out"].shape == (4, 6, 5)
    assert archcompiler.summary(make_spec("out: layernorm2d", input=(4, 6, 5))).total_params == 8
    assert archcompiler.summary(make_spec("out: {layernorm2d: {affine: false}}", input=(4, 6, 5))).total_params == 0
    assert compiled("out: layernorm2d")[1].get_submodule("out").eps == 1e-5  # PyTorch's default


def test_layernorm_normalises_the_last_axis():
    graph, model = compiled("p: {permute: {dims: [1, 2, 0]}}\nout: {layernorm: {eps: 1.0e-6}}")
    assert graph.nodes["out"].shape == (6, 5, 4)
    norm = model.get_submodule("out")
    assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (4,)
    x = sample(2, 4, 6, 5)
    torch.testing.assert_close(run(model, x), F.layer_norm(x.permute(0, 2, 3, 1), (4,), eps=1e-6))
    graph, model = compiled("f: flatten\nout: layernorm")
    assert model.get_submodule("out").normalized_shape == (120,)
    assert archcompiler.summary(make_spec("f: flatten\nout: layernorm", input=(4, 6, 5))).total_params == 240


def test_layernorm2d_needs_a_map():
    refused("f: flatten\nout: layernorm2d", r"layernorm2d needs a \(C, H, W\) feature map, got shape 120")
    refused("out: {layernorm: {eps: 0}}", "eps")


# ---------------------------------------------------------------------------
# permute, reshape, flatten


def test_permute_keeps_the_batch_first():
    graph, model = compiled("out: {permute: {dims: [1, 2, 0]}}")
    assert graph.nodes["out"].shape == (6, 5, 4)
    assert model.get_submodule("out").dims == [0, 2, 3, 1]  # torchvision's Permute([0, 2, 3, 1])
    x = sample(2, 4, 6, 5)
    torch.testing.assert_close(run(model, x), torch.permute(x, [0, 2, 3, 1]))
    assert list(model.parameters()) == []


@pytest.mark.parametrize("dims", ["[0, 0, 1]", "[1, 0]", "[0, 1, 3]"])
def test_permute_refuses_what_is_not_a_permutation(dims):
    refused(f"out: {{permute: {{dims: {dims}}}}}", r"permute dims .* must list each axis of 4x6x5 once, from 0 to 2")


def test_reshape_per_sample_with_one_inferred_size():
    graph, model = compiled("out: {reshape: {shape: [2, -1, 5]}}")
    assert graph.nodes["out"].shape == (2, 12, 5)
    x = sample(3, 4, 6, 5)
    torch.testing.assert_close(run(model, x), x.reshape(3, 2, 12, 5))
    graph, _ = compiled("out: {reshape: {shape: [120]}}")
    assert graph.nodes["out"].shape == (120,)


@pytest.mark.parametrize("shape, match", [
    ("[-1, -1]", "at most one -1"), ("[0, 120]", "positive sizes"), ("[7, -1]", "cannot make 120 values"),
    ("[4, 6, 4]", r"cannot make 120 values \(4x6x5\) into shape \[4, 6, 4\]"),
])
def test_reshape_refuses_a_shape_of_another_size(shape, match):
    refused(f"out: {{reshape: {{shape: {shape}}}}}", match)


def test_flatten_keeps_its_defaults_and_takes_a_range():
    args = OPS["flatten"].args()
    assert (args.start, args.end) == (0, -1) and OPS["flatten"].label(args) == "flatten"
    graph, model = compiled("out: flatten")
    assert graph.nodes["out"].shape == (120,)
    flat = model.get_submodule("out")
    assert (flat.start_dim, flat.end_dim) == (1, -1)
    graph, model = compiled("out: {flatten: {start: 1}}")
    assert graph.nodes["out"].shape == (4, 30)
    torch.testing.assert_close(run(model, sample(2, 4, 6, 5)), sample(2, 4, 6, 5).flatten(2))
    graph, model = compiled("out: {flatten: {start: 0, end: 1}}")
    assert graph.nodes["out"].shape == (24, 5)
    torch.testing.assert_close(run(model, sample(2, 4, 6, 5)), sample(2, 4, 6, 5).flatten(1, 2))
    assert compiled("out: {flatten: {start: -1}}")[0].nodes["out"].shape == (4, 6, 5)


def test_flatten_refuses_a_bad_range():
    refused("out: {flatten: {start: 2, end: 1}}", "flatten start 2 comes after end 1 in 4x6x5")
    refused("out: {flatten: {start: 3}}", r"flatten start 3 is not an axis of 4x6x5")


# ---------------------------------------------------------------------------
# chunk, channel_shuffle


def test_chunk_is_one_part_of_a_split():
    body = "a: {chunk: {n: 2, index: 0}}\nb: {chunk: {n: 2, index: 1}, from: input}\nout: {concat: null, from: [b, a]}"
    graph, model = compiled(body)
    assert graph.nodes["a"].shape == graph.nodes["b"].shape == (2, 6, 5)
    x = sample(2, 4, 6, 5)
    x1, x2 = x.chunk(2, dim=1)
    torch.testing.assert_close(run(model, x), torch.cat([x2, x1], 1))
    graph, model = compiled("out: {chunk: {n: 3, index: -1, dim: 1}}")
    assert graph.nodes["out"].shape == (4, 2, 5)
    torch.testing.assert_close(run(model, x), x.chunk(3, 2)[-1])


def test_chunk_refuses_an_uneven_split_or_a_missing_part():
    refused("out: {chunk: {n: 3, index: 0}}", "chunk n=3 must divide the size 4 of axis 0")
    refused("out: {chunk: {n: 2, index: 2}}", r"chunk index 2 is not one of the 2 parts \(0 to 1\)")
    refused("out: {chunk: {n: 2}}", "index")


def shuffle_reference(x: torch.Tensor, groups: int) -> torch.Tensor:
    # torchvision.models.shufflenetv2.channel_shuffle
    batchsize, num_channels, height, width = x.size()
    x = x.view(batchsize, groups, num_channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_is_shufflenets(groups):
    graph, model = compiled(f"out: {{channel_shuffle: {{groups: {groups}}}}}", input=(12, 5, 4))
    assert graph.nodes["out"].shape == (12, 5, 4)
    x = sample(2, 12, 5, 4)
    assert torch.equal(run(model, x), shuffle_reference(x, groups))
    assert torch.equal(run(model, x), nn.ChannelShuffle(groups)(x))


def test_channel_shuffle_refuses_groups_that_do_not_divide():
    refused("out: {channel_shuffle: {groups: 3}}", "channel_shuffle groups=3 must divide the 4 channels")
    refused("f: flatten\nout: {channel_shuffle: {groups: 2}}", r"needs a \(C, H, W\) feature map")


# ---------------------------------------------------------------------------
# linear along an axis


def test_linear_on_the_last_axis_of_a_map():
    body = "p: {permute: {dims: [1, 2, 0]}}\nout: {linear: {out: 7, axis: -1}}"
    graph, model = compiled(body)
    assert graph.nodes["out"].shape == (6, 5, 7)
    fc = model.get_submodule("out")
    x = sample(2, 4, 6, 5)
    torch.testing.assert_close(run(model, x), F.linear(x.permute(0, 2, 3, 1), fc.weight, fc.bias))
    row = archcompiler.summary(make_spec(body, input=(4, 6, 5))).row("out")
    assert row.params == 4 * 7 + 7 and row.macs == 4 * 7 * 6 * 5


def test_linear_on_another_axis_moves_it_last_and_back():
    graph, model = compiled("out: {linear: {out: 3, axis: 0, bias: false}}")
    assert graph.nodes["out"].shape == (3, 6, 5)
    fc = model.get_submodule("out")
    x = sample(2, 4, 6, 5)
    torch.testing.assert_close(run(model, x), torch.einsum("oc,nchw->nohw", fc.weight, x))
    assert archcompiler.summary(make_spec("out: {linear: {out: 3, axis: 0}}", input=(4, 6, 5))).row("out").macs == 360


def test_linear_on_a_flat_input_is_as_before():
    for body in ("f: flatten\nout: {linear: {out: 10}}", "f: flatten\nout: {linear: {out: 10, axis: -1}}"):
        graph, model = compiled(body)
        assert graph.nodes["out"].shape == (10,)
        row = archcompiler.summary(make_spec(body, input=(4, 6, 5))).row("out")
        assert (row.params, row.macs) == (120 * 10 + 10, 120 * 10)
        assert "= self.out(f)" in model.code


def test_linear_without_axis_still_asks_for_a_flatten():
    refused("out: {linear: {out: 10}}", r"linear needs a flat \(features,\) input, got shape 4x6x5; add a 'flatten'")
    refused("out: {linear: {out: 10, axis: 3}}", r"linear axis 3 is not an axis of 4x6x5")


# ---------------------------------------------------------------------------
# stochastic depth


def torchvision_stochastic_depth(x: torch.Tensor, p: float, mode: str) -> torch.Tensor:
    # torchvision.ops.stochastic_depth in training mode
    survival_rate = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


@pytest.mark.parametrize("p, mode", [(0.5, "row"), (0.5, "batch"), (1.0, "row"), (0.2, "batch")])
def test_stochastic_depth_is_torchvisions_in_training_and_the_identity_in_eval(p, mode):
    graph, model = compiled(f"out: {{stochastic_depth: {{p: {p}, mode: {mode}}}}}")
    assert graph.nodes["out"].shape == (4, 6, 5) and list(model.parameters()) == []
    x = sample(16, 4, 6, 5)
    torch.testing.assert_close(run(model, x), x)  # eval
    model.train()
    for seed in range(3):
        torch.manual_seed(seed)
        got = run(model, x)
        torch.manual_seed(seed)
        torch.testing.assert_close(got, torchvision_stochastic_depth(x, p, mode), rtol=0, atol=0)
    if (p, mode) == (0.5, "row"):
        torch.manual_seed(0)
        y = run(model, x)
        kept = y.flatten(1).ne(0).all(1)
        assert 0 < kept.sum() < 16 and y[~kept].eq(0).all()  # whole samples dropped, the others scaled by 2
        torch.testing.assert_close(y[kept], 2 * x[kept])


def test_stochastic_depth_with_p_zero_is_the_identity_in_training():
    _, model = compiled("out: {stochastic_depth: {p: 0.0}}")
    x = sample(4, 4, 6, 5)
    assert torch.equal(run(model.train(), x), x)


def test_stochastic_depth_refuses_a_bad_probability_or_mode():
    refused("out: {stochastic_depth: {p: 1.5}}", "less than or equal to 1")
    refused("out: {stochastic_depth: {p: 0.1, mode: col}}", "mode")
    refused("out: stochastic_depth", "p")


# ---------------------------------------------------------------------------
# layer scale: a parameter at the layer's own path


CNBLOCK = """
archc: 1
name: cnblock
input: [3, 32, 32]
defaults:
  layernorm: {eps: 1.0e-6}
  layernorm2d: {eps: 1.0e-6}
body:
  features:
    - [{conv: {out: 16, k: 4, s: 4}}, layernorm2d]
    - - residual:
          block:
            - {conv: {out: 16, k: 7, pad: 3, groups: 16}}
            - {permute: {dims: [1, 2, 0]}}
            - layernorm
            - {linear: {out: 64, axis: -1}}
            - gelu
            - {linear: {out: 16, axis: -1}}
            - {permute: {dims: [2, 0, 1]}}
          layer_scale: {layer_scale: {init: 1.0e-6}}
          stochastic_depth: {stochastic_depth: {p: 0.1, mode: row}}
"""


def test_layer_scale_is_a_parameter_of_the_enclosing_module_with_torchvisions_key():
    spec = parse_spec(CNBLOCK, "cnblock.yaml")
    model = archcompiler.build(spec, seed=0).eval()
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    # torchvision's convnext_tiny: features.1.0.layer_scale first, then the block (own parameters come first)
    assert keys[4:6] == [("features.1.0.layer_scale", (16, 1, 1)), ("features.1.0.block.0.weight", (16, 1, 7, 7))]
    assert [k for k, _ in keys] == [
        "features.0.0.weight", "features.0.0.bias", "features.0.1.weight", "features.0.1.bias",
        "features.1.0.layer_scale", "features.1.0.block.0.weight", "features.1.0.block.0.bias",
        "features.1.0.block.2.weight", "features.1.0.block.2.bias", "features.1.0.block.3.weight",
        "features.1.0.block.3.bias", "features.1.0.block.5.weight", "features.1.0.block.5.bias"]
    scale = model.get_parameter("features.1.0.layer_scale")
    assert scale.requires_grad and "layer_scale" in dict(model.get_submodule("features.1.0").named_parameters())
    assert torch.equal(scale, torch.ones(16, 1, 1) * 1e-6)  # torchvision's initialisation, to the bit
    report = archcompiler.summary(spec)
    assert report.row("features.1.0.layer_scale").params == 16
    assert report.total_params == sum(p.numel() for p in model.parameters())
    assert shape_mismatches(model) == []
    # forward: layer_scale * block(x), then stochastic depth, plus the input
    x = sample(2, 3, 32, 32)
    with torch.no_grad():
        scale.copy_(sample(16, 1, 1, seed=3))
        stem = model.get_submodule("features.0.1")(model.get_submodule("features.0.0")(x))
        block = stem
        for i in range(7):
            block = model.get_submodule(f"features.1.0.block.{i}")(block)
        torch.testing.assert_close(model(x), scale * block + stem)
    model.train()
    model(x).sum().backward()
    assert scale.grad is not None and scale.grad.abs().sum() > 0


def test_layer_scale_on_any_rank_and_at_a_positional_name():
    graph, model = compiled("c: {conv: {out: 3, k: 1}}\nout: {layer_scale: {init: 0.5}}")
    assert graph.nodes["out"].shape == (3, 6, 5)
    assert dict(model.named_parameters())["out"].shape == (3, 1, 1)
    x = sample(2, 4, 6, 5)
    torch.testing.assert_close(run(model, x), 0.5 * model.get_submodule("c")(x))
    graph, model = compiled("f: flatten\nout: layer_scale")
    assert model.state_dict()["out"].shape == (120,)
    torch.testing.assert_close(run(model, x), 1e-6 * x.flatten(1))
    spec = make_spec("- {conv: {out: 3, k: 1}}\n- {layer_scale: {init: 2.0}}", input=(4, 6, 5))
    model = archcompiler.build(spec)
    assert [k for k in model.state_dict()] == ["1", "0.weight", "0.bias"]  # the root's own parameter first
    assert archcompiler.summary(spec).total_params == 3 * 4 + 3 + 3


def test_layer_scale_refuses_a_bad_init():
    refused("out: {layer_scale: {init: .nan}}", "init")
    refused("out: {layer_scale: {scale: 1}}", "unknown key 'scale'")


# ---------------------------------------------------------------------------
# every command, the standalone source and ONNX


TOUR = """
archc: 1
name: modern_tour
input: [8, 6, 5]
body:
  stem: {conv: {out: 8, k: 3, pad: 1, act: hardswish}}
  ln2d: layernorm2d
  nhwc: {permute: {dims: [1, 2, 0]}}
  ln: {layernorm: {eps: 1.0e-6}}
  mlp: {linear: {out: 16, axis: -1, act: gelu}}
  proj: {linear: {out: 8, axis: -1}}
  nchw: {permute: {dims: [2, 0, 1]}}
  ls: {layer_scale: {init: 0.5}}
  sd: {stochastic_depth: {p: 0.5}}
  res: {add: null, from: [sd, stem]}
  squeeze: global_avgpool
  fc1: {conv: {out: 4, k: 1, act: relu}}
  fc2: {conv: {out: 8, k: 1, act: hardsigmoid}}
  excite: {mul: null, from: [res, fc2]}
  shuf: {channel_shuffle: {groups: 4}}
  lo: {chunk: {n: 2, index: 0}}
  hi: {chunk: {n: 2, index: -1}, from: shuf}
  mix: {linear: {out: 3, axis: 0}}
  cat: {concat: null, from: [lo, mix]}
  rows: {flatten: {start: 1}}
  back: {reshape: {shape: [7, 6, -1]}}
  pool: global_avgpool
  flat: flatten
  head: {linear: {out: 5}}
"""

# Blocks whose arguments are expressions: the standalone source keeps them in one class per template.
BLOCKS = """
archc: 1
name: modern_blocks
input: [3, 16, 16]
defaults:
  layernorm: {eps: 1.0e-6}
blocks:
  cnblock:
    params: [c, s]
    residual:
      block:
        - {conv: {out: $c, k: 3, pad: 1, groups: $c}}
        - {permute: {dims: [1, 2, 0]}}
        - layernorm
        - {linear: {out: "${4 * c}", axis: -1}}
        - gelu
        - {linear: {out: $c, axis: -1}}
        - {permute: {dims: [2, 0, 1]}}
      layer_scale: {layer_scale: {init: $s}}
      stochastic_depth: {stochastic_depth: {p: 0.25}}
  split:
    params: [n, w]
    seq:
      part: {chunk: {n: $n, index: 0}}
      reshape: {reshape: {shape: [$w, -1]}}
body:
  stem: {conv: {out: 8, k: 1}}
  a: {cnblock: [8, 0.5]}
  b: {cnblock: [8, 0.25]}
  down: {conv: {out: 16, k: 2, s: 2}}
  c: {cnblock: [16, 0.5]}
  d: {split: [2, 8]}
"""


def test_every_new_op_is_in_the_tour():
    graph = archcompiler.compile_graph(parse_spec(TOUR, "tour.yaml"))
    assert set(NEW_OPS) - {n.op for n in graph.nodes.values()} == {"hardswish", "hardsigmoid"}  # as act:
    assert graph.nodes["back"].shape == (7, 6, 5) and graph.nodes["mix"].shape == (3, 6, 5)


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text", [TOUR, BLOCKS], ids=["tour", "blocks"])
def test_standalone_source_has_the_state_dict_and_computes_the_same(text, tmp_path):
    from archcompiler.graph import class_name

    spec = parse_spec(text, "modern.yaml")
    graph = archcompiler.compile_graph(spec)
    source = emit_python(graph)
    path = tmp_path / f"{graph.name}.py"
    path.write_text(source)
    standalone = getattr(_load(path, f"standalone_{graph.name}"), class_name(graph.name))()
    model = archcompiler.build(spec, seed=1)
    assert [(k, v.shape) for k, v in standalone.state_dict().items()] == \
        [(k, v.shape) for k, v in model.state_dict().items()]
    standalone.load_state_dict(model.state_dict(), strict=True)
    x = sample(4, *graph.input_shape)
    for training in (False, True):
        model.train(training)
        standalone.train(training)
        torch.manual_seed(0)  # stochastic depth draws the same noise in both
        a = run(model, x)
        torch.manual_seed(0)
        b = run(standalone, x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "import archcompiler" not in source and "from archcompiler" not in source
    if graph.name == "modern_blocks":
        assert source.count("class Cnblock(nn.Module):") == 1  # a and b share it: `init: $s` stays `s`
        assert "nn.Parameter(torch.full((" in source and ", 1, 1), s))" in source
        assert "= x.chunk(self.part_n, 1)[0]" in source  # `n: $n` is an attribute set from the block's `n`


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from archcompiler import export

    model = archcompiler.build(parse_spec(TOUR, "tour.yaml"), seed=0).eval()
    data = export.to_onnx(model)
    onnx.checker.check_model(onnx.load_from_string(data))
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = sample(3, 8, 6, 5)  # exported at batch 1: the batch is dynamic
    (out,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), run(model, x), rtol=1e-4, atol=1e-5)


def test_torchscript_and_torch_export_give_the_eager_outputs():
    from archcompiler import export

    model = archcompiler.build(parse_spec(TOUR, "tour.yaml"), seed=0).eval()
    x = sample(3, 8, 6, 5)
    expected = run(model, x)
    with torch.no_grad():
        traced = torch.jit.trace(model, export.example_input(model), check_trace=False)
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(export.exported_program(model).module()(x), expected)


def test_every_command_takes_the_new_ops(tmp_path):
    path = tmp_path / "modern_tour.yaml"
    path.write_text(textwrap.dedent(TOUR).lstrip())
    assert run_archc("check", str(path)).returncode == 0
    r = run_archc("summary", str(path), "--format", "json")
    assert r.returncode == 0 and '"layer_scale"' in r.stdout
    r = run_archc("draw", str(path), "-o", str(tmp_path / "tour.dot"), "--depth", "full")
    assert r.returncode == 0, r.stderr
    assert "layer scale 0.5" in (tmp_path / "tour.dot").read_text()
    out = tmp_path / "build"
    r = run_archc("build", str(path), "-o", str(out), "--emit", "python", "--emit", "onnx")
    assert r.returncode == 0, r.stderr
    assert (out / "modern_tour.py").exists() and (out / "modern_tour.onnx").exists()


# A block instance inside a chain of another block's body: its layers' expressions are in terms of its own
# parameters (`out` here), even where the outer block has a parameter of the same name.  (Found with the
# MobileNet specs, whose `cna` and `inverted_residual` blocks both have an `out`.)
NESTED = """
archc: 1
name: nested_names
input: [8, 6, 6]
blocks:
  unit:
    params: [out]
    seq:
      - {conv: {out: $out, k: 1}}
      - hardswish
  outer:
    params: [out, mid]
    residual:
      body:
        - {unit: [$mid]}
        - {conv: {out: $out, k: 1}}
        - {layer_scale: {init: 0.5}}
body:
  a: {outer: [8, 4]}
  b: {outer: [8, 6]}
"""


def test_standalone_source_keeps_a_nested_blocks_expressions_its_own(tmp_path):
    test_standalone_source_has_the_state_dict_and_computes_the_same(NESTED, tmp_path)
