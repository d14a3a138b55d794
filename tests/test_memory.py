"""Training memory (`archcompiler.memory`, `archc summary --train`) against torch's own count.

The saved activations are checked against `torch.autograd.graph.saved_tensors_hooks` over one training
step (model.train(), forward, loss, backward) of the model `archcompiler.build(...)` makes (the
in-place forward): every tensor autograd packs for backward, deduplicated by storage (data pointer and
size; a view counts as the storage it lives in), parameters and buffers left out (a conv keeps its
weight, BatchNorm its running statistics: counted as parameters).  The rule must be within 2 %;
so far it is exact on every zoo model.

By default: the smallest variant of every spec file (seed specs included) at a small input (64x64,
or the smallest the network takes), batch 2; ARCHC_HEAVY=1: every model of the zoo.  Parameters,
gradients and optimizer state are checked against a torch optimizer's step, at fp32, bf16 and fp16
(the whole model cast, `model.to(dtype)`).
"""

from __future__ import annotations

import functools
import json
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import archcompiler
from archcompiler import memory
from archcompiler.lower import lower
from archcompiler.ops import ACTIVATIONS, OPS, Construct, Lowering, OpDef
from archcompiler.zoo import models

from conftest import flat_outputs, make_spec, run_archc
from random_graphs import random_graph

HEAVY = os.environ.get("ARCHC_HEAVY", "") not in ("", "0")
TOLERANCE = 0.02
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=None)
def small_graph(name: str) -> archcompiler.Graph:
    """`name` at 64x64 (or 75x75) when it takes that, else at its own input; the channels kept."""
    native = archcompiler.compile_graph(name)
    channels, *size = native.input_shape
    if max(size) <= 64:
        return native
    for side in (64, 75):
        try:
            return archcompiler.compile_graph(name, input_shape=(channels, side, side))
        except archcompiler.SpecError:
            continue
    return native


def smallest_per_file() -> list[str]:
    by_file: dict = {}
    for name, model in models().items():
        by_file.setdefault(model.path, []).append(name)
    return sorted(min(names, key=lambda n: (archcompiler.summary(n).total_params, n)) for names in by_file.values())


NAMES = sorted(models()) if HEAVY else smallest_per_file()


def autograd_saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training step, parameters and
    buffers excluded."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    sum(o.float().sum() for o in flat_outputs(out)).backward()
    return sum(kept.values())


def check_saved(graph: archcompiler.Graph, model: torch.nn.Module, dtype: str = "fp32", inplace: bool = True) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, *graph.input_shape).to(DTYPES[dtype])
    measured = autograd_saved_bytes(model, x)
    static = memory.training_memory(graph, dtype=dtype, batch=2, inplace=inplace).saved_bytes
    assert abs(static - measured) <= TOLERANCE * measured, (graph.name, static, measured)


@pytest.mark.parametrize("name", NAMES)
def test_saved_activations_match_autograd(name):
    torch.set_num_threads(1)
    graph = small_graph(name)
    check_saved(graph, archcompiler.build(name, input_shape=graph.input_shape))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "googlenet"])
def test_the_out_of_place_forward_too(name):
    graph = small_graph(name)
    check_saved(graph, lower(graph, inplace=False), inplace=False)


def optimizer_for(kind: str, params) -> torch.optim.Optimizer:
    return {"sgd": lambda: torch.optim.SGD(params, lr=0.1), "momentum": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9),
            "adam": lambda: torch.optim.Adam(params), "adamw": lambda: torch.optim.AdamW(params)}[kind]()


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_parameters_gradients_optimizer_state_and_activations_at_each_dtype(dtype):
    graph = small_graph("mobilenet_v3_small")  # squeeze-and-excitation, hardswish, BatchNorm, dropout
    model = archcompiler.build("mobilenet_v3_small", input_shape=graph.input_shape).to(DTYPES[dtype])
    check_saved(graph, model, dtype)  # the forward and backward of check_saved leave the gradients
    params = [p for p in model.parameters() if p.requires_grad]
    for kind in memory.OPTIMIZERS:
        mem = memory.training_memory(graph, optimizer=kind, dtype=dtype, batch=2)
        opt = optimizer_for(kind, params)
        opt.step()
        state = sum(t.nbytes for s in opt.state.values() for key, t in s.items() if key != "step")
        assert mem.optimizer_bytes == state, kind
        assert mem.parameter_bytes == sum(p.nbytes for p in params)
        assert mem.gradient_bytes == sum(p.grad.nbytes for p in params)
        assert mem.total_bytes == mem.parameter_bytes + mem.gradient_bytes + mem.optimizer_bytes + mem.saved_bytes


# what the zoo does not reach: asymmetric padding, dropout at 0 and 1, batch-mode stochastic depth, a linear along
# the channels, a three-way product, an add written into with gelu, pooling the input (nothing needs a gradient
# there), a standalone relu6 in place, softmax, scale, chunks, a LayerNorm on vectors
ODD_OPS = """
pool0: {maxpool: {k: 2}}
scaled: {scale: {factor: 0.5}}
c1: {conv: {out: 8, k: 3, s: 2, pad: same, norm: true, act: relu6}}
c2: {conv: {out: 8, k: 3, s: 2, pad: same}}
r6: {relu6: null}
d0: {dropout: {p: 0.0}}
sd: {stochastic_depth: {p: 0.5, mode: batch}}
lin: {linear: {out: 8, axis: 0, act: tanh}}
first: {chunk: {n: 2, index: 0}, from: lin}
other: {chunk: {n: 2, index: 1}, from: lin}
gate: {global_avgpool: null, from: other}
prod: {mul: null, from: [first, other, gate], act: silu}
side: {conv: {out: 4, k: 1}, from: prod}
sum: {add: null, act: gelu, from: [side, first]}
gp: {global_maxpool: null}
flat: {flatten: null}
ln: {layernorm: null}
d1: {dropout: {p: 1.0}}
fc: {linear: {out: 5}}
sm: {softmax: null}
"""


@pytest.mark.parametrize("inplace", [True, False])
def test_rules_the_zoo_does_not_reach(inplace):
    graph = archcompiler.compile_graph(make_spec(ODD_OPS, input=(3, 16, 16)))
    check_saved(graph, lower(graph, inplace=inplace), inplace=inplace)
    mem = memory.training_memory(graph, inplace=inplace)
    assert mem.row("pool0").saved_bytes == mem.row("scaled").saved_bytes == 0  # nothing trainable before them
    assert mem.row("d0").saved_bytes == 0 and mem.row("c1").saved_bytes > 0


def test_a_plugin_op_without_a_rule_is_assumed_to_keep_its_inputs():
    archcompiler.register_op(OpDef("my_gelu", OPS["relu"].args, "act", OPS["relu"].infer,
                                   lowering=lambda a, s: Lowering(Construct("nn.GELU"))), origin="my_ops")
    graph = archcompiler.compile_graph(make_spec("c: {conv: {out: 4, k: 3}}\ng: {my_gelu: null}\nfc: {conv: {out: 2, k: 1}}"))
    mem = memory.training_memory(graph, batch=2)
    assert mem.assumed == ("my_gelu",) and mem.row("g").assumed and mem.row("g").saved_bytes > 0
    check_saved(graph, lower(graph))  # GELU does keep its input
    text = memory.to_markdown(mem)
    assert "assumed: my_gelu has no rule" in text


def test_api_and_cli_agree_and_name_their_units():
    mem = memory.training_memory("resnet18", optimizer="momentum", dtype="bf16", batch=4)
    r = run_archc("summary", "resnet18", "--train", "--optimizer", "momentum", "--dtype", "bf16", "--batch", "4",
                  "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["total_bytes"] == mem.total_bytes and data["saved_activation_bytes"] == mem.saved_bytes
    assert data["optimizer_bytes"] == mem.parameter_bytes  # one buffer per parameter
    assert sum(n["saved_activation_bytes"] for n in data["nodes"] if n["kind"] == "layer") == mem.saved_bytes
    for fmt in ("csv", "markdown", "latex"):
        assert run_archc("summary", "resnet18", "--train", "--format", fmt).returncode == 0
    for width in ("80", "120"):
        r = run_archc("summary", "resnet18", "--train", env={"COLUMNS": width})
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert all(len(line) <= int(width) for line in lines) and "…" not in r.stdout
        assert any(line.startswith("total: ") and line.endswith("MB)") and " bytes (" in line for line in lines)


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "sgd"], "archc: error: --optimizer applies to training memory only (hint: add --train)"),
    (["--dtype", "bf16"], "archc: error: --dtype applies to training memory only (hint: add --train)"),
    (["--train", "--optimizer", "rmsprop"], "archc: error: --optimizer must be one of sgd, momentum, adam, adamw, "
                                            "got 'rmsprop'"),
    (["--train", "--dtype", "fp64"], "archc: error: --dtype must be one of fp32, bf16, fp16, got 'fp64'"),
    (["--train", "--columns", "macs"], "archc: error: --columns: no training-memory column 'macs'"),
])
def test_option_errors(args, message):
    r = run_archc("summary", "lenet5", *args)
    assert r.returncode == 2 and r.stderr.startswith(message) and "Traceback" not in r.stderr, r.stderr


def test_the_docs_name_every_ops_rule_and_show_resnet18s_totals():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "summaries.md").read_text(encoding="utf-8")
    section = text.split("## `archc summary --train`", 1)[1].split("\n## ", 1)[0]
    table = re.search(r"\| op \| keeps for backward \|\n(.*?)\n\n", section, re.S).group(1)
    named = set(re.findall(r"`([a-z_0-9]+)`", " ".join(line.split(" | ")[0] for line in table.splitlines())))
    assert named == {name for name, op in OPS.items() if op.origin is None}
    assert all(op.saves is not None for op in OPS.values() if op.origin is None)
    shown = re.search(r"```text\n(parameters: .*?)```", section, re.S).group(1)
    mem = memory.training_memory("resnet18", batch=32, optimizer="adamw")
    assert shown.strip().splitlines() == memory.totals_lines(mem)


# every activation: on its own after a plain conv (in place where it can be), on its own out of place (its
# input is a relu-less conv's output that another layer also reads), as a conv's and a normed conv's `act`, and
# after a sum, fresh and written into an input
EVERY_ACT = """
c0: {conv: {out: 4, k: 3}}
a0: {ACT: null}
c1: {conv: {out: 4, k: 1, act: ACT}}
a1: {ACT: null}
c2: {conv: {out: 4, k: 1, norm: true, act: ACT}, from: a1}
s1: {add: null, act: ACT, from: [c2, c1]}
p: {conv: {out: 4, k: 1}}
s2: {add: null, act: ACT, from: [p, a0]}
"""


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_every_activation(act, inplace):
    graph = archcompiler.compile_graph(make_spec(EVERY_ACT.replace("ACT", act), input=(3, 8, 8)))
    check_saved(graph, lower(graph, inplace=inplace), inplace=inplace)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(most=10), st.booleans())
def test_saved_activations_match_autograd_on_random_wirings(text, inplace):
    """What each layer keeps for backward depends on what runs in place around it (an activation written into
    its input keeps its result, a sum written into an input is that input's storage): on random wirings of
    every kind of layer, in place and out of place, the static count is autograd's."""
    from archcompiler.spec import parse_spec

    graph = archcompiler.compile_graph(parse_spec(text, "random.yaml"))
    model = lower(graph, inplace=inplace)
    outs = flat_outputs(model(torch.zeros(1, *graph.input_shape)))
    assume(any(o.requires_grad for o in outs))  # a training step needs a parameter behind some output
    check_saved(graph, model, inplace=inplace)
