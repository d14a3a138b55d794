"""Normalisation: BatchNorm on its own, local response normalisation, LayerNorm (over the last axis, or over
the channels of a map as ConvNeXt's LayerNorm2d)."""

from __future__ import annotations

import math
from typing import Callable, ClassVar

from pydantic import Field, StrictBool, StrictInt

from .conv import NormArgs
from .registry import (
    Arg,
    Args,
    Autograd,
    Construct,
    Costs,
    Fold,
    InChannels,
    Kw,
    Lowering,
    OpDef,
    PaperRole,
    RunsAs,
    Saved,
    Saves,
    Shape,
    ShapeError,
    fmt_shape,
    need_map,
    register,
)


class BatchNormArgs(NormArgs):
    pass


class LayerNormArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"elementwise_affine": "affine"}
    eps: float = Field(1e-5, gt=0)  # PyTorch's default; ConvNeXt uses 1e-6
    affine: StrictBool = True  # a learnable weight and bias per normalised feature


class LRNArgs(Args):
    size: StrictInt = Field(gt=0)
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


def _bn_infer(a: BatchNormArgs, shapes: list[Shape]) -> Shape:
    (shape,) = shapes
    if len(shape) not in (1, 3):
        raise ShapeError(f"batchnorm needs a (C, H, W) map or a flat (features,) vector, got shape {fmt_shape(shape)}")
    return shape


def _bn_lowering(a: BatchNormArgs, shapes: list[Shape]) -> Lowering:
    cls = "nn.BatchNorm2d" if len(shapes[0]) == 3 else "nn.BatchNorm1d"
    return Lowering(Construct(cls, (InChannels(shapes[0][0]),), (
        Kw("eps", Arg(a.eps, ("eps",)), 1e-5), Kw("momentum", Arg(a.momentum, ("momentum",)), 0.1),
        Kw("affine", Arg(a.affine, ("affine",)), True))))


def _bn_saves(a: BatchNormArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # its input, and per channel the batch's mean and inverse std (the running statistics are buffers)
    c = shapes[0][0]
    return Saves((Saved(0, what="input"), Saved(None, (c,), per_sample=False, what="batch mean"),
                  Saved(None, (c,), per_sample=False, what="batch inverse std")))


def _layernorm_saves(a: LayerNormArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # its input, and the mean and inverse std of every normalised row (all axes but the last)
    rows = math.prod(shapes[0][:-1])
    return Saves((Saved(0, what="input"), Saved(None, (rows,), what="row mean"),
                  Saved(None, (rows,), what="row inverse std")))


def _layernorm2d_saves(a: LayerNormArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # LayerNorm of the permuted view (the input's memory): a mean and inverse std per position
    _, h, w = shapes[0]
    return Saves((Saved(0, what="input"), Saved(None, (h * w,), what="position mean"),
                  Saved(None, (h * w,), what="position inverse std")))


def _lrn_saves(a: LRNArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # F.local_response_norm: x*x padded over the channels and averaged (avg_pool3d keeps the padded
    # squares), then (k + alpha * mean) ** beta (pow keeps its base) and x / that (keeps both)
    c, h, w = shapes[0]
    return Saves((Saved(0, what="input"), Saved(None, (c + a.size - 1, h, w), what="padded squares"),
                  Saved(None, out, what="k + alpha * mean"), Saved(None, out, what="the divisor")))


def _bn_costs(a: BatchNormArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Costs:
    n = math.prod(out)
    # torchinfo: its weight and bias once per sample (2 x C), not per element
    return Costs({"norm": 2 * n if a.affine else n}, {"torchinfo": 2 * out[0] if a.affine else 0})


def _lrn_costs(a: LRNArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Costs:
    c, h, w = out
    n = c * h * w
    # x^2, the window's sum, x alpha / size, + k, ^ beta, and the division, per element.  fvcore counts none
    # of those aten ops; ptflops, what F.local_response_norm calls that it patches: input.mul(input),
    # avg_pool3d over the map padded to C + size - 1 channels, .mul(alpha) and .add(k).
    return Costs({"norm": (a.size + 5) * n}, {"fvcore": 0, "ptflops": 3 * n + (c + a.size - 1) * h * w})


def _layernorm_costs(module_counted: bool) -> Callable[[LayerNormArgs, list[Shape], Shape, RunsAs], Costs]:
    # ptflops: nn.LayerNorm has no `affine` attribute, so its BatchNorm hook counts it once per element;
    # LayerNorm2d is a subclass, which its exact-type lookup does not hook (0).  torchinfo: 2 x C per sample.
    def costs(a: LayerNormArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Costs:
        n = math.prod(out)
        channels = out[-1] if module_counted else out[0]
        return Costs({"norm": 5 * n if a.affine else 4 * n},
                     {"torchinfo": 2 * channels if a.affine else 0, "ptflops": n if module_counted else 0})

    return costs


register(OpDef(
    "batchnorm", BatchNormArgs, "norm", _bn_infer, lambda a: "batch norm", _bn_lowering,
    params=lambda a, s: (2 * s[0][0] if a.affine else 0, 2 * s[0][0] + 1), paper=PaperRole("batch norm"),
    autograd=Autograd(reads_inputs=True, reads_output=lambda a: False, fresh=True),  # reads its input, not output
    fold=Fold(norm=True), saves=_bn_saves,
    costs=_bn_costs,
    doc="BatchNorm over the channels of a (C, H, W) map, or over the features of a flat vector.",
))


def _lrn_lowering(a: LRNArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(Construct("nn.LocalResponseNorm", (Arg(a.size, ("size",)),), (
        Kw("alpha", Arg(a.alpha, ("alpha",)), 1e-4), Kw("beta", Arg(a.beta, ("beta",)), 0.75),
        Kw("k", Arg(a.k, ("k",)), 1.0))))


register(OpDef(
    "lrn", LRNArgs, "norm", lambda a, s: need_map(s, "lrn"), lambda a: f"LRN {a.size}", _lrn_lowering,
    paper=PaperRole("LRN"), saves=_lrn_saves,
    costs=_lrn_costs,
    doc="Local response normalisation across `size` neighbouring channels (AlexNet, GoogLeNet); "
        "`alpha` is divided by `size`, as in Caffe and PyTorch.",
))


def _layernorm_kwargs(a: LayerNormArgs) -> tuple[Kw, ...]:
    return (Kw("eps", Arg(a.eps, ("eps",)), 1e-5), Kw("elementwise_affine", Arg(a.affine, ("affine",)), True))


def _layernorm_lowering(a: LayerNormArgs, shapes: list[Shape]) -> Lowering:
    shape = shapes[0]
    features = InChannels(shape[0]) if len(shape) == 1 else shape[-1]  # only the channels flow symbolically
    return Lowering(Construct("nn.LayerNorm", (features,), _layernorm_kwargs(a)))


register(OpDef(
    "layernorm", LayerNormArgs, "norm", lambda a, s: s[0], lambda a: "layer norm", _layernorm_lowering,
    params=lambda a, s: (2 * s[0][-1] if a.affine else 0, 0), paper=PaperRole("layer norm"), saves=_layernorm_saves,
    costs=_layernorm_costs(module_counted=True),
    doc="LayerNorm over the last axis of its input (nn.LayerNorm(last size)): the features of a flat vector, "
        "the channels of a permuted (H, W, C) map.",
))


def _layernorm2d_lowering(a: LayerNormArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(Construct("LayerNorm2d", (InChannels(shapes[0][0]),), _layernorm_kwargs(a)))


register(OpDef(
    "layernorm2d", LayerNormArgs, "norm", lambda a, s: need_map(s, "layernorm2d"), lambda a: "layer norm 2d",
    _layernorm2d_lowering, params=lambda a, s: (2 * s[0][0] if a.affine else 0, 0), paper=PaperRole("layer norm"),
    saves=_layernorm2d_saves,
    costs=_layernorm_costs(module_counted=False),
    doc="LayerNorm over the channels of a (C, H, W) map at each position (torchvision's LayerNorm2d, ConvNeXt's "
        "downsampling norm); `weight` and `bias` of shape (C,).",
))
