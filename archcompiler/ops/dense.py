"""Dense layers and reshaping: linear, flatten, dropout, identity, softmax, scale."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, StrictBool, StrictInt

from .registry import (
    ActName,
    Arg,
    Args,
    Const,
    Construct,
    InChannels,
    Kw,
    Lowering,
    NoArgs,
    OpDef,
    PaperRole,
    Shape,
    ShapeError,
    act_call,
    fmt_shape,
    need_vector,
    out_channels,
    register,
    simple,
    whole_map_window,
)


class LinearArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"out_features": "out"}
    out: StrictInt = Field(gt=0)
    bias: StrictBool = True
    act: ActName = None


class DropoutArgs(Args):
    p: float = Field(0.5, ge=0, le=1)


class SoftmaxArgs(Args):
    dim: StrictInt = 1


class ScaleArgs(Args):
    factor: float


def _linear_infer(a: LinearArgs, shapes: list[Shape]) -> Shape:
    need_vector(shapes, "linear")
    return (a.out,)


def _linear_lowering(a: LinearArgs, shapes: list[Shape]) -> Lowering:
    linear = Construct("nn.Linear", (InChannels(shapes[0][0]), Arg(a.out, ("out",))),
                       (Kw("bias", Arg(a.bias, ("bias",)), True),))
    return Lowering(linear, act_call(a.act, "{m}({0})"))


register(OpDef(
    "linear", LinearArgs, "dense", _linear_infer, lambda a: f"linear {a.out}" + (f" +{a.act}" if a.act else ""),
    _linear_lowering,
    params=lambda a, s: (s[0][0] * a.out + (a.out if a.bias else 0), 0),
    macs=lambda a, s, o: s[0][0] * a.out, channels=out_channels,
    paper=PaperRole("linear", weighted=True, family="linear"),
    doc="Fully connected layer on a flat (features,) input, optionally followed by an activation (`act`).",
))


def _flatten_channels(a: NoArgs, ins: list[str], shapes: list[Shape], src: Any) -> str:
    area = math.prod(shapes[0][1:])
    c = ins[0]
    return c if area == 1 else (f"({c}) * {area}" if " " in c else f"{c} * {area}")


register(OpDef("flatten", NoArgs, "shape", lambda a, s: (math.prod(s[0]),), lowering=simple(Construct("nn.Flatten", (1,))),
               window=whole_map_window, channels=_flatten_channels, paper=PaperRole(skipped=True),
               doc="Flatten everything but the batch dimension."))

register(OpDef("dropout", DropoutArgs, "regularize", lambda a, s: s[0], lambda a: f"dropout {a.p:g}",
               lambda a, s: Lowering(Construct("nn.Dropout", (Arg(a.p, ("p",)),))),
               paper=PaperRole(lambda a: f"dropout ({a.p:.0%})"),
               doc="Dropout with probability `p` (training mode only)."))

register(OpDef("identity", NoArgs, "shape", lambda a, s: s[0], lowering=lambda a, s: Lowering(None, "{0}"),
               paper=PaperRole(skipped=True),
               doc="Passes its input on unchanged (a shortcut, or a named tap for `from:`)."))


def _softmax_infer(a: SoftmaxArgs, shapes: list[Shape]) -> Shape:
    if not 1 <= a.dim <= len(shapes[0]):
        raise ShapeError(f"softmax dim {a.dim} is not a dimension of {fmt_shape(shapes[0])} (dim 0 is the batch)")
    return shapes[0]


register(OpDef("softmax", SoftmaxArgs, "act", _softmax_infer,
               lowering=lambda a, s: Lowering(None, "torch.softmax({0}, %d)" % a.dim),
               doc="Softmax along `dim` (1, the channels or classes, by default)."))

register(OpDef("scale", ScaleArgs, "shape", lambda a, s: s[0], lambda a: f"x {a.factor:g}",
               lambda a, s: Lowering(None, "{0} * {factor}", {"factor": Const(a.factor, "factor")}),
               doc="Multiplies its input by a constant `factor`."))
