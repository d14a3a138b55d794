"""`summary --include` and `--like`: archc's static count against fvcore, torchinfo and ptflops.

For each model below, one compiled model (`archcompiler.build`, eval mode, batch 1) is counted by the
three tools themselves:

- fvcore 0.1.5: `FlopCountAnalysis(model, x).total()` (its "flops", one per multiply-add);
- torchinfo 1.8.0: `summary(model, input_size, mode="eval").total_mult_adds`;
- ptflops 0.7.5: `get_model_complexity_info(model, input, backend="pytorch")`, its default backend;

and archc's total under `Counting(like=TOOL)`, from the static graph alone, equals each exactly.  The
rules that make it so are the ops' `costs` in the registry (docs/summaries.md, "What other tools count").

Default run: every spec file of the zoo, a family by the first variant it declares (the smallest but
for MobileNetV3 and SqueezeNet), at the smallest input of SIZES it takes (the tools' cost is mostly
the forward).
ARCHC_HEAVY=1: every zoo model, at its native input:

    ARCHC_HEAVY=1 .venv/bin/python -m pytest tests/test_counting.py -n 2
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import archcompiler
from archcompiler import zoo
from archcompiler.analysis import Counting, analyze, counting
from archcompiler.errors import UserError
from archcompiler.ops import OPS
from archcompiler.ops.registry import ACTIVATIONS, COST_KINDS, COUNTERS, PTFLOPS_ACTIVATION_COUNTS

from conftest import ROOT, run_archc
from random_graphs import random_graph

HEAVY = os.environ.get("ARCHC_HEAVY", "") not in ("", "0")
SIZES = (32, 64, 96, 128, 160, 192, 224)  # square inputs tried, smallest first, below the native one
TOOLS = tuple(COUNTERS)


def _first_variants() -> list[str]:
    """Per spec file, the model it names: its own name, or for a family the first variant it declares."""
    from archcompiler.spec import load_spec

    specs = [load_spec(path) for path in sorted(zoo.ZOO.glob("*.yaml"))]
    return sorted(next(iter(spec.variants)) if spec.variants else spec.name for spec in specs)


MODELS = sorted(zoo.list_models()) if HEAVY else _first_variants()


@functools.lru_cache(maxsize=None)
def _input(name: str) -> tuple[int, ...]:
    """The smallest square input of SIZES that `name` takes (its native input in the heavy run)."""
    native = archcompiler.compile_graph(name).input_shape
    if HEAVY:
        return native
    for size in SIZES:
        if size >= native[1]:
            break
        try:
            archcompiler.compile_graph(name, input_shape=(native[0], size, size))
        except UserError:  # too small for some layer (a fixed pool, a flatten into a fixed linear)
            continue
        return (native[0], size, size)
    return native


def _tool_totals(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """Each tool's total for one built model, batch 1, eval mode."""
    import ptflops
    import torchinfo
    from fvcore.nn import FlopCountAnalysis

    x = torch.zeros(1, *shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit tracing's and ptflops' chatter
        fv = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
        ti = torchinfo.summary(model, input_size=(1, *shape), mode="eval", verbose=0).total_mult_adds
        with contextlib.redirect_stdout(io.StringIO()):
            pt, _ = ptflops.get_model_complexity_info(model, shape, as_strings=False, print_per_layer_stat=False,
                                                      verbose=False, backend="pytorch", ost=io.StringIO())
    return {"fvcore": int(fv), "torchinfo": int(ti), "ptflops": int(pt)}


@pytest.mark.parametrize("name", MODELS)
def test_like_each_tool_equals_its_total(name):
    """archc's total per tool, from the graph, against the tools on one build of `name` at `_input(name)`."""
    shape = _input(name)
    graph = archcompiler.compile_graph(name, input_shape=shape)
    ours = {tool: analyze(graph, counting=Counting(like=tool)).total_macs for tool in TOOLS}
    # built on the meta device and given CPU storage uninitialised: the counts do not read a value
    model = archcompiler.build(name, input_shape=shape, device="meta").to_empty(device="cpu").eval()
    theirs = _tool_totals(model, shape)
    assert ours == theirs, f"{name} at {'x'.join(map(str, shape))}: archc --like (left), the tools (right)"


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny"])
def test_ptflops_aten_backend_counts_the_macs_and_biases(name):
    # ptflops' other backend counts aten convolutions and matrix products only, biases included (docs/summaries.md)
    import ptflops

    shape = _input(name)
    model = archcompiler.build(name, input_shape=shape, device="meta").to_empty(device="cpu").eval()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        aten, _ = ptflops.get_model_complexity_info(model, shape, as_strings=False, print_per_layer_stat=False,
                                                    verbose=False, backend="aten", ost=io.StringIO())
    graph = archcompiler.compile_graph(name, input_shape=shape)
    assert analyze(graph, counting=Counting(("bias",))).total_macs == aten


def test_every_spec_file_is_counted():
    files = {p.stem for p in zoo.ZOO.glob("*.yaml")}
    assert {zoo.models()[n].path.stem for n in MODELS} == files


# --- what the switches count, on archc's side ----------------------------------------------------


@functools.lru_cache(maxsize=None)
def _graph(name: str = "resnet18"):
    return archcompiler.compile_graph(name)


def test_no_counting_is_the_plain_macs():
    graph = _graph()
    plain = analyze(graph)
    assert plain.counting is None and "counting" not in plain.to_dict()
    assert analyze(graph, counting=counting()) == plain
    assert counting("", None) is None


def test_each_kind_adds_its_own_work():
    # resnet18: biases only in the fc (1,000 outputs); every BatchNorm affine, 2 per element in eval;
    # a ReLU after the stem, in each block and after each of the 8 residual adds; two pools.
    graph = _graph()
    macs = analyze(graph).total_macs
    rows = [r for r in analyze(graph).rows if r.kind == "layer"]
    extra = {k: analyze(graph, counting=Counting((k,))).total_macs - macs for k in COST_KINDS}
    assert extra["bias"] == 1_000
    normed = [r for r in rows if r.op == "batchnorm" or (r.op == "conv" and graph.nodes[r.name].args.norm)]
    assert extra["norm"] == sum(2 * r.activations for r in normed) > 0
    acted = [r for r in rows if getattr(graph.nodes[r.name].args, "act", None) or OPS[r.op].category == "act"]
    assert extra["act"] == sum(r.activations for r in acted) > 0
    pools = [r for r in rows if OPS[r.op].category == "pool"]
    assert extra["pool"] == sum(sum(map(_numel, graph.input_shapes(r.name))) for r in pools) > 0
    adds = [r for r in rows if r.op == "add"]  # two inputs each: one addition per element
    assert len(adds) == 8 and extra["add"] == sum(r.activations for r in adds)
    # kinds add up, and a row's count is its layers' (a block sums its contents)
    everything = analyze(graph, counting=Counting(tuple(COST_KINDS)))
    assert everything.total_macs == macs + sum(extra.values())
    assert everything.row("layer1").macs == sum(r.macs for r in everything.rows
                                                if r.kind == "layer" and r.name.startswith("layer1."))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_the_python_api_counts_the_same():
    expected = analyze(_graph(), counting=Counting(like="torchinfo"))
    assert archcompiler.summary("resnet18", counting=archcompiler.Counting(like="torchinfo")) == expected


def test_counting_scales_with_the_batch():
    graph = _graph()
    one = analyze(graph, counting=Counting(like="ptflops")).total_macs
    assert analyze(graph, batch=4, counting=Counting(like="ptflops")).total_macs == 4 * one


def test_counters_name_only_kinds_that_exist():
    for counter in COUNTERS.values():
        assert set(counter.kinds) <= set(COST_KINDS)
    # ptflops' count of every activation archc has, as its module and as a fused `act`
    assert set(PTFLOPS_ACTIVATION_COUNTS) == set(ACTIVATIONS)


def test_bad_switches_are_refused():
    with pytest.raises(UserError, match="--like must be one of fvcore, torchinfo, ptflops"):
        Counting(like="thop")
    with pytest.raises(UserError, match="--include takes bias, norm, act, pool, add"):
        counting("bias,flops")
    with pytest.raises(UserError, match="give one of them"):
        counting("bias", "fvcore")


# --- the command line -------------------------------------------------------------------------------


def test_summary_like_prints_the_tools_total():
    r = run_archc("summary", "resnet18", "--like", "fvcore", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    expected = analyze(_graph(), counting=Counting(like="fvcore"))
    assert data["total_macs"] == expected.total_macs
    assert data["counting"] == {"like": "fvcore", "include": list(COUNTERS["fvcore"].kinds)}
    table = run_archc("summary", "resnet18", "--like", "fvcore", "--count", "flops", env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert f"{2 * expected.total_macs:,} FLOPs" in text and "(as fvcore counts them: MACs + norm, pool by its rules)" in text


def test_summary_include_names_what_it_adds():
    r = run_archc("summary", "resnet18", "--include", "bias,norm", env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    total = analyze(_graph(), counting=Counting(("bias", "norm"))).total_macs
    text = " ".join(r.stdout.split())
    assert f"{total:,} MACs" in text and "(MACs + bias, norm)" in text


@pytest.mark.parametrize("args, message", [
    (("--like", "thop"), "--like must be one of fvcore, torchinfo, ptflops, got 'thop'"),
    (("--include", "bn"), "--include takes bias, norm, act, pool, add (comma-separated), got 'bn'"),
    (("--include", "bias", "--like", "fvcore"), "give one of them"),
])
def test_summary_refuses_bad_switches(args, message):
    r = run_archc("summary", "resnet18", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("archc: error: ") and message in r.stderr and "Traceback" not in r.stderr


def test_help_names_every_kind_and_tool():
    text = " ".join(run_archc("summary", "--help", env={"COLUMNS": "300"}).stdout.split())
    for name in (*COST_KINDS, *COUNTERS):
        assert name in text
    assert "archc summary resnet50 --like fvcore" in text


def test_docs_table_lists_what_each_tool_counts():
    # docs/summaries.md has a row per tool naming the kinds its preset adds, as the registry says
    doc = (ROOT / "docs" / "summaries.md").read_text()
    for counter in COUNTERS.values():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `--like {counter.name}`"))
        kinds = row.split("|")[2]
        assert [k.strip(" `") for k in kinds.split(",")] == list(counter.kinds), row


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(most=8))
def test_like_each_tool_equals_its_total_on_random_wirings(text):
    """How a layer runs decides what a tool sees (an activation written into its input runs as a function,
    not its module): on random wirings of every kind of layer, archc's count per tool is the tool's own."""
    from archcompiler.spec import parse_spec

    spec = parse_spec(text, "random.yaml")
    graph = archcompiler.compile_graph(spec)
    ours = {tool: analyze(graph, counting=Counting(like=tool)).total_macs for tool in TOOLS}
    model = archcompiler.build(spec, device="meta").to_empty(device="cpu").eval()
    assert ours == _tool_totals(model, graph.input_shape), text
