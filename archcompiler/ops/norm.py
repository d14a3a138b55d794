"""Normalisation: BatchNorm on its own, local response normalisation."""

from __future__ import annotations

from pydantic import Field, StrictInt

from .conv import NormArgs
from .registry import (
    Arg,
    Args,
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
