"""archc-example-ops: two ops of modern CNNs, added to archc by a plugin.

- `hard_swish`: MobileNetV3's activation, x * relu6(x + 3) / 6 (no parameters);
- `sepconv`: a depthwise-separable convolution (MobileNet, Xception): a k x k
  conv per input channel, then a 1x1 conv to `out` channels.

Importing this module registers both ops.  archc imports it through the
`archc.ops` entry point in pyproject.toml, `--plugin archc_example_ops` or
`ARCHC_PLUGINS=archc_example_ops`.  It imports torch only when a model is
built, so `archc check`, `summary` and `draw` stay torch-free.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictInt

from archcompiler import register_op
from archcompiler.ops import (
    Arg,
    Args,
    Construct,
    InChannels,
    Kw,
    Lowering,
    NoArgs,
    OpDef,
    Pair,
    PaperRole,
    Shape,
    ShapeError,
    pair,
)

# hard_swish: an activation keeps its input's shape and has no weights; it becomes torch's nn.Hardswish.
register_op(OpDef(
    "hard_swish", NoArgs, "act",
    infer=lambda a, shapes: shapes[0],
    label=lambda a: "hard swish",
    lowering=lambda a, shapes: Lowering(Construct("nn.Hardswish")),
    doc="MobileNetV3's hard swish, x * relu6(x + 3) / 6.",
))


# sepconv: a weighted op with arguments.  Its arguments, as a spec writes them:
#   {sepconv: {out: 64, k: 3, s: 2, pad: 1, bias: false}}
class SepConvArgs(Args):
    out: StrictInt = Field(gt=0)
    k: Pair = 3
    s: Pair = 1
    pad: Pair = 0
    bias: StrictBool = True


def sepconv_infer(a: SepConvArgs, shapes: list[Shape]) -> Shape:
    """The output shape, from the one input's (C, H, W); a ShapeError says what does not fit."""
    (shape,) = shapes
    if len(shape) != 3:
        raise ShapeError(f"sepconv needs a (C, H, W) feature map, got shape {'x'.join(map(str, shape))}")
    _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = pair(a.k), pair(a.s), pair(a.pad)
    if min(kh, kw, sh, sw) <= 0 or min(ph, pw) < 0:
        raise ShapeError("sepconv kernel and stride must be positive and padding not negative")
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"sepconv {kh}x{kw} does not fit the {h}x{w} input")
    return (a.out, oh, ow)


def sepconv_params(a: SepConvArgs, shapes: list[Shape]) -> tuple[int, int]:
    """(trainable parameters, buffer elements): the depthwise conv's, then the pointwise conv's."""
    c = shapes[0][0]
    kh, kw = pair(a.k)
    depthwise = c * kh * kw + (c if a.bias else 0)
    pointwise = c * a.out + (a.out if a.bias else 0)
    return depthwise + pointwise, 0


def sepconv_macs(a: SepConvArgs, shapes: list[Shape], out: Shape) -> int:
    """Multiply-accumulates: per output pixel, k x k per input channel, then c per output channel."""
    c = shapes[0][0]
    kh, kw = pair(a.k)
    return out[1] * out[2] * (c * kh * kw + c * a.out)


def sepconv_lowering(a: SepConvArgs, shapes: list[Shape]) -> Lowering:
    """The module it becomes, once, for both the compiled model and the emitted source.

    `Arg(value, field)` keeps a block's `$c` symbolic in the emitted source; a `Kw` equal
    to its default is left out there.
    """
    module = Construct(f"{__name__}.SepConv2d", (InChannels(shapes[0][0]), Arg(a.out, ("out",)), Arg(a.k, ("k",))),
                       (Kw("stride", Arg(a.s, ("s",)), 1), Kw("padding", Arg(a.pad, ("pad",)), 0),
                        Kw("bias", Arg(a.bias, ("bias",)), True)))
    return Lowering(module)  # called as "{m}({0})": the module on the input


def sepconv_label(a: SepConvArgs) -> str:
    (kh, kw), (sh, _) = pair(a.k), pair(a.s)
    return f"sepconv {kh}x{kw}{f'/{sh}' if sh != 1 else ''}, {a.out}"


register_op(OpDef(
    "sepconv", SepConvArgs, "convolution",
    infer=sepconv_infer, label=sepconv_label, lowering=sepconv_lowering,
    params=sepconv_params, macs=sepconv_macs,
    window=lambda a, shapes: (pair(a.k), pair(a.s), (1, 1)),  # for receptive fields
    channels=lambda a, ins, shapes, src: src.arg("out", a.out),  # output channels, in emitted block classes
    paper=PaperRole("sepconv", weighted=True, family="conv",
                    patch=lambda a, shapes: "%dx%d/%d" % (*pair(a.k), pair(a.s)[0])),
    doc="Depthwise-separable convolution: a k x k conv per input channel, then a 1x1 conv to `out` channels.",
))


# The torch module, defined on first use: `archc_example_ops.SepConv2d` imports torch then.
def sepconv2d_class() -> type:
    if "SepConv2d" in globals():
        return globals()["SepConv2d"]
    import torch.nn as nn

    class SepConv2d(nn.Module):
        """A depthwise k x k conv (groups = in_channels), then a pointwise 1x1 conv."""

        def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                     padding: Any = 0, bias: bool = True):
            super().__init__()
            self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                       groups=in_channels, bias=bias)
            self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

        def forward(self, x: Any) -> Any:
            return self.pointwise(self.depthwise(x))

    SepConv2d.__qualname__ = "SepConv2d"  # picklable, as archc_example_ops.SepConv2d
    globals()["SepConv2d"] = SepConv2d
    return SepConv2d


def __getattr__(name: str) -> Any:
    if name == "SepConv2d":
        return sepconv2d_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
