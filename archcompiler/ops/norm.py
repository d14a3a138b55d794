"""Normalisation: BatchNorm on its own, local response normalisation, LayerNorm (over the last axis, or over
the channels of a map as ConvNeXt's LayerNorm2d)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, StrictBool, StrictInt

from .conv import NormArgs
from .registry import (
    Arg,
    Args,
    Autograd,
    Construct,
    InChannels,
    Kw,
    Lowering,
    OpDef,
    PaperRole,
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


register(OpDef(
    "batchnorm", BatchNormArgs, "norm", _bn_infer, lambda a: "batch norm", _bn_lowering,
    params=lambda a, s: (2 * s[0][0] if a.affine else 0, 2 * s[0][0] + 1), paper=PaperRole("batch norm"),
    autograd=Autograd(reads_inputs=True, reads_output=lambda a: False, fresh=True),  # reads its input, not output
    doc="BatchNorm over the channels of a (C, H, W) map, or over the features of a flat vector.",
))


def _lrn_lowering(a: LRNArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(Construct("nn.LocalResponseNorm", (Arg(a.size, ("size",)),), (
        Kw("alpha", Arg(a.alpha, ("alpha",)), 1e-4), Kw("beta", Arg(a.beta, ("beta",)), 0.75),
        Kw("k", Arg(a.k, ("k",)), 1.0))))


register(OpDef(
    "lrn", LRNArgs, "norm", lambda a, s: need_map(s, "lrn"), lambda a: f"LRN {a.size}", _lrn_lowering,
    paper=PaperRole("LRN"),
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
    params=lambda a, s: (2 * s[0][-1] if a.affine else 0, 0), paper=PaperRole("layer norm"),
    doc="LayerNorm over the last axis of its input (nn.LayerNorm(last size)): the features of a flat vector, "
        "the channels of a permuted (H, W, C) map.",
))


def _layernorm2d_lowering(a: LayerNormArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(Construct("LayerNorm2d", (InChannels(shapes[0][0]),), _layernorm_kwargs(a)))


register(OpDef(
    "layernorm2d", LayerNormArgs, "norm", lambda a, s: need_map(s, "layernorm2d"), lambda a: "layer norm 2d",
    _layernorm2d_lowering, params=lambda a, s: (2 * s[0][0] if a.affine else 0, 0), paper=PaperRole("layer norm"),
    doc="LayerNorm over the channels of a (C, H, W) map at each position (torchvision's LayerNorm2d, ConvNeXt's "
        "downsampling norm); `weight` and `bias` of shape (C,).",
))
