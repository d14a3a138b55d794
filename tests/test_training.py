"""archcompiler.training (the loss over main and auxiliary heads), the LeNet-5
digits example, and compiled models under channels_last and bfloat16 autocast.

One real GoogLeNet (num_classes=10, no dropout so that training-mode outputs
are deterministic) runs at its native 224x224 on a batch of 2: one fp32
forward shared by the loss and channels_last tests, one bfloat16 forward and
backward.  Everything else uses LeNet-5 or a tiny spec.
"""

from __future__ import annotations

import collections
import copy
import importlib.util
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import archcompiler
from archcompiler.training import (
    DEFAULT_AUX_WEIGHT,
    Losses,
    aux_loss,
    head_weights,
    heads,
    layer_groups,
    losses,
    main_output,
    penalty_logits,
)

from conftest import make_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "train_lenet5_digits.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY_AUX_BODY = """
stem: {conv: {out: 4, k: 3, pad: 1, act: relu}}
aux:
  seq:
    pool: global_avgpool
    flatten: flatten
    fc: {linear: {out: 5}}
stage: {conv: {out: 8, k: 3, s: 2, pad: 1, act: relu}, from: stem}
pool: global_avgpool
flatten: flatten
fc: {linear: {out: 5}}
"""
TINY_AUX_OUTPUTS = """
logits: fc
aux: {node: aux, train_only: true}
"""


def tiny_aux() -> nn.Module:
    return archcompiler.build(make_spec(TINY_AUX_BODY, name="tiny_aux", input=(3, 8, 8), outputs=TINY_AUX_OUTPUTS))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: batches of 2 gain little from two, and lose a lot when a core is busy elsewhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def googlenet(one_thread):
    """(model in training mode, input batch of 2, labels, fp32 outputs)."""
    model = archcompiler.build("specs/googlenet.yaml", num_classes=10, dropout=0.0, aux_dropout=0.0)
    model.train()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3, 7])
    with torch.no_grad():
        out = model(x)
    return model, x, y, out


# ---------------------------------------------------------------------------
# the loss helper

def test_plain_tensor_is_the_main_loss() -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 9, 3])
    assert torch.equal(aux_loss(logits, y), F.cross_entropy(logits, y))
    result = losses(logits, y)
    assert list(result.parts) == ["main"] and result.weights == {"main": 1.0}
    assert torch.equal(main_output(logits), logits)


def test_googlenet_total_is_main_plus_discounted_aux_heads(googlenet) -> None:
    _, _, y, out = googlenet
    assert type(out).__name__ == "GooglenetOutputs" and out._fields == ("logits", "aux2", "aux1")
    main, aux1, aux2 = (F.cross_entropy(t, y) for t in (out.logits, out.aux1, out.aux2))
    by_hand = main + 0.3 * (aux1 + aux2)
    torch.testing.assert_close(aux_loss(out, y), by_hand)
    result = losses(out, y)
    assert isinstance(result, Losses)
    assert list(result.parts) == ["logits", "aux2", "aux1"]
    assert result.weights == {"logits": 1.0, "aux2": DEFAULT_AUX_WEIGHT, "aux1": DEFAULT_AUX_WEIGHT}
    torch.testing.assert_close(result.parts["aux1"], aux1)
    floats = result.as_floats()
    assert list(floats) == ["total", "logits", "aux2", "aux1"]
    assert floats["total"] == pytest.approx(float(by_hand), rel=1e-6)
    assert torch.equal(main_output(out), out.logits)


def test_custom_weights(googlenet) -> None:
    _, _, y, out = googlenet
    main, aux1, aux2 = (F.cross_entropy(t, y) for t in (out.logits, out.aux1, out.aux2))
    torch.testing.assert_close(aux_loss(out, y, aux_weight=0.5), main + 0.5 * (aux1 + aux2))
    torch.testing.assert_close(aux_loss(out, y, aux_weight={"aux1": 1.0, "aux2": 0.0}), main + aux1)
    # heads left out keep their defaults; the main head can be weighted too
    torch.testing.assert_close(aux_loss(out, y, aux_weight={"aux1": 0.1}), main + 0.1 * aux1 + 0.3 * aux2)
    torch.testing.assert_close(aux_loss(out, y, aux_weight={"logits": 2.0}), 2 * main + 0.3 * (aux1 + aux2))
    torch.testing.assert_close(aux_loss(out, y, aux_weight=0.0), main)
    assert head_weights(out, {"aux2": 1}) == {"logits": 1.0, "aux2": 1.0, "aux1": 0.3}
    with pytest.raises(ValueError, match=r"'aux3', which is not a head .*heads: logits, aux2, aux1"):
        aux_loss(out, y, aux_weight={"aux3": 0.3})


def test_inception_v3_style_and_other_containers() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, aux = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    y = torch.tensor([1, 0, 3])
    expected = F.cross_entropy(logits, y) + 0.3 * F.cross_entropy(aux, y)
    outputs = collections.namedtuple("InceptionV3Outputs", ["logits", "aux_logits"])(logits, aux)
    torch.testing.assert_close(aux_loss(outputs, y), expected)
    torch.testing.assert_close(aux_loss({"logits": logits, "aux": aux}, y), expected)
    torch.testing.assert_close(aux_loss((logits, aux), y), expected)
    assert list(heads((logits, aux))) == ["0", "1"]
    torch.testing.assert_close(aux_loss((logits, aux), y, aux_weight={"1": 1.0}),
                               F.cross_entropy(logits, y) + F.cross_entropy(aux, y))


def test_wrong_targets_and_outputs_give_clear_errors(googlenet) -> None:
    _, _, y, out = googlenet
    with pytest.raises(ValueError, match=re.escape(
            "target of shape (2, 1) (torch.int64) does not fit head 'logits' of shape (2, 10): cross-entropy "
            "needs class indices of shape (2,) or class probabilities of shape (2, 10)")):
        aux_loss(out, y.view(2, 1))
    with pytest.raises(ValueError, match=r"target of shape \(3,\) does not match head 'logits' .* batch sizes"):
        aux_loss(out, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"class indices must be integers \(got torch.float32; use target.long\(\)\)"):
        aux_loss(out, y.float())
    with pytest.raises(ValueError, match=r"class probabilities must be floating point"):
        aux_loss(out, torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(TypeError, match="target must be a tensor"):
        aux_loss(out, [3, 7])
    with pytest.raises(TypeError, match="model outputs must be a tensor, a named tuple"):
        aux_loss(3.0, y)
    with pytest.raises(TypeError, match="head 'aux' is a str"):
        aux_loss({"logits": out.logits, "aux": "x"}, y)
    with pytest.raises(ValueError, match="no main head"):
        aux_loss((), y)


def test_probability_targets_and_custom_criteria(googlenet) -> None:
    _, _, y, out = googlenet
    probs = F.one_hot(y, 10).float() * 0.9 + 0.01
    expected = sum(w * F.cross_entropy(t, probs) for w, t in zip((1.0, 0.3, 0.3), out))
    torch.testing.assert_close(aux_loss(out, probs), expected)
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)
    expected = sum(w * smooth(t, y) for w, t in zip((1.0, 0.3, 0.3), out))
    torch.testing.assert_close(aux_loss(out, y, criterion=smooth), expected)
    with pytest.raises(ValueError, match="does not fit head"):  # still checked: it is a cross-entropy
        aux_loss(out, y.view(2, 1), criterion=smooth)
    # any other criterion checks its own shapes; only the batch size is checked here
    target = torch.zeros(2, 10)
    expected = sum(w * F.mse_loss(t, target) for w, t in zip((1.0, 0.3, 0.3), out))
    torch.testing.assert_close(aux_loss(out, target, criterion=F.mse_loss), expected)


def test_aux_heads_get_gradients_and_zero_weight_gives_zero_not_none() -> None:
    model = tiny_aux().train()
    x, y = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 4])
    out = model(x)
    assert out._fields == ("logits", "aux")
    aux_loss(out, y).backward()
    assert model.aux.fc.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    aux_loss(model(x), y, aux_weight=0.0).backward()
    grad = model.aux.fc.weight.grad
    assert grad is not None and torch.count_nonzero(grad) == 0  # DDP sees the head as used
    model.eval()
    assert isinstance(model(x), torch.Tensor)  # eval: logits only, aux_loss is the plain loss
    torch.testing.assert_close(aux_loss(model(x), y), F.cross_entropy(model(x), y))


def test_penalty_logits_of_lenet5() -> None:
    model = archcompiler.build("specs/lenet5.yaml")
    x, y = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 5, 9])
    penalties = model(x)
    logits = penalty_logits(penalties)
    assert torch.equal(logits, -penalties)
    assert torch.equal(logits.argmax(1), penalties.argmin(1))
    torch.testing.assert_close(aux_loss(logits, y), F.cross_entropy(-penalties, y))
    pair = collections.namedtuple("Outputs", ["penalties", "aux"])(penalties, 2 * penalties)
    negated = penalty_logits(pair)
    assert type(negated) is type(pair) and torch.equal(negated.aux, -2 * penalties)
    assert torch.equal(penalty_logits({"p": penalties})["p"], -penalties)


# ---------------------------------------------------------------------------
# the example

def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_example_short_run_prints_accuracy_and_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "plot" / "digits.png"
    result = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "2", "--limit", "256", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^test accuracy: (\d+\.\d\d) % \((\d+)/450 test images\)$", result.stdout, re.M)
    assert match, result.stdout
    assert 30.0 < float(match.group(1)) <= 100.0  # 2 epochs on 256 images (50 % with seed 0): above chance
    assert f"plot: {out}" in result.stdout
    assert _png_size(out.read_bytes()) == (1000, 400)


def test_example_is_deterministic_given_a_seed() -> None:
    spec = importlib.util.spec_from_file_location("train_lenet5_digits", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # dataclasses look their module up there
    spec.loader.exec_module(example)
    runs = [example.train(epochs=1, seed=seed, limit=96, progress=False)[1] for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0].train_loss != runs[2].train_loss
    x_train, y_train, x_test, y_test = example.load_digits_split()
    assert x_train.shape == (1347, 1, 32, 32) and x_test.shape == (450, 1, 32, 32)
    assert float(x_train.min()) == pytest.approx(-0.1) and float(x_train.max()) == pytest.approx(1.175)
    per_class = torch.bincount(torch.cat([y_train, y_test]))
    assert ((torch.bincount(y_test) - per_class / 4).abs() <= 1).all()  # stratified: a quarter of each class


# ---------------------------------------------------------------------------
# channels_last and bfloat16 autocast on the CPU

def test_channels_last_lenet5_matches_contiguous() -> None:
    model = archcompiler.build("specs/lenet5.yaml").eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
        got = fast(x.to(memory_format=torch.channels_last))
    assert fast.C1.weight.is_contiguous(memory_format=torch.channels_last)
    # the same arithmetic in another order: fp32 rounding only (penalties are ~100)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_channels_last_googlenet_matches_contiguous(googlenet) -> None:
    model, x, _, expected = googlenet
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert fast.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = fast(x.to(memory_format=torch.channels_last))
    assert got._fields == expected._fields
    for a, b in zip(got, expected):  # different conv kernels, same maths: fp32 rounding only
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected).norm() / expected.norm())


def test_bfloat16_autocast_lenet5_forward_backward() -> None:
    model = archcompiler.build("specs/lenet5.yaml").train()
    x, y = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    expected = model(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalties = model(x)
        loss = aux_loss(penalty_logits(penalties), y)
    loss.backward()
    # bf16 keeps 8 significant bits (relative rounding 2^-9) and the convs and F6 run in it; the RBF
    # subtracts the fp32 prototypes, so the penalties come out fp32 and close to the fp32 ones.
    assert penalties.dtype == torch.float32
    assert _relative_error(penalties, expected) < 1e-2
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    assert model.output.prototypes.dtype == torch.float32


def test_bfloat16_autocast_googlenet_forward_backward(googlenet) -> None:
    model, x, y, expected = googlenet
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        result = losses(out, y)
    result.total.backward()
    assert [t.dtype for t in out] == [torch.bfloat16] * 3
    # Loose: ~60 layers each rounding to 8 significant bits, and training-mode BatchNorm on a batch of 2
    # divides by small batch variances, which amplifies the rounding.  Measured: 3-10 % relative error
    # per head; the losses agree to ~0.5 %.
    for name, got, want in zip(out._fields, out, expected):
        assert _relative_error(got, want) < 0.25, name
    torch.testing.assert_close(result.total.float(), aux_loss(expected, y), rtol=0.03, atol=0.0)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert model.aux1.fc2.weight.grad.abs().sum() > 0 and model.aux2.fc2.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------
# FSDP units

def test_layer_groups_are_the_modules_the_forward_calls() -> None:
    model = archcompiler.build("specs/googlenet.yaml", num_classes=10, device="meta")  # no weights needed
    groups = layer_groups(model)
    assert list(groups) == ["conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
                            "inception4c", "inception4d", "inception4e", "inception5a", "inception5b",
                            "aux1", "aux2", "fc"]
    assert [type(m).__name__ for m in groups["inception3a"]] == ["ConvNormAct"] * 6
    assert [type(m).__name__ for m in groups["aux1"]] == ["ConvNormAct", "Linear", "Linear"]
    names = {id(m): n for n, m in model.named_modules()}
    for group in groups.values():
        for module in group:
            assert type(module).__name__ != "Container"
            ref = "self." + ".".join(f"_modules['{p}']" if p.isdigit() else p for p in names[id(module)].split("."))
            assert ref + "(" in model.code, ref  # the generated forward calls it
    # every parameter in exactly one group
    grouped = [p for group in groups.values() for m in group for p in m.parameters()]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    assert list(layer_groups(model, depth=2))[3:7] == ["inception3a.branch1", "inception3a.branch2",
                                                      "inception3a.branch3", "inception3a.branch4"]
    lenet = archcompiler.build("specs/lenet5.yaml", device="meta")
    assert {k: [type(m).__name__ for m in v] for k, v in layer_groups(lenet).items()} == {
        "C1": ["Conv2d"], "S2": ["Subsample2d"], "C3": ["PartialConv2d"], "S4": ["Subsample2d"],
        "C5": ["Conv2d"], "F6": ["Linear"]}  # the RBF holds a buffer, no parameters
    with pytest.raises(TypeError, match="compiled by archcompiler.build"):
        layer_groups(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="depth must be at least 1"):
        layer_groups(lenet, depth=0)
