"""The zoo exports: ONNX runs in onnxruntime within 1e-4 of torch, the
TorchScript trace and the torch.export program give the eager outputs, and
torch.compile(fullgraph=True) compiles the whole forward without a graph
break and gives the eager outputs.

By default the suite exports one spec of each kind of structure, which
together use every built-in op (EXPORTED), and compiles and traces a smaller
set (TRACED): a whole-zoo matrix costs many CPU-minutes. `ARCHC_HEAVY=1` runs
both over every spec in specs/.

torch.compile runs with the "aot_eager" backend here: it captures the full
graph through Dynamo and AOTAutograd like the default backend, but skips
Inductor's C++ code generation, which would take minutes per network on a
2-core CPU. One small network also goes through Inductor itself.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import archcompiler
from archcompiler import export

from conftest import flat_outputs
from random_graphs import random_graph

ALL_SPECS = sorted((Path(__file__).parents[1] / "specs").glob("*.yaml"))
HEAVY = os.environ.get("ARCHC_HEAVY") == "1"
EXPORTED = {"lenet5", "alexnet_paper", "googlenet", "inception_v3", "inception_resnet_v2", "resnet", "densenet",
            "squeezenet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "regnet", "shufflenet_v2", "convnext"}
TRACED = {"lenet5", "googlenet", "resnet", "mobilenet_v3", "shufflenet_v2", "convnext"}
SPECS = [p for p in ALL_SPECS if HEAVY or p.stem in EXPORTED]


def test_the_default_export_set_uses_every_op_the_zoo_uses():
    def ops(paths):
        return {n.op for p in paths for n in archcompiler.compile_graph(p).nodes.values()}

    assert ops(ALL_SPECS) <= ops(SPECS)


def _traced_only(model) -> None:
    if not HEAVY and Path(model.graph.path).stem not in TRACED:
        pytest.skip("traced and compiled for every spec with ARCHC_HEAVY=1")


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def case(request):
    model = archcompiler.build(request.param, seed=0).eval()
    x = torch.randn(2, *model.graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
    return model, x, reference


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_onnx_runs_in_onnxruntime_and_matches_torch(case):
    import onnx
    import onnxruntime

    model, x, reference = case
    data = export.to_onnx(model)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    assert [o.name for o in proto.graph.output] == export.eval_output_names(model)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})  # a batch of 2; exported with 1: the batch is dynamic
    assert relative(out, reference.numpy()) < 1e-4


def test_torchscript_trace_gives_the_eager_outputs(case):
    model, x, reference = case
    _traced_only(model)
    with torch.no_grad():
        traced = torch.jit.trace(model, export.example_input(model), check_trace=False)
        torch.testing.assert_close(traced(x), reference)


def test_torch_export_program_gives_the_eager_outputs_at_any_batch(case):
    model, x, reference = case
    _traced_only(model)
    program = export.exported_program(model)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), reference)
        assert program.module()(x[:1]).shape[0] == 1


@pytest.mark.parametrize("spec", ["lenet5", "googlenet"])
def test_saved_torchscript_and_exported_files_load_and_run(spec):
    model = archcompiler.build(Path(__file__).parents[1] / "specs" / f"{spec}.yaml").eval()
    x = torch.randn(3, *model.graph.input_shape)
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(torch.jit.load(io.BytesIO(export.to_torchscript(model)))(x), reference)
        program = torch.export.load(io.BytesIO(export.to_exported(model)))
        torch.testing.assert_close(program.module()(x), reference)


def test_weights_round_trip_through_safetensors(case, tmp_path):
    model, x, reference = case
    path = tmp_path / "weights.safetensors"
    archcompiler.save_weights(model, path)
    again = archcompiler.build(model.graph.path, seed=5, weights=path).eval()
    path.unlink()
    with torch.no_grad():
        torch.testing.assert_close(again(x), reference, rtol=0, atol=0)


def test_torch_compile_fullgraph_gives_the_eager_outputs(case):
    model, x, reference = case
    _traced_only(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), reference)


def test_torch_compile_with_inductor_on_lenet5():
    model = archcompiler.build(Path(__file__).parents[1] / "specs" / "lenet5.yaml").eval()
    x = torch.randn(4, 1, 32, 32)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(most=6))
def test_random_wirings_export_to_onnx_and_torch_export(text):
    """Every kind of layer, in place or not, wired at random (several outputs among them): the ONNX model in
    onnxruntime and the torch.export program give the eager outputs."""
    import onnxruntime

    from archcompiler.spec import parse_spec

    model = archcompiler.build(parse_spec(text, "random.yaml"), seed=0).eval()
    x = torch.randn(2, *model.graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = flat_outputs(model(x))
    session = onnxruntime.InferenceSession(export.to_onnx(model), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"input": x.numpy()})
    assert len(outs) == len(reference), text
    for out, ref in zip(outs, reference):
        assert relative(out, ref.numpy()) < 1e-4, text
    program = export.exported_program(model)
    with torch.no_grad():
        for got, ref in zip(flat_outputs(program.module()(x)), reference, strict=True):
            torch.testing.assert_close(got, ref, msg=text)
