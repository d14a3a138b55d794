"""lower/build: module tree, state_dict order, outputs, seeds, meta device, generated forward, numerics."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archcompiler
from archcompiler.errors import UserError
from archcompiler.lower import STAMPABLE, CompiledModel, Container, lower, shape_mismatches, stampable, stamped

from conftest import make_spec
from random_graphs import random_graph


def build(body: str, input=(3, 8, 8), seed: int = 0, device=None, params: dict | None = None, **header):
    header.setdefault("outputs", "o: out")
    return archcompiler.build(make_spec(body, input=input, **header), seed=seed, device=device, **(params or {}))


def x_for(model, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *model.graph.input_shape), generator=g)


AUX_BODY = """
stem: {conv: {out: 4, k: 3, pad: 1, norm: true, act: relu}}
aux1: {seq: {p: global_avgpool, f: flatten, l: {linear: {out: 2}}}, from: stem}
b: {conv: {out: 4, k: 3, pad: same, s: 2}, from: stem}
aux2: {seq: {p: global_avgpool, f: flatten, l: {linear: {out: 5}}}}
head: {seq: {p: global_avgpool, f: flatten, l: {linear: {out: 3}}}, from: b}
"""
AUX_OUTPUTS = "main: head\naux2: {node: aux2, train_only: true}\naux1: {node: aux1, train_only: true}"


@pytest.fixture(scope="module")
def aux_model():
    return archcompiler.build(make_spec(AUX_BODY, outputs=AUX_OUTPUTS))


# -- module tree ------------------------------------------------------------


def test_state_dict_keys_in_declaration_order(aux_model):
    assert list(aux_model.state_dict()) == [
        "stem.conv.weight", "stem.conv.bias",
        "stem.bn.weight", "stem.bn.bias", "stem.bn.running_mean", "stem.bn.running_var", "stem.bn.num_batches_tracked",
        "aux1.l.weight", "aux1.l.bias",
        "b.weight", "b.bias",
        "aux2.l.weight", "aux2.l.bias",
        "head.l.weight", "head.l.bias",
    ]
    assert aux_model.state_dict()["head.l.weight"].shape == (3, 4)


def test_state_dict_order_with_containers():
    model = build("""
    res:
      residual: [{conv: {out: 3, k: 3, pad: 1}}, relu]
      shortcut: {conv: {out: 3, k: 1, bias: false}}
    out:
      concat:
        z: {conv: {out: 2, k: 1}}
        a: [{maxpool: {k: 3, s: 1, pad: 1}}, {conv: {out: 2, k: 1, bias: false}}]
    """)
    assert list(model.state_dict()) == ["res.0.weight", "res.0.bias", "res.shortcut.weight",
                                        "out.z.weight", "out.z.bias", "out.a.1.weight"]
    assert isinstance(model.res, nn.Module) and isinstance(model.out.a._modules["0"], nn.MaxPool2d)


def test_conv_with_norm_has_conv_and_bn_children(aux_model):
    stem = aux_model.stem
    assert isinstance(stem.conv, nn.Conv2d) and isinstance(stem.bn, nn.BatchNorm2d)
    assert (stem.conv.in_channels, stem.conv.out_channels, stem.conv.padding) == (3, 4, (1, 1))
    assert [name for name, m in stem.named_children() if list(m.parameters())] == ["conv", "bn"]
    assert isinstance(aux_model.b, nn.Conv2d)  # no norm: a bare Conv2d
    bn = build("out: {conv: {out: 4, k: 1, norm: {eps: 0.001, momentum: 0.3}}}").out.bn
    assert (bn.eps, bn.momentum, bn.affine) == (0.001, 0.3, True)


def test_block_instances_become_submodules():
    model = build("a: {u: [4]}\nout: {u: [5]}", blocks="""
    u:
      params: [c]
      seq:
        conv: {conv: {out: $c, k: 1}}
        act: relu
    """)
    assert list(model.state_dict()) == ["a.conv.weight", "a.conv.bias", "out.conv.weight", "out.conv.bias"]
    assert model.out.conv.in_channels == 4 and model.out.conv.out_channels == 5


# -- outputs ----------------------------------------------------------------


def test_train_returns_named_tuple_in_declared_order(aux_model):
    aux_model.train()
    out = aux_model(x_for(aux_model))
    assert out._fields == ("main", "aux2", "aux1")
    assert [tuple(t.shape) for t in out] == [(2, 3), (2, 5), (2, 2)]


def test_eval_returns_main_output(aux_model):
    aux_model.eval()
    x = x_for(aux_model)
    with torch.no_grad():
        out = aux_model(x)
        values = aux_model._forward_all(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    assert torch.equal(out, values["head.l"])
    aux_model.train()
    with torch.no_grad():
        train_out = aux_model(x)
    aux_model.eval()
    assert not torch.equal(train_out.main, out)  # BatchNorm batch stats vs running stats


def test_several_eval_outputs_are_a_named_tuple():
    model = build("a: {conv: {out: 4, k: 1}}\nout: {conv: {out: 2, k: 1}}", outputs="feat: a\nlogits: out").eval()
    out = model(x_for(model))
    assert out._fields == ("feat", "logits")
    assert out.feat.shape == (2, 4, 8, 8) and out.logits.shape == (2, 2, 8, 8)


def test_forward_all_returns_every_node(aux_model):
    aux_model.eval()
    with torch.no_grad():
        values = aux_model._forward_all(x_for(aux_model))
    assert set(values) == set(aux_model.graph.nodes)
    assert values["aux1.l"].shape == (2, 2)



def test_forward_all_is_generated_when_first_called():
    model = build("a: {conv: {out: 4, k: 1}}\nout: {conv: {out: 2, k: 1}}").eval()
    cls = type(model)
    assert "_forward_all" not in cls.__dict__  # building does not compile it
    assert "def _forward_all(self, x):" in model.code  # the source still shows it
    with torch.no_grad():
        values = model._forward_all(x_for(model))
    assert "_forward_all" in cls.__dict__  # compiled once, kept on the network's class
    assert set(values) == {"a", "out"} and values["out"].shape == (2, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model._forward_all(x_for(model))["out"], model(x_for(model)))

# -- seeds and devices ----------------------------------------------------------


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights_different_seed_different():
    a, b = build(AUX_BODY, outputs=AUX_OUTPUTS, seed=3), build(AUX_BODY, outputs=AUX_OUTPUTS, seed=3)
    c = build(AUX_BODY, outputs=AUX_OUTPUTS, seed=4)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["stem.conv.weight"], wc["stem.conv.weight"])
    assert not torch.equal(wa["head.l.weight"], wc["head.l.weight"])


def test_build_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    build(AUX_BODY, outputs=AUX_OUTPUTS, seed=7)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_cpu_build_leaves_the_accelerators_generators_alone(monkeypatch):
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    model = build(AUX_BODY, outputs=AUX_OUTPUTS, seed=7)
    again = build(AUX_BODY, outputs=AUX_OUTPUTS, seed=7, device="meta")
    assert not reseeded and list(model.state_dict()) == list(again.state_dict())


def test_a_build_on_a_named_device_draws_the_weights_of_the_default_build():
    """device="cpu" takes the path every named device takes (torch.nn's classes given `device=`, the rest built
    inside `torch.device`): the same draws in the same order as the build without a device."""
    graph = archcompiler.compile_graph("googlenet")
    named, default = lower(graph, seed=3, device="cpu").state_dict(), lower(graph, seed=3).state_dict()
    assert list(named) == list(default) and all(torch.equal(named[k], default[k]) for k in named)


@pytest.mark.parametrize("device", ["xyz", -1, "cuda:0"])
def test_a_device_torch_does_not_know_or_cannot_reach_is_a_user_error(device):
    if device == "cuda:0" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=f"cannot build on device '{device}'") as caught:
        build(AUX_BODY, outputs=AUX_OUTPUTS, device=device)
    assert "\n" not in str(caught.value) and "'cpu', 'meta', 'cuda'" in str(caught.value)


def test_meta_device_builds_without_weights():
    model = build(AUX_BODY, outputs=AUX_OUTPUTS, device="meta")
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.is_meta for t in tensors)
    assert list(model.state_dict()) == list(build(AUX_BODY, outputs=AUX_OUTPUTS).state_dict())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_meta_device_allocates_nothing():
    page = 4096

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before = rss()
    # 16384 x 16384 floats would be 1 GiB if allocated
    model = build("f: flatten\nout: {linear: {out: 16384}}", input=(16, 32, 32), device="meta")
    assert model.out.weight.shape == (16384, 16384) and model.out.weight.is_meta
    assert rss() - before < 200 * 2**20


# -- generated forward ---------------------------------------------------------


def test_forward_frees_intermediates(aux_model):
    code = aux_model.code
    assert "def forward(self, x):" in code
    assert "= None" in code
    forward = code.split("def _forward_all")[0]
    assert "if self.training:" in forward
    assert "F.pad(" in forward  # stride-2 "same" padding is asymmetric on an 8x8 map
    # the train-only branch's input (stem) must survive until the training block
    before_training = forward.split("if self.training:")[0]
    assert "stem = None" not in before_training
    assert "head_p = None" in forward  # the aux branch runs where it branches off (right after stem)


SMALL_SPECS = [
    dict(body="""
    a: {conv: {out: 8, k: 7, s: 2, pad: 3, norm: true, act: relu}}
    p: {maxpool: {k: 3, s: 2, ceil: true}}
    b: {conv: {out: 8, k: 4, s: 2, pad: same, norm: true}}
    c: {conv: {out: 8, k: 3, pad: [0, 2, 1, 0]}}
    out: {avgpool: {k: 3, s: 2, pad: 1, ceil: true, count_include_pad: false}}
    """, input=(3, 33, 31)),
    dict(body="""
    stem: {conv: {out: 6, k: 3, pad: 1}}
    out:
      concat:
        a: {conv: {out: 2, k: 1}}
        b: [{conv: {out: 3, k: 1}}, {conv: {out: 4, k: 5, pad: 2, dilation: 1}}]
        c: [{maxpool: {k: 3, s: 1, pad: 1}}, {conv: {out: 1, k: 1}}]
        d: identity
    """, input=(3, 11, 11)),
    dict(body="""
    r1:
      residual: [{conv: {out: 4, k: 3, pad: 1, groups: 2}}, relu]
      shortcut: {conv: {out: 4, k: 1}}
      act: relu
    s: {add: {a: {conv: {out: 4, k: 3, pad: 2, dilation: 2}}, b: identity}, act: silu}
    g: {adaptive_maxpool: {size: [2, 3]}}
    f: flatten
    d: {dropout: {p: 0.2}}
    l: {linear: {out: 7}}
    out: {softmax: {dim: 1}}
    """, input=(2, 9, 10)),
]


@pytest.mark.parametrize("case", SMALL_SPECS, ids=["stem", "concat", "residual"])
def test_no_shape_mismatches(case):
    model = build(case["body"], input=case["input"])
    assert shape_mismatches(model) == []
    model.eval()
    with torch.no_grad():
        out = model(x_for(model))
    assert tuple(out.shape[1:]) == model.graph.nodes[model.graph.outputs["o"].node].shape
    report = archcompiler.analysis.analyze(model.graph)
    assert report.total_params == sum(p.numel() for p in model.parameters())
    assert report.total_buffers == sum(b.numel() for b in model.buffers())


def test_gradients_flow(aux_model):
    aux_model.train()
    aux_model.zero_grad()
    out = aux_model(x_for(aux_model))
    sum(t.square().sum() for t in out).backward()
    for name, p in aux_model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert aux_model.aux1.l.weight.grad.abs().sum() > 0
    assert aux_model.stem.conv.weight.grad.abs().sum() > 0
    aux_model.zero_grad()


# -- numerics -------------------------------------------------------------------


def _conv(m: nn.Conv2d, x, padding=None):
    return F.conv2d(x, m.weight, m.bias, m.stride, m.padding if padding is None else padding, m.dilation, m.groups)


def test_residual_and_add_numerics():
    model = build("""
    c: {conv: {out: 4, k: 3, pad: 1}}
    r:
      residual: [{conv: {out: 4, k: 3, pad: 1}}, relu, {conv: {out: 4, k: 1}}]
      act: relu
    a:
      add: {p: {conv: {out: 4, k: 1}}, q: identity, z: {conv: {out: 4, k: 3, pad: 1, bias: false}}}
      act: relu
    out:
      residual: {x: {conv: {out: 6, k: 1}}}
      shortcut: {conv: {out: 6, k: 1}}
    """).eval()
    x = x_for(model)
    m = model
    c = _conv(m.c, x)
    r = F.relu(c + _conv(m.r._modules["2"], F.relu(_conv(m.r._modules["0"], c))))
    a = F.relu(_conv(m.a.p, r) + r + _conv(m.a.z, r))
    expected = _conv(m.out.shortcut, a) + _conv(m.out.x, a)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)


def test_scaled_residual_numerics():
    model = build("""
    c: {conv: {out: 4, k: 3, pad: 1}}
    out:
      residual: [{conv: {out: 4, k: 3, pad: 1}}]
      scale: 0.17
      act: relu
    """).eval()
    x = x_for(model)
    c = _conv(model.c, x)
    expected = F.relu(c + 0.17 * _conv(model.out._modules["0"], c))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_asymmetric_same_padding_numerics():
    model = build("""
    a: {conv: {out: 4, k: 4, s: 2, pad: same}}
    b: {conv: {out: 5, k: 4, s: 1, pad: same}}
    c: {conv: {out: 5, k: 3, pad: [0, 2, 1, 0]}}
    out: {conv: {out: 3, k: 4, s: 2, pad: same, norm: true, act: relu}}
    """, input=(3, 9, 9)).eval()
    x = x_for(model)
    m = model
    assert m.a.padding == (0, 0)
    # 9 -> 5 at stride 2 with k 4: 3 pixels of padding, 1 before and 2 after
    a = _conv(m.a, F.pad(x, (1, 2, 1, 2)))
    assert a.shape == (2, 4, 5, 5)
    b = F.conv2d(a, m.b.weight, m.b.bias, padding="same")  # torch's own "same": also 1 before, 2 after
    c = _conv(m.c, F.pad(b, (1, 0, 0, 2)))
    # c is 5x4; at stride 2 with k 4: heights pad (1, 2), widths pad (1, 1)
    conv = _conv(m.out.conv, F.pad(c, (1, 1, 1, 2)))
    bn = m.out.bn
    expected = F.relu(F.batch_norm(conv, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
    with torch.no_grad():
        got = model._forward_all(x)
    torch.testing.assert_close(got["a"], a.detach())
    torch.testing.assert_close(got["b"], b.detach())
    torch.testing.assert_close(got["c"], c.detach())
    torch.testing.assert_close(got["out"], expected.detach())
    assert got["out"].shape == (2, 3, 3, 2)


def test_spec_without_outputs_returns_its_last_layer():
    spec = make_spec("a: {conv: {out: 4, k: 3, pad: 1}}\nb: relu\nc: {conv: {out: 2, k: 1}}")
    model = archcompiler.build(spec).eval()
    x = x_for(model)
    with torch.no_grad():
        out = model(x)
        values = model._forward_all(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 8, 8)
    assert torch.equal(out, values["c"])
    model.train()
    with torch.no_grad():
        assert torch.equal(model(x), out)  # no train-only outputs: same value, a plain tensor


def test_build_pauses_the_collector_and_restores_the_setting(monkeypatch):
    import gc

    import archcompiler.lower as lowering

    seen = []
    real = lowering.lower

    def lower(*args, **kwargs):  # the modules are made with the collector off
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(lowering, "lower", lower)
    assert gc.isenabled()
    archcompiler.build("lenet5")
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        archcompiler.build("lenet5")
        assert not gc.isenabled()  # the caller's setting, kept
    finally:
        gc.enable()


# -- equal layers made as copies (`lower.stamped`) -------------------------------


def _module_state(module: nn.Module) -> dict:
    """A module's own attributes, tensors as (shape, dtype, device) and submodules as their class."""
    def plain(v):
        if isinstance(v, torch.Tensor):
            return (tuple(v.shape), v.dtype, v.device.type, v.requires_grad)
        if isinstance(v, nn.Module):
            return type(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in vars(module).items()}


def _assert_same_network(copied: nn.Module, made: nn.Module, values: bool = True) -> None:
    pairs = list(zip(copied.named_modules(), made.named_modules(), strict=True))
    for (name, a), (other, b) in pairs:
        assert name == other and (type(a) is type(b) if name else type(a).__name__ == type(b).__name__)
        assert _module_state(a) == _module_state(b), name
    a, b = copied.state_dict(), made.state_dict()
    assert list(a) == list(b)
    if values:  # the same random draws, in the same order
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Nothing is shared between two layers: each has its own modules, containers and tensors.
    assert len({id(m) for _, m in copied.named_modules(remove_duplicate=False)}) == len(pairs)
    containers = [id(v) for m in copied.modules() for v in vars(m).values() if isinstance(v, (dict, list, set))]
    assert len(set(containers)) == len(containers)
    if values:
        storages = [t.untyped_storage().data_ptr() for t in a.values() if t.numel()]
        assert len(set(storages)) == len(storages)


def _small_zoo_models(limit: int = 30_000_000) -> list[str]:
    return [n for n in archcompiler.list_models() if archcompiler.summary(n).total_params < limit]


@pytest.mark.parametrize("name", _small_zoo_models())
def test_stamped_layers_equal_their_constructors(name):
    """Every zoo network under 30M parameters (every family but VGG and AlexNet, which repeat few layers, and
    the wide or large variants of the others): the copies draw what the constructors would."""
    graph = archcompiler.compile_graph(name)
    _assert_same_network(lower(graph, seed=5), lower(graph, seed=5, stamp=False))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(most=8), st.integers(0, 2**32))
def test_stamped_layers_equal_their_constructors_on_random_wirings(text, seed):
    """Equal layers (the same op, arguments and input shape) anywhere in a network, at any seed: the copies
    draw what the constructors would, and the meta build is the CPU build's network."""
    from archcompiler.spec import parse_spec

    graph = archcompiler.compile_graph(parse_spec(text, "random.yaml"))
    copied = lower(graph, seed=seed)
    _assert_same_network(copied, lower(graph, seed=seed, stamp=False))
    _assert_same_network(lower(graph, device="meta"), copied.to("meta"), values=False)


def test_stamping_copies_the_repeated_layers_and_skips_their_constructors(monkeypatch):
    graph = archcompiler.compile_graph(make_spec(
        "stem: {conv: {out: 8, k: 3, pad: 1}}\nrepeat: {blk: [], repeat: 4}",
        blocks="blk: {residual: [{conv: {out: 8, k: 3, pad: 1}}, {conv: {out: 8, k: 3, pad: 1, act: null}}]}"))
    made = []
    real = nn.Conv2d.__init__

    def counted(self, *args, **kwargs):
        made.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(nn.Conv2d, "__init__", counted)
    copied = lower(graph, seed=1)
    constructed = len(made)
    made.clear()
    whole = lower(graph, seed=1, stamp=False)
    assert len(made) == 9 and constructed == 3  # the stem, and each of the block's two convs once
    _assert_same_network(copied, whole)


def test_stamped_layers_on_the_meta_device():
    graph = archcompiler.compile_graph("inception_v4")
    copied, made = lower(graph, device="meta"), lower(graph, device="meta", stamp=False)
    assert all(t.is_meta for t in [*copied.parameters(), *copied.buffers()])
    _assert_same_network(copied, made, values=False)



@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "lenet5", "convnext_tiny"])
def test_a_meta_build_is_the_network_its_constructors_make_on_the_cpu(name):
    """On the meta device the constructors skip `reset_parameters()` and take `device=` where they can:
    the module tree, every attribute and every tensor's shape, dtype and grad flag are still the CPU build's.
    (BatchNorm, conv and linear in googlenet and inception_v3; LeNet-5's partial conv; ConvNeXt's LayerNorm2d
    and its layer scales, parameters that a description makes with `torch.full`.)"""
    graph = archcompiler.compile_graph(name)
    meta = lower(graph, device="meta")
    assert all(t.is_meta for t in [*meta.parameters(), *meta.buffers()])
    _assert_same_network(meta, lower(graph).to("meta"), values=False)

def test_a_module_class_not_known_to_be_stampable_is_always_constructed():
    class Drawn(nn.Module):  # a plugin's module whose constructor draws outside reset_parameters
        def __init__(self):
            super().__init__()
            self.register_buffer("projection", torch.randn(4, 4))

    assert stampable(nn.Conv2d(3, 4, 1)) and stampable(nn.BatchNorm2d(4))
    assert not stampable(Drawn())
    assert not stampable(nn.Sequential(nn.Conv2d(3, 4, 1)))  # a container of torch's not listed: its own rules


def test_every_module_class_of_the_zoo_is_stampable():
    """A new op's module class is made a copy of only once listed in STAMPABLE; the zoo's all are."""
    classes = set()
    for name in archcompiler.list_models():
        model = archcompiler.build(name, device="meta")
        classes |= {type(m) for m in model.modules() if not isinstance(m, (CompiledModel, Container))}
    assert classes and not classes - STAMPABLE


def test_a_copy_draws_its_submodules_in_the_constructors_order():
    """Children first, left to right, as a description builds them: here two convs inside one module."""
    from archcompiler.modules import ConvNormAct

    def made():
        return ConvNormAct(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))

    with torch.random.fork_rng(devices=[]):  # the other tests' global generator left alone
        torch.manual_seed(0)
        template = made()
        torch.manual_seed(1)
        expected = made().state_dict()
        torch.manual_seed(1)
        copy = stamped(template).state_dict()
    assert list(copy) == list(expected) and all(torch.equal(copy[k], expected[k]) for k in copy)
    assert not torch.equal(copy["conv.weight"], template.conv.weight)
