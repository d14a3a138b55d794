"""The inference build (`archcompiler.optimize`, `build(optimize="inference")`, `archc build --optimize`).

- Its eval outputs are within 1e-5 of the eager model's (max |difference| over max |eager output|) with
  every BatchNorm's running statistics and affine parameters randomised (default-initialised BatchNorm
  is the identity and would hide a wrong fold): by default one small variant of every spec file at a
  small input (64x64 where the network takes it), channels_last; ARCHC_HEAVY=1: every zoo model at its own
  input in both memory formats.
- Which BatchNorms fold is the registry's rule: a conv's own `norm`, and a standalone `batchnorm` right
  after a plain conv or linear whose output feeds nothing else; not past an activation, not a value
  that is also used elsewhere or returned.
- The errors: an unknown `optimize=`, `.train()` on the inference build, `--emit python --optimize`.
- The way back: the inference build made from a checkpoint equals the one made from the eager model
  holding it; the eager model is left unchanged.
- torch.export, ONNX (in onnxruntime) and torch.compile take it.
- On CPU with channels_last, its convs keep oneDNN-prepacked weights (`PrepackedConv2d`): the eager call
  takes them, they follow the weights when those change and are left out of copies, and a trace sees plain convs.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archcompiler
from archcompiler import UserError, zoo
from archcompiler.errors import SpecError
from archcompiler.optimize import InferenceModel, PrepackedConv2d, fold_plan, inference_model, prepacking_available
from archcompiler.spec import parse_spec

from conftest import flat_outputs, make_spec, run_archc, spec_text
from random_graphs import UNARY, random_graph

HEAVY = bool(os.environ.get("ARCHC_HEAVY"))
TOLERANCE = 1e-5

# The variant of each spec file that the default run checks (the smallest, and one with BatchNorm where the
# file has both kinds); a spec file with one model is that model.  test_every_spec_file_is_covered keeps it whole.
VARIANT = {
    "vgg.yaml": "vgg11_bn", "resnet.yaml": "resnet18", "densenet.yaml": "densenet121",
    "mobilenet_v3.yaml": "mobilenet_v3_small", "shufflenet_v2.yaml": "shufflenet_v2_x0_5",
    "efficientnet.yaml": "efficientnet_b0", "efficientnet_v2.yaml": "efficientnet_v2_s",
    "regnet.yaml": "regnet_y_400mf", "convnext.yaml": "convnext_tiny", "squeezenet.yaml": "squeezenet1_1",
}


def default_models() -> list[str]:
    by_file: dict[str, list[str]] = {}
    for name, model in zoo.models().items():
        by_file.setdefault(model.path.name, []).append(name)
    return sorted(VARIANT.get(f, names[0]) for f, names in by_file.items())


def test_every_spec_file_is_covered():
    by_file: dict[str, list[str]] = {}
    for name, model in zoo.models().items():
        by_file.setdefault(model.path.name, []).append(name)
    for file, names in by_file.items():
        assert len(names) == 1 or file in VARIANT, f"{file} has variants {names}: choose one in VARIANT"
        assert VARIANT.get(file, names[0]) in names


def small_input(name: str) -> tuple[int, ...]:
    """The smallest of 64x64, 96x96, 128x128 that the network takes, else its own input."""
    native = archcompiler.compile_graph(name).input_shape
    for side in (64, 96, 128):
        if len(native) == 3 and side < native[1]:
            try:
                archcompiler.compile_graph(name, input_shape=(native[0], side, side))
            except SpecError:
                continue
            return (native[0], side, side)
    return native


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> int:
    """Running statistics and affine parameters of every BatchNorm drawn at random; how many there are."""
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                count += 1
    return count


def worst_relative(a, b) -> float:
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(flat_outputs(a), flat_outputs(b)))


def batchnorms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_matches_eager(name: str, input_shape=None, formats=(False, True)) -> None:
    eager = archcompiler.build(name, input_shape=input_shape)
    norms = randomise_batchnorm(eager)
    eager.eval()
    x = torch.randn(2, *eager.graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = eager(x)
    for channels_last in formats:
        fast = inference_model(eager, channels_last=channels_last)
        assert isinstance(fast, InferenceModel) and not fast.training
        assert batchnorms(fast) == norms - len(fast.folded)
        with torch.no_grad():
            got = fast(x)
        assert worst_relative(got, expected) <= TOLERANCE, (name, channels_last)
    assert batchnorms(eager) == norms  # the eager model is left as it was


@pytest.mark.parametrize("name", default_models())
def test_inference_build_matches_eager(name):
    # channels_last, the default on CPU; the default layout on every network with ARCHC_HEAVY=1, and below
    check_matches_eager(name, small_input(name), formats=(True,))


@pytest.mark.skipif(not HEAVY, reason="every zoo model at its own input: set ARCHC_HEAVY=1")
@pytest.mark.parametrize("name", zoo.list_models())
def test_inference_build_matches_eager_every_model(name):
    check_matches_eager(name)


@pytest.fixture(scope="module")
def resnet18() -> archcompiler.lower.CompiledModel:
    """An eager ResNet-18 at 64x64 with random BatchNorm statistics (do not modify)."""
    eager = archcompiler.build("resnet18", input_shape=(3, 64, 64), seed=5)
    randomise_batchnorm(eager, seed=5)
    return eager


def test_resnet_folds_every_batchnorm(resnet18):
    fast = inference_model(resnet18, channels_last=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert worst_relative(fast(x), resnet18.eval()(x)) <= TOLERANCE
    assert batchnorms(fast) == 0 and len(fast.folded) == 20
    assert not any(k.endswith(("running_mean", "running_var")) for k in fast.state_dict())


FOLDS = """
c1: {conv: {out: 4, k: 3, pad: 1, bias: false}}
b1: {batchnorm: {}}
r1: {relu: null}
c2: {conv: {out: 4, k: 1, act: relu}}
b2: {batchnorm: {}}
c3: {conv: {out: 4, k: 1}}
b3: {batchnorm: {}}
side: {conv: {out: 4, k: 1}, from: c3}
sum: {add: null, from: [b3, side]}
c4: {conv: {out: 4, k: 1, norm: true, act: relu}}
pool: {global_avgpool: null}
flat: {flatten: null}
fc: {linear: {out: 6}}
bn: {batchnorm: {}}
"""


def test_which_batchnorms_fold():
    spec = make_spec(FOLDS)
    graph = archcompiler.compile_graph(spec)
    plan = fold_plan(graph)
    # node whose weights change -> the BatchNorm it takes in
    assert {k: v[0] for k, v in plan.items()} == {"c1": "b1", "c4": "c4", "fc": "bn"}
    eager = archcompiler.build(spec)
    randomise_batchnorm(eager, seed=3)
    eager.eval()
    fast = inference_model(eager, channels_last=False)
    assert fast.folded == {"b1": "c1", "c4": "c4", "bn": "fc"}
    assert batchnorms(fast) == 2  # b2 (after an activation) and b3 (its conv also feeds `side`)
    assert fast.c1.bias is not None  # the shift went into a bias the conv did not have
    x = torch.randn(3, *graph.input_shape)
    with torch.no_grad():
        assert worst_relative(fast(x), eager(x)) <= TOLERANCE


def test_a_returned_value_is_not_folded_into():
    spec = make_spec("c: {conv: {out: 4, k: 1}}\nb: {batchnorm: {}}\n",
                     outputs="features: c\nlogits: b\n")
    assert fold_plan(archcompiler.compile_graph(spec)) == {}


def test_unknown_optimize_value_is_refused():
    with pytest.raises(UserError, match="optimize must be None or one of 'inference', got 'fast'"):
        archcompiler.build("lenet5", optimize="fast")


def test_train_is_refused_eval_is_not(resnet18):
    fast = inference_model(resnet18)
    with pytest.raises(RuntimeError, match="inference build .* no training mode"):
        fast.train()
    assert fast.eval() is fast and not fast.training
    with pytest.raises(UserError, match="already an inference build"):
        inference_model(fast)


def test_inference_build_from_a_checkpoint(tmp_path, resnet18):
    eager = resnet18
    path = tmp_path / "ckpt.pt"
    archcompiler.save_weights(eager, path)
    from_checkpoint = archcompiler.build("resnet18", input_shape=(3, 64, 64), weights=path, optimize="inference")
    from_model = inference_model(eager)
    assert from_checkpoint.state_dict().keys() == from_model.state_dict().keys()
    for k, v in from_model.state_dict().items():
        assert torch.equal(from_checkpoint.state_dict()[k], v), k
    assert from_model.state_dict().keys() != eager.state_dict().keys()  # not checkpoint-compatible, as documented


def test_export_and_onnx_take_it():
    from archcompiler.export import exported_program, to_onnx

    spec = make_spec(FOLDS)
    eager = archcompiler.build(spec)
    randomise_batchnorm(eager, seed=4)
    fast = inference_model(eager.eval(), channels_last=True)
    x = torch.randn(2, *fast.graph.input_shape)
    with torch.no_grad():
        expected = fast(x)
    program = exported_program(fast)
    assert worst_relative(program.module()(x), expected) <= 1e-6
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(to_onnx(fast), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert worst_relative(torch.from_numpy(got), expected) <= 1e-5


def test_torch_compile_takes_it():
    spec = make_spec("c: {conv: {out: 4, k: 3, pad: 1, norm: true, act: relu}}\npool: {global_avgpool: null}\n")
    fast = archcompiler.build(spec, optimize="inference")
    x = torch.randn(2, *fast.graph.input_shape)
    compiled = torch.compile(fast, backend="eager")  # dynamo's capture, without a C++ compiler
    with torch.no_grad():
        assert torch.allclose(compiled(x), fast(x))


needs_prepacking = pytest.mark.skipif(not prepacking_available(), reason="this torch has no oneDNN prepacking")


@needs_prepacking
def test_convs_are_prepacked_on_cpu_channels_last(resnet18):
    fast = inference_model(resnet18, channels_last=True)
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, PrepackedConv2d) for m in convs)
    assert not any(isinstance(m, PrepackedConv2d) for m in inference_model(resnet18, channels_last=False).modules())
    assert fast.state_dict().keys() == inference_model(resnet18, channels_last=False).state_dict().keys()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        packed = fast(x)
    assert all(m._packed is not None for m in convs)  # the eager call took the prepacked path
    plain = fast(x.requires_grad_())  # autograd on: nn.Conv2d's own forward
    assert all(m._packed_for[0] is m.weight and m._packed_for[1] == m.weight._version for m in convs)
    assert worst_relative(packed, plain) <= 1e-6


@needs_prepacking
def test_prepacked_weights_follow_the_weights(resnet18):
    fast = inference_model(resnet18, channels_last=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = fast(x)
        changed = {k: v * 1.5 if v.is_floating_point() else v for k, v in fast.state_dict().items()}
        fast.load_state_dict(changed)  # copies into the weights in place: their _version moves
        after = fast(x)
        copied = copy.deepcopy(fast)  # oneDNN's packed tensors have no storage: the copy packs its own
        assert all(m._packed is None for m in copied.modules() if isinstance(m, PrepackedConv2d))
        again = copied(x)
    assert worst_relative(after, before) > 1e-3
    assert worst_relative(again, after) <= 1e-6
    with torch.enable_grad():
        reference = fast(x.clone().requires_grad_())
    assert worst_relative(after, reference) <= 1e-6
    with torch.no_grad():  # another batch size: packed again, for that shape
        one = fast(x[:1])
    first = next(m for m in fast.modules() if isinstance(m, PrepackedConv2d))
    assert first._packed_for[2][0] == 1
    assert worst_relative(one, after[:1]) <= 1e-6
    with torch.no_grad():  # a new weight tensor, at the same _version as the old one: packed again
        fast(x)  # packed for x's shape again, so that only the weight differs below
        new = first.weight.detach() * 0.5  # a new tensor, at _version 0
        while new._version < first.weight._version:
            new.add_(0.0)  # its value unchanged, its _version brought level with the old weight's
        assert new._version == first.weight._version > 0
        first.weight = torch.nn.Parameter(new, requires_grad=False)
        replaced = fast(x)
        first._packed_for = None  # the reference: packed from scratch
        assert worst_relative(replaced, fast(x)) == 0
    assert worst_relative(replaced, after) > 1e-3


@needs_prepacking
def test_traces_see_plain_convs(resnet18):
    fast = inference_model(resnet18, channels_last=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(fast, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "aten::_convolution" in graph and "mkldnn" not in graph


def test_cli_build_optimize(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(spec_text(FOLDS))
    r = run_archc("build", str(spec), "--optimize", "--emit", "onnx", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "an inference build (3 BatchNorms folded, eval only" in r.stdout
    forward = (tmp_path / "out" / "forward.py").read_text()
    assert "b1 = c1" in forward  # the folded BatchNorm runs as its input
    plain = run_archc("build", str(spec), "-o", str(tmp_path / "plain"))
    assert plain.returncode == 0 and "inference build" not in plain.stdout
    assert "b1 = self.b1(c1)" in (tmp_path / "plain" / "forward.py").read_text()


def test_cli_refuses_emit_python_with_optimize(tmp_path):
    r = run_archc("build", "lenet5", "--optimize", "--emit", "python", "-o", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("archc: error: --emit python writes the spec's eager network")
    assert "Traceback" not in r.stderr


def test_cli_help_says_how_to_keep_the_checkpoint():
    r = run_archc("build", "--help")
    assert "--optimize" in r.stdout and "not a checkpoint" in " ".join(r.stdout.split())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(unary=[*UNARY, "batchnorm", "batchnorm", "{conv: {out: 4, k: 1, bias: false}}"]),
       st.booleans())
def test_inference_build_matches_eager_on_random_wirings(text, channels_last):
    """Which BatchNorm folds where (after a conv read elsewhere too, after an activation, an add or the input,
    a conv's own, inside a residual) on random wirings: within 1e-5 of the eager model, randomised BatchNorm."""
    eager = archcompiler.build(parse_spec(text, "random.yaml"))
    norms = randomise_batchnorm(eager)
    eager.eval()
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = eager(x)
        fast = inference_model(eager, channels_last=channels_last)
        got = fast(x)
    assert batchnorms(fast) == norms - len(fast.folded), text
    assert worst_relative(got, expected) <= TOLERANCE, text
