"""Standalone source: every spec's generated file imports only torch, builds the
compiled model's state_dict, and with the same weights computes the same outputs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import archcompiler
from archcompiler.emit import emit_python
from archcompiler.lower import lower

from conftest import flat_outputs
from random_graphs import random_graph

ROOT = Path(__file__).parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_class(module, graph):
    from archcompiler.graph import class_name

    return getattr(module, class_name(graph.name))


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def pair(request, tmp_path_factory):
    graph = archcompiler.compile_graph(request.param)
    path = tmp_path_factory.mktemp("emit") / f"{request.param.stem}.py"
    path.write_text(emit_python(graph, f"specs/{request.param.name}"))
    compiled = archcompiler.build(request.param, seed=1)
    standalone = model_class(load(path, f"standalone_{request.param.stem}"), graph)()
    return graph, path, compiled, standalone


def test_state_dict_keys_shapes_and_order_equal_the_compiled_model(pair):
    _, _, compiled, standalone = pair
    assert [(k, v.shape, v.dtype) for k, v in standalone.state_dict().items()] == \
        [(k, v.shape, v.dtype) for k, v in compiled.state_dict().items()]


def test_same_weights_give_the_same_outputs_in_eval_and_training_mode(pair):
    graph, _, compiled, standalone = pair
    standalone.load_state_dict(compiled.state_dict(), strict=True)
    x = torch.randn(2, *graph.input_shape, generator=torch.Generator().manual_seed(0))
    for training in (False, True):
        compiled.train(training)
        standalone.train(training)
        torch.manual_seed(0)  # dropout draws the same masks in both
        with torch.no_grad():
            a = compiled(x)
            torch.manual_seed(0)
            b = standalone(x)
        assert type(a).__name__ == type(b).__name__
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            torch.testing.assert_close(u, v, rtol=0, atol=0)


# Runs each file in turn with archcompiler unimportable; prints {file: "ok" or the traceback}.
FRESH = """
import json, runpy, sys, traceback
sys.modules["archcompiler"] = None
done = {}
for path in sys.argv[1:]:
    try:
        runpy.run_path(path)
        done[path] = "ok"
    except BaseException:
        done[path] = traceback.format_exc()
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every spec's standalone file run in one new interpreter (one torch import, not one per spec)."""
    folder = tmp_path_factory.mktemp("fresh")
    paths = []
    for spec in SPECS:
        path = folder / f"{spec.stem}.py"
        path.write_text(emit_python(archcompiler.compile_graph(spec), f"specs/{spec.name}"))
        paths.append(str(path))
    r = subprocess.run([sys.executable, "-c", FRESH, *paths], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(done) == sorted(paths)
    return {Path(path).stem: (Path(path), result) for path, result in done.items()}


def test_the_file_imports_only_torch(pair, fresh_runs):
    _, path, _, _ = pair
    ran, result = fresh_runs[path.stem]
    assert result == "ok", result
    assert ran.read_text() == path.read_text()
    assert "archcompiler" not in "".join(line for line in path.read_text().splitlines() if "import" in line)


def test_one_class_per_block_template_with_its_parameters():
    graph = archcompiler.compile_graph(ROOT / "specs" / "googlenet.yaml")
    text = emit_python(graph)
    assert text.count("class Inception(nn.Module):") == 1
    assert "def __init__(self, in_channels, c1, c3r, c3, c5r, c5, pool_proj):" in text
    assert "self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)" in text
    assert "nn.Conv2d(in_channels, c1, 1, bias=False)" in text
    assert "self.fc1 = nn.Linear(128 * 16, 1024)" in text  # the aux head's flatten, channels x 4 x 4
    resnet = emit_python(archcompiler.compile_graph(ROOT / "specs" / "resnet50.yaml"))
    # `project` switches the downsample branch on: one class per variant of the template
    assert "class Bottleneck(nn.Module):" in resnet and "class Bottleneck2(nn.Module):" in resnet
    assert "nn.Conv2d(in_channels, c, 1, bias=False)" in resnet and "nn.Conv2d(c, (4 * c), 1, bias=False)" in resnet


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=random_graph(most=8))
def test_random_wirings_emit_a_file_that_computes_the_compiled_model(text, tmp_path):
    """Every kind of layer, in place or not, wired at random: the emitted file's model, given the compiled
    model's weights, gives its outputs exactly, in eval and in training mode (dropout from one seed)."""
    from archcompiler.spec import parse_spec

    graph = archcompiler.compile_graph(parse_spec(text, "random.yaml"))
    path = tmp_path / f"random_{abs(hash(text))}.py"
    path.write_text(emit_python(graph, "random.yaml"))
    compiled = lower(graph, seed=1)
    standalone = model_class(load(path, path.stem), graph)()
    standalone.load_state_dict(compiled.state_dict(), strict=True)
    x = torch.randn(2, *graph.input_shape, generator=torch.Generator().manual_seed(0))
    for training in (False, True):
        compiled.train(training), standalone.train(training)
        with torch.no_grad():
            torch.manual_seed(0)
            a = compiled(x)
            torch.manual_seed(0)
            b = standalone(x)
        flat, other = flat_outputs(a), flat_outputs(b)
        assert len(flat) == len(other), text
        for u, v in zip(flat, other):
            torch.testing.assert_close(u, v, rtol=0, atol=0, msg=text)
