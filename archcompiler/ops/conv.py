"""conv: 2-D convolution, with optional BatchNorm, activation and a partial connection table."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, StrictBool, StrictInt, field_validator

from .registry import (
    READS_INPUTS,
    ActName,
    Arg,
    Args,
    Construct,
    Costs,
    Fold,
    InChannels,
    Kw,
    Lowering,
    OpDef,
    Pair,
    PaperRole,
    RunsAs,
    Saved,
    Saves,
    Shape,
    ShapeError,
    act_call,
    act_call_inplace,
    act_costs,
    act_module,
    act_saves,
    need_map,
    out_channels,
    pair,
    positive,
    register,
    window_out,
    window_patch,
)


class NormArgs(Args):
    """Batch normalisation after a conv (PyTorch's defaults unless overridden)."""

    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)
    affine: StrictBool = True


def _norm_shorthand(value: Any) -> Any:
    # `norm: true` means a default BatchNorm; `norm: false` / null means none.
    if value is True:
        return {}
    if value is False:
        return None
    return value


class ConvArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"out_channels": "out", "kernel_size": "k", "stride": "s",
                                             "padding": "pad"}
    out: StrictInt = Field(gt=0)
    k: Pair
    s: Pair = 1
    pad: Union[StrictInt, tuple[StrictInt, StrictInt], tuple[StrictInt, StrictInt, StrictInt, StrictInt], Literal["same"]] = 0
    dilation: Pair = 1
    groups: StrictInt = Field(1, gt=0)
    bias: StrictBool = True
    norm: Optional[NormArgs] = None
    act: ActName = None
    # Partial connection table: for each output map, the input maps it reads.
    connections: Optional[tuple[tuple[StrictInt, ...], ...]] = None

    _shorthand = field_validator("norm", mode="before")(_norm_shorthand)


def conv_padding(a: ConvArgs, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of a conv on an h x w input."""
    (kh, kw), (sh, sw), (dh, dw) = pair(a.k), pair(a.s), pair(a.dilation)
    if a.pad == "same":
        # TensorFlow's rule: output = ceil(input / stride), the odd pixel at the end.
        def split(size: int, k: int, s: int, d: int) -> tuple[int, int]:
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            return total // 2, total - total // 2

        return (*split(h, kh, sh, dh), *split(w, kw, sw, dw))
    if isinstance(a.pad, int):
        return (a.pad,) * 4
    if len(a.pad) == 2:
        return (a.pad[0], a.pad[0], a.pad[1], a.pad[1])
    return tuple(a.pad)  # type: ignore[return-value]


def _conv_infer(a: ConvArgs, shapes: list[Shape]) -> Shape:
    c, h, w = need_map(shapes, "conv")
    if c % a.groups or a.out % a.groups:
        raise ShapeError(f"conv groups={a.groups} must divide both input channels {c} and output channels {a.out}")
    if a.connections is not None:
        _check_connections(a, c)
    (kh, kw), (sh, sw), (dh, dw) = pair(a.k), pair(a.s), pair(a.dilation)
    if min(kh, kw, sh, sw, dh, dw) <= 0:
        raise ShapeError("conv kernel, stride and dilation must be positive")
    t, b, l, r = conv_padding(a, h, w)
    if min(t, b, l, r) < 0:
        raise ShapeError("conv padding must not be negative")
    out = (a.out, window_out(h, kh, sh, t, b, dh, False), window_out(w, kw, sw, l, r, dw, False))
    return positive(out, f"conv {kh}x{kw}/{sh}", (c, h, w))


def _check_connections(a: ConvArgs, c: int) -> None:
    if len(a.connections) != a.out:
        raise ShapeError(f"conv connections lists {len(a.connections)} output maps but out is {a.out}")
    if a.groups != 1 or a.norm is not None:
        raise ShapeError("a conv with a connections table takes neither groups nor norm")
    for o, inputs in enumerate(a.connections):
        if not inputs or len(set(inputs)) != len(inputs) or not all(0 <= i < c for i in inputs):
            raise ShapeError(f"conv connections[{o}] must list distinct input maps from 0 to {c - 1}, "
                             f"got {list(inputs)}")


def _connections_per_output(a: ConvArgs, c: int) -> int:
    """Input maps summed over all output maps (out * c / groups for an ordinary conv)."""
    if a.connections is not None:
        return sum(len(inputs) for inputs in a.connections)
    return a.out * (c // a.groups)


def _conv_params(a: ConvArgs, shapes: list[Shape]) -> tuple[int, int]:
    c = shapes[0][0]
    kh, kw = pair(a.k)
    weights = _connections_per_output(a, c) * kh * kw + (a.out if a.bias else 0)
    if a.norm is None:
        return weights, 0
    return weights + (2 * a.out if a.norm.affine else 0), 2 * a.out + 1


def _conv_macs(a: ConvArgs, shapes: list[Shape], out: Shape) -> int:
    kh, kw = pair(a.k)
    return out[1] * out[2] * _connections_per_output(a, shapes[0][0]) * kh * kw


def _conv_costs(a: ConvArgs, shapes: list[Shape], out: Shape, runs: Any) -> Costs:
    n = math.prod(out)
    macs = _conv_macs(a, shapes, out)
    bias = n if a.bias else 0
    norm = 0 if a.norm is None else 2 * n if a.norm.affine else n
    # the activation runs as a module inside ConvNormAct, else as the functional call after the conv
    act, act_ptflops = act_costs(a.act, n, as_module=a.norm is not None)
    kinds = {"bias": bias, "norm": norm, **act}
    tools = {
        # torchinfo: each leaf module's parameters x output positions (a "Conv" class), or x batch (its BatchNorm)
        "torchinfo": macs + bias + (2 * a.out if a.norm is not None and a.norm.affine else 0),
        # ptflops hooks nn.Conv2d only; a PartialConv2d is a module it does not know (0)
        "ptflops": (0 if a.connections is not None else macs + bias) + norm + act_ptflops,
    }
    if a.connections is not None:  # fvcore counts the dense kernel PartialConv2d runs, its zeros included
        kh, kw = pair(a.k)
        tools["fvcore"] = out[1] * out[2] * a.out * shapes[0][0] * kh * kw
    return Costs(kinds, tools)


def _conv_lowering(a: ConvArgs, shapes: list[Shape]) -> Lowering:
    c, h, w = shapes[0]
    t, b, l, r = conv_padding(a, h, w)
    symmetric = t == b and l == r
    # Conv2d pads symmetrically; asymmetric padding (TF "same" at stride 2) is an F.pad before it.
    padding = Arg((t, l) if symmetric else (0, 0) if a.connections is not None else 0,
                  ("pad",) if symmetric and a.pad != "same" else None,
                  shown=(t if t == l else (t, l)) if symmetric else 0, written=a.pad)
    geometry = (Arg(pair(a.k), ("k",), shown=a.k),)
    options = (Kw("stride", Arg(pair(a.s), ("s",), shown=a.s), 1), Kw("padding", padding, 0),
               Kw("dilation", Arg(pair(a.dilation), ("dilation",), shown=a.dilation), 1))
    bias = Kw("bias", Arg(a.bias, ("bias",)), True)
    inner = "{m}({0})" if symmetric else "{m}(F.pad({0}, %r))" % ((l, r, t, b),)
    if a.connections is not None:
        conv = Construct("PartialConv2d", (InChannels(c), Arg(a.connections, shown=[list(o) for o in a.connections]),
                                           *geometry), (*options, bias))
        return Lowering(conv, act_call(a.act, inner), inplace_call=act_call_inplace(a.act, inner))
    conv = Construct("nn.Conv2d", (InChannels(c), Arg(a.out, ("out",)), *geometry),
                     (*options, Kw("groups", Arg(a.groups, ("groups",)), 1), bias))
    if a.norm is None:
        return Lowering(conv, act_call(a.act, inner), inplace_call=act_call_inplace(a.act, inner))
    bn = Construct("nn.BatchNorm2d", (Arg(a.out, ("out",)),), (
        Kw("eps", Arg(a.norm.eps, ("norm", "eps")), 1e-5), Kw("momentum", Arg(a.norm.momentum, ("norm", "momentum")), 0.1),
        Kw("affine", Arg(a.norm.affine, ("norm", "affine")), True)))
    act = act_module(a.act, inplace=True) if a.act else None  # after BatchNorm, whose backward reads no output
    return Lowering(Construct("ConvNormAct", (conv, bn, act), (Kw("pad", None if symmetric else (l, r, t, b), None),)))


def _conv_label(a: ConvArgs) -> str:
    kh, kw = pair(a.k)
    sh, sw = pair(a.s)
    stride = f"/{sh}" if sh == sw else f"/{sh}x{sw}"
    extra = "".join(
        [
            f" g{a.groups}" if a.groups > 1 else "",
            f" ({sum(map(len, a.connections))} connections)" if a.connections else "",
            " +BN" if a.norm else "",
            f" +{a.act}" if a.act else "",
        ]
    )
    return f"conv {kh}x{kw}{stride if (sh, sw) != (1, 1) else ''}, {a.out}{extra}"


def _conv_without_norm(a: ConvArgs) -> Optional[ConvArgs]:
    # the folded conv: BatchNorm's shift becomes its bias; its activation stays after it
    return a.model_copy(update={"norm": None, "bias": True}) if a.norm is not None else None


def _conv_taking_norm(a: ConvArgs) -> Optional[ConvArgs]:
    # a BatchNorm right after a plain conv; not past an activation, nor into a connections table's kernels
    return a.model_copy(update={"bias": True}) if a.norm is None and a.act is None and a.connections is None else None


def _conv_saves(a: ConvArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # convolution keeps its input (for the weight's gradient) and its weight (a parameter, not listed)
    c, h, w = shapes[0]
    t, b, l, r = conv_padding(a, h, w)
    kept: tuple[Saved, ...] = ((Saved(0, what="input"),) if t == b and l == r
                               else (Saved(None, (c, h + t + b, w + l + r), what="padded input"),))  # F.pad's result
    if a.connections is not None:  # PartialConv2d scatters its weight into a dense kernel every step
        kh, kw = pair(a.k)
        slots = sum(map(len, a.connections))
        kept += (Saved(None, (slots,), per_sample=False, itemsize=8, what="kernel slot indices"),
                 Saved(None, (a.out * c * kh * kw,), per_sample=False, what="dense kernel"))
    if a.norm is None:
        return Saves(kept + act_saves(a.act, runs.inplace, Saved(None, out, what="conv output"), out))
    # ConvNormAct: BatchNorm keeps its input (the conv's output) and the batch's mean and inverse std
    kept += (Saved(None, out, what="conv output"), Saved(None, (a.out,), per_sample=False, what="batch mean"),
             Saved(None, (a.out,), per_sample=False, what="batch inverse std"))
    return Saves(kept + act_saves(a.act, runs.inplace, Saved(None, out, what="BatchNorm output"), out))


register(OpDef(
    "conv", ConvArgs, "convolution", _conv_infer, _conv_label, _conv_lowering, _conv_params, _conv_macs,
    costs=_conv_costs,
    window=lambda a, s: (pair(a.k), pair(a.s), pair(a.dilation)), channels=out_channels, autograd=READS_INPUTS,
    fold=Fold(own=_conv_without_norm, absorb=_conv_taking_norm, parts=("conv", "bn")),
    saves=_conv_saves,
    paper=PaperRole("convolution", weighted=True, family="conv", patch=window_patch,
                    filters=lambda a: (*pair(a.k), a.out)),
    doc="2-D convolution, optionally followed by BatchNorm (`norm`) and an activation (`act`); "
        "`connections` makes it partially connected (LeNet-5's C3).",
))
