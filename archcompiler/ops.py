"""The op registry: everything every stage needs to know about one op.

An `OpDef` bundles, for one op name: the pydantic model of its arguments, its
shape rule, its parameter and multiply-add counts, a one-line label for
diagrams and tables, its drawing category, and how it lowers to torch.  All
stages consult `OPS`; adding an op is one `register(...)` call here.

This module never imports torch at import time: `lower` functions import it
when they run, so `check`, `summary` and `draw` stay torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

Shape = tuple[int, ...]  # one sample's shape: (C, H, W) for maps, (F,) for vectors
Window = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # kernel, stride, dilation
POINTWISE: Window = ((1, 1), (1, 1), (1, 1))


class ShapeError(ValueError):
    """An op cannot take the shapes it is given; the shapes stage adds where."""


# ---------------------------------------------------------------------------
# argument models

Pair = Union[StrictInt, tuple[StrictInt, StrictInt]]


class Args(BaseModel):
    """Base of every op's arguments: unknown keys are errors, values are frozen and finite.

    A nan or inf argument (`factor: .nan`) would reach the generated code as a
    bare `nan`; no layer means it, so validation refuses it with a location.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # torch's names for this op's arguments, for the hint on an unknown key: {"kernel_size": "k"}.
    torch_names: ClassVar[dict[str, str]] = {}


ACTIVATIONS: dict[str, tuple[str, str]] = {
    # name: (torch.nn module class, functional template on "{}")
    "relu": ("ReLU", "torch.relu({})"),
    "relu6": ("ReLU6", "F.relu6({})"),
    "leaky_relu": ("LeakyReLU", "F.leaky_relu({})"),
    "elu": ("ELU", "F.elu({})"),
    "gelu": ("GELU", "F.gelu({})"),
    "silu": ("SiLU", "F.silu({})"),
    "sigmoid": ("Sigmoid", "torch.sigmoid({})"),
    "tanh": ("Tanh", "torch.tanh({})"),
    # LeCun's squashing function (LeNet-5); its module lives in archcompiler.modules
    "scaled_tanh": ("ScaledTanh", "1.7159 * torch.tanh({} * (2.0 / 3.0))"),
}
ActName = Optional[Literal[tuple(ACTIVATIONS)]]  # type: ignore[valid-type]


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


class PoolArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"kernel_size": "k", "stride": "s", "padding": "pad",
                                             "ceil_mode": "ceil"}
    k: Pair
    s: Optional[Pair] = None  # default: the kernel size, as in PyTorch
    pad: Pair = 0
    ceil: StrictBool = False


class AvgPoolArgs(PoolArgs):
    count_include_pad: StrictBool = True


class AdaptivePoolArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"output_size": "size"}
    size: Pair


class NoArgs(Args):
    pass


class LinearArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"out_features": "out"}
    out: StrictInt = Field(gt=0)
    bias: StrictBool = True
    act: ActName = None


class SubsampleArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"kernel_size": "k", "stride": "s"}
    k: Pair = 2
    s: Optional[Pair] = None  # default: the kernel size
    act: ActName = None


class RBFArgs(Args):
    out: StrictInt = Field(gt=0)
    code: Literal["paley", "random"] = "paley"
    seed: StrictInt = 0


class BatchNormArgs(NormArgs):
    pass


class LRNArgs(Args):
    size: StrictInt = Field(gt=0)
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


class DropoutArgs(Args):
    p: float = Field(0.5, ge=0, le=1)


class SoftmaxArgs(Args):
    dim: StrictInt = 1


class ScaleArgs(Args):
    factor: float


class JoinArgs(Args):
    """Arguments of the join nodes that containers create (concat, add, residual)."""

    scale: float = 1.0
    act: ActName = None


# ---------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Lowered:
    """How one node runs in the compiled forward.

    `module` (or None) is registered in the module tree at the node's path;
    `call` is a Python expression template: `{m}` is the module, `{0}`, `{1}` ...
    the inputs and `{args}` all inputs comma-separated.
    """

    module: Any
    call: str


@dataclass(frozen=True)
class OpDef:
    name: str
    args: type[Args]
    category: str  # drawing palette and table grouping: conv, pool, norm, act, linear, join, shape, regularize
    infer: Callable[[Any, list[Shape]], Shape]
    lower: Callable[[Any, list[Shape]], Lowered]
    label: Callable[[Any], str]
    params: Callable[[Any, list[Shape]], tuple[int, int]] = lambda a, s: (0, 0)  # (trainable, buffer elements)
    macs: Callable[[Any, list[Shape], Shape], int] = lambda a, s, o: 0
    arity: Optional[int] = 1  # number of inputs; None for any number >= 1
    # The spatial window each output reads, for receptive fields: ((kh, kw), (sh, sw), (dh, dw)).
    window: Callable[[Any, list[Shape]], Window] = lambda a, s: POINTWISE
    # Standalone PyTorch source: (constructor code or None, call template), see `emit`.
    source: Callable[[Any, list[Shape], Any], tuple[Optional[str], str]] = lambda a, s, src: (None, "{0}")
    doc: str = ""
    internal: bool = False  # made by containers, not written as an op in a spec


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    OPS[op.name] = op
    return op


def spec_ops() -> list[str]:
    """The op names a spec may use."""
    return sorted(name for name, op in OPS.items() if not op.internal)


# ---------------------------------------------------------------------------
# helpers


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _need_map(shapes: list[Shape], what: str) -> tuple[int, int, int]:
    (shape,) = shapes
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a (C, H, W) feature map, got shape {fmt_shape(shape)}")
    return shape  # type: ignore[return-value]


def _need_vector(shapes: list[Shape], what: str) -> int:
    (shape,) = shapes
    if len(shape) != 1:
        raise ShapeError(f"{what} needs a flat (features,) input, got shape {fmt_shape(shape)}; add a 'flatten' before it")
    return shape[0]


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _window_out(size: int, k: int, s: int, lo: int, hi: int, d: int, ceil: bool) -> int:
    """Output length of a sliding window, with PyTorch's rounding rules."""
    span = size + lo + hi - d * (k - 1) - 1
    if not ceil:
        return max(span // s + 1, 0)
    out = -(-span // s) + 1  # ceil(span / s) + 1, also for a window longer than the input
    # PyTorch drops a last window that would start inside the right padding.
    if out > 0 and (out - 1) * s >= size + lo:
        out -= 1
    return max(out, 0)


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


def _act_call(act: Optional[str], inner: str) -> str:
    return ACTIVATIONS[act][1].format(inner) if act else inner


def _positive(shape: Shape, what: str, inputs: Shape) -> Shape:
    if any(d <= 0 for d in shape):
        raise ShapeError(f"{what} turns input {fmt_shape(inputs)} into {fmt_shape(shape)}; every size must stay positive")
    return shape


def _kw(src: Any, name: str, value: Any, default: Any, path: Any = None) -> str:
    """`, name=code` for a constructor keyword, or nothing when it is a literal default."""
    code = src.arg(path or name, value)
    return "" if not src.is_expr(path or name) and value == default else f", {name}={code}"


# ---------------------------------------------------------------------------
# conv


def _conv_infer(a: ConvArgs, shapes: list[Shape]) -> Shape:
    c, h, w = _need_map(shapes, "conv")
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
    out = (a.out, _window_out(h, kh, sh, t, b, dh, False), _window_out(w, kw, sw, l, r, dw, False))
    return _positive(out, f"conv {kh}x{kw}/{sh}", (c, h, w))


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


def _conv_lower(a: ConvArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    from .modules import ConvNormAct, activation

    c, h, w = shapes[0]
    t, b, l, r = conv_padding(a, h, w)
    symmetric = t == b and l == r
    if a.connections is not None:
        from .modules import PartialConv2d

        conv = PartialConv2d(c, a.connections, pair(a.k), stride=pair(a.s), padding=(t, l) if symmetric else (0, 0),
                             dilation=pair(a.dilation), bias=a.bias)
        inner = "{m}({0})" if symmetric else "{m}(F.pad({0}, (%d, %d, %d, %d)))" % (l, r, t, b)
        return Lowered(conv, _act_call(a.act, inner))
    conv = nn.Conv2d(
        c, a.out, pair(a.k), stride=pair(a.s), padding=(t, l) if symmetric else 0,
        dilation=pair(a.dilation), groups=a.groups, bias=a.bias,
    )
    if a.norm is not None:
        bn = nn.BatchNorm2d(a.out, eps=a.norm.eps, momentum=a.norm.momentum, affine=a.norm.affine)
        module = ConvNormAct(conv, bn, activation(a.act) if a.act else None, (l, r, t, b) if not symmetric else None)
        return Lowered(module, "{m}({0})")
    inner = "{m}({0})" if symmetric else "{m}(F.pad({0}, (%d, %d, %d, %d)))" % (l, r, t, b)
    return Lowered(conv, _act_call(a.act, inner))


def _conv_source(a: ConvArgs, shapes: list[Shape], src: Any) -> tuple[Optional[str], str]:
    c, h, w = shapes[0]
    t, b, l, r = conv_padding(a, h, w)
    symmetric = t == b and l == r
    if symmetric and a.pad != "same" and src.is_expr("pad"):
        padding = src.arg("pad", a.pad)
    else:
        padding = repr(t) if (t == l or not symmetric) else repr((t, l))
        padding = padding if symmetric else "0"
    geometry = (f"{src.arg('k', a.k)}{_kw(src, 'stride', a.s, 1, 's')}"
                + ("" if padding == "0" else f", padding={padding}")
                + _kw(src, "dilation", a.dilation, 1))
    inner = "{m}({0})" if symmetric else "{m}(F.pad({0}, %r))" % ((l, r, t, b),)
    if a.connections is not None:
        src.need("PartialConv2d")
        conv = (f"PartialConv2d({src.cin}, {list(map(list, a.connections))}, {geometry}"
                f"{_kw(src, 'bias', a.bias, True)})")
        return conv, _act_call(a.act, inner)
    conv = f"nn.Conv2d({src.cin}, {src.arg('out', a.out)}, {geometry}{_kw(src, 'groups', a.groups, 1)}" \
           f"{_kw(src, 'bias', a.bias, True)})"
    if a.norm is None:
        return conv, _act_call(a.act, inner)
    src.need("ConvNormAct")
    bn = (f"nn.BatchNorm2d({src.arg('out', a.out)}{_kw(src, 'eps', a.norm.eps, 1e-5, ('norm', 'eps'))}"
          f"{_kw(src, 'momentum', a.norm.momentum, 0.1, ('norm', 'momentum'))}"
          f"{_kw(src, 'affine', a.norm.affine, True, ('norm', 'affine'))})")
    act = _act_source(src, a.act) if a.act else "None"
    pad = "" if symmetric else f", pad={(l, r, t, b)!r}"
    return f"ConvNormAct({conv}, {bn}, {act}{pad})", "{m}({0})"


def _act_source(src: Any, name: str) -> str:
    cls = ACTIVATIONS[name][0]
    if cls == "ScaledTanh":
        src.need("ScaledTanh")
        return "ScaledTanh()"
    return f"nn.{cls}()"


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


register(OpDef(
    "conv", ConvArgs, "conv", _conv_infer, _conv_lower, _conv_label, _conv_params, _conv_macs,
    window=lambda a, s: (pair(a.k), pair(a.s), pair(a.dilation)), source=_conv_source,
    doc="2-D convolution, optionally followed by BatchNorm (`norm`) and an activation (`act`); "
        "`connections` makes it partially connected (LeNet-5's C3).",
))

# ---------------------------------------------------------------------------
# pooling


def _pool_geometry(a: PoolArgs) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    k = pair(a.k)
    return k, pair(a.s) if a.s is not None else k, pair(a.pad)


def _pool_infer(kind: str) -> Callable[[PoolArgs, list[Shape]], Shape]:
    def infer(a: PoolArgs, shapes: list[Shape]) -> Shape:
        c, h, w = _need_map(shapes, kind)
        (kh, kw), (sh, sw), (ph, pw) = _pool_geometry(a)
        if min(kh, kw, sh, sw) <= 0 or min(ph, pw) < 0:
            raise ShapeError(f"{kind} kernel and stride must be positive and padding not negative")
        if 2 * ph > kh or 2 * pw > kw:
            raise ShapeError(f"{kind} padding {ph}x{pw} must be at most half the kernel {kh}x{kw}")
        out = (c, _window_out(h, kh, sh, ph, ph, 1, a.ceil), _window_out(w, kw, sw, pw, pw, 1, a.ceil))
        return _positive(out, f"{kind} {kh}x{kw}/{sh}", (c, h, w))

    return infer


def _maxpool_lower(a: PoolArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    k, s, p = _pool_geometry(a)
    return Lowered(nn.MaxPool2d(k, s, p, ceil_mode=a.ceil), "{m}({0})")


def _avgpool_lower(a: AvgPoolArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    k, s, p = _pool_geometry(a)
    return Lowered(nn.AvgPool2d(k, s, p, ceil_mode=a.ceil, count_include_pad=a.count_include_pad), "{m}({0})")


def _pool_source(cls: str) -> Callable[[Any, list[Shape], Any], tuple[Optional[str], str]]:
    def source(a: Any, shapes: list[Shape], src: Any) -> tuple[Optional[str], str]:
        stride = src.arg("s", a.s) if a.s is not None else src.arg("k", a.k)
        extra = _kw(src, "padding", a.pad, 0, "pad") + _kw(src, "ceil_mode", a.ceil, False, "ceil")
        if cls == "AvgPool2d":
            extra += _kw(src, "count_include_pad", a.count_include_pad, True)
        return f"nn.{cls}({src.arg('k', a.k)}, {stride}{extra})", "{m}({0})"

    return source


def _pool_label(kind: str) -> Callable[[PoolArgs], str]:
    def label(a: PoolArgs) -> str:
        (kh, kw), (sh, sw), _ = _pool_geometry(a)
        return f"{kind} {kh}x{kw}/{sh}" if (kh, sh) == (kw, sw) else f"{kind} {kh}x{kw}/{sh}x{sw}"

    return label


def _pool_window(a: PoolArgs, shapes: list[Shape]) -> Window:
    k, s, _ = _pool_geometry(a)
    return k, s, (1, 1)


def _whole_map_window(a: Any, shapes: list[Shape]) -> Window:
    # Every output reads the whole input map (global pooling; flatten, for the layer after it).
    if len(shapes[0]) != 3:
        return POINTWISE
    hw = (shapes[0][1], shapes[0][2])
    return hw, hw, (1, 1)


def _adaptive_window(a: AdaptivePoolArgs, shapes: list[Shape]) -> Window:
    # PyTorch's adaptive window i spans [floor(i*n/o), ceil((i+1)*n/o)); sizes vary, so take the largest
    # (the receptive field is an upper bound there) and the smallest step between windows.
    (_, h, w), (oh, ow) = shapes[0], pair(a.size)

    def widest(n: int, o: int) -> int:
        return max(-(-(i + 1) * n // o) - (i * n // o) for i in range(o))

    return (widest(h, oh), widest(w, ow)), (max(h // oh, 1), max(w // ow, 1)), (1, 1)


register(OpDef("maxpool", PoolArgs, "pool", _pool_infer("maxpool"), _maxpool_lower, _pool_label("max pool"),
               window=_pool_window, source=_pool_source("MaxPool2d"), doc="Max pooling; `s` defaults to `k`; `ceil` rounds the output size up."))
register(OpDef("avgpool", AvgPoolArgs, "pool", _pool_infer("avgpool"), _avgpool_lower, _pool_label("avg pool"),
               window=_pool_window, source=_pool_source("AvgPool2d"), doc="Average pooling; `count_include_pad` says whether padding counts in the mean."))


def _adaptive_infer(a: AdaptivePoolArgs, shapes: list[Shape]) -> Shape:
    c, _, _ = _need_map(shapes, "adaptive pool")
    oh, ow = pair(a.size)
    return _positive((c, oh, ow), "adaptive pool", shapes[0])


def _adaptive_lower(kind: str) -> Callable[[AdaptivePoolArgs, list[Shape]], Lowered]:
    def lower(a: AdaptivePoolArgs, shapes: list[Shape]) -> Lowered:
        import torch.nn as nn

        cls = nn.AdaptiveAvgPool2d if kind == "avg" else nn.AdaptiveMaxPool2d
        return Lowered(cls(pair(a.size)), "{m}({0})")

    return lower


def _global_infer(a: NoArgs, shapes: list[Shape]) -> Shape:
    c, _, _ = _need_map(shapes, "global pool")
    return (c, 1, 1)


def _global_lower(kind: str) -> Callable[[NoArgs, list[Shape]], Lowered]:
    def lower(a: NoArgs, shapes: list[Shape]) -> Lowered:
        import torch.nn as nn

        return Lowered(nn.AdaptiveAvgPool2d(1) if kind == "avg" else nn.AdaptiveMaxPool2d(1), "{m}({0})")

    return lower


register(OpDef("adaptive_avgpool", AdaptivePoolArgs, "pool", _adaptive_infer, _adaptive_lower("avg"),
               lambda a: f"adaptive avg pool {fmt_shape(pair(a.size))}", window=_adaptive_window,
               source=lambda a, s, src: (f"nn.AdaptiveAvgPool2d({src.arg('size', a.size)})", "{m}({0})"), doc="Average pooling to a fixed output size."))
register(OpDef("adaptive_maxpool", AdaptivePoolArgs, "pool", _adaptive_infer, _adaptive_lower("max"),
               lambda a: f"adaptive max pool {fmt_shape(pair(a.size))}", window=_adaptive_window,
               source=lambda a, s, src: (f"nn.AdaptiveMaxPool2d({src.arg('size', a.size)})", "{m}({0})"), doc="Max pooling to a fixed output size."))
register(OpDef("global_avgpool", NoArgs, "pool", _global_infer, _global_lower("avg"),
               lambda a: "global avg pool", window=_whole_map_window,
               source=lambda a, s, src: ("nn.AdaptiveAvgPool2d(1)", "{m}({0})"), doc="Average over the whole map: (C, H, W) -> (C, 1, 1)."))
register(OpDef("global_maxpool", NoArgs, "pool", _global_infer, _global_lower("max"),
               lambda a: "global max pool", window=_whole_map_window,
               source=lambda a, s, src: ("nn.AdaptiveMaxPool2d(1)", "{m}({0})"), doc="Maximum over the whole map: (C, H, W) -> (C, 1, 1)."))

# ---------------------------------------------------------------------------
# normalisation


def _bn_infer(a: BatchNormArgs, shapes: list[Shape]) -> Shape:
    (shape,) = shapes
    if len(shape) not in (1, 3):
        raise ShapeError(f"batchnorm needs a (C, H, W) map or a flat (features,) vector, got shape {fmt_shape(shape)}")
    return shape


def _bn_lower(a: BatchNormArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    cls = nn.BatchNorm2d if len(shapes[0]) == 3 else nn.BatchNorm1d
    return Lowered(cls(shapes[0][0], eps=a.eps, momentum=a.momentum, affine=a.affine), "{m}({0})")


register(OpDef(
    "batchnorm", BatchNormArgs, "norm", _bn_infer, _bn_lower, lambda a: "batch norm",
    params=lambda a, s: (2 * s[0][0] if a.affine else 0, 2 * s[0][0] + 1),
    source=lambda a, s, src: (
        f"nn.BatchNorm{2 if len(s[0]) == 3 else 1}d({src.cin}{_kw(src, 'eps', a.eps, 1e-5)}"
        f"{_kw(src, 'momentum', a.momentum, 0.1)}{_kw(src, 'affine', a.affine, True)})", "{m}({0})"),
    doc="BatchNorm over the channels of a (C, H, W) map, or over the features of a flat vector.",
))


def _lrn_lower(a: LRNArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    return Lowered(nn.LocalResponseNorm(a.size, alpha=a.alpha, beta=a.beta, k=a.k), "{m}({0})")


register(OpDef(
    "lrn", LRNArgs, "norm", lambda a, s: _need_map(s, "lrn"), _lrn_lower, lambda a: f"LRN {a.size}",
    source=lambda a, s, src: (
        f"nn.LocalResponseNorm({src.arg('size', a.size)}{_kw(src, 'alpha', a.alpha, 1e-4)}"
        f"{_kw(src, 'beta', a.beta, 0.75)}{_kw(src, 'k', a.k, 1.0)})", "{m}({0})"),
    doc="Local response normalisation across `size` neighbouring channels (AlexNet, GoogLeNet); "
        "`alpha` is divided by `size`, as in Caffe and PyTorch.",
))

# ---------------------------------------------------------------------------
# activations, each also an op of its own


def _act_op(name: str) -> OpDef:
    def lower(a: NoArgs, shapes: list[Shape]) -> Lowered:
        from .modules import activation

        return Lowered(activation(name), "{m}({0})")

    return OpDef(name, NoArgs, "act", lambda a, s: s[0], lower, lambda a: name, doc=f"The {name} activation.",
                 source=lambda a, s, src: (_act_source(src, name), "{m}({0})"))


for _name in ACTIVATIONS:
    register(_act_op(_name))

# ---------------------------------------------------------------------------
# dense layers and reshaping


def _linear_lower(a: LinearArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    return Lowered(nn.Linear(shapes[0][0], a.out, bias=a.bias), _act_call(a.act, "{m}({0})"))


def _linear_infer(a: LinearArgs, shapes: list[Shape]) -> Shape:
    _need_vector(shapes, "linear")
    return (a.out,)


register(OpDef(
    "linear", LinearArgs, "linear", _linear_infer,
    _linear_lower, lambda a: f"linear {a.out}" + (f" +{a.act}" if a.act else ""),
    params=lambda a, s: (s[0][0] * a.out + (a.out if a.bias else 0), 0),
    macs=lambda a, s, o: s[0][0] * a.out,
    source=lambda a, s, src: (f"nn.Linear({src.cin}, {src.arg('out', a.out)}{_kw(src, 'bias', a.bias, True)})",
                              _act_call(a.act, "{m}({0})")),
    doc="Fully connected layer on a flat (features,) input, optionally followed by an activation (`act`).",
))


def _flatten_lower(a: NoArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    return Lowered(nn.Flatten(1), "{m}({0})")


register(OpDef("flatten", NoArgs, "shape", lambda a, s: (math.prod(s[0]),), _flatten_lower, lambda a: "flatten",
               window=_whole_map_window, source=lambda a, s, src: ("nn.Flatten(1)", "{m}({0})"),
               doc="Flatten everything but the batch dimension."))


def _dropout_lower(a: DropoutArgs, shapes: list[Shape]) -> Lowered:
    import torch.nn as nn

    return Lowered(nn.Dropout(a.p), "{m}({0})")


register(OpDef("dropout", DropoutArgs, "regularize", lambda a, s: s[0], _dropout_lower,
               lambda a: f"dropout {a.p:g}", source=lambda a, s, src: (f"nn.Dropout({src.arg('p', a.p)})", "{m}({0})"),
               doc="Dropout with probability `p` (training mode only)."))


def _identity_lower(a: NoArgs, shapes: list[Shape]) -> Lowered:
    return Lowered(None, "{0}")


register(OpDef("identity", NoArgs, "shape", lambda a, s: s[0], _identity_lower, lambda a: "identity",
               doc="Passes its input on unchanged (a shortcut, or a named tap for `from:`)."))


def _softmax_lower(a: SoftmaxArgs, shapes: list[Shape]) -> Lowered:
    return Lowered(None, "torch.softmax({0}, %d)" % a.dim)


def _softmax_infer(a: SoftmaxArgs, shapes: list[Shape]) -> Shape:
    if not 1 <= a.dim <= len(shapes[0]):
        raise ShapeError(f"softmax dim {a.dim} is not a dimension of {fmt_shape(shapes[0])} (dim 0 is the batch)")
    return shapes[0]


register(OpDef("softmax", SoftmaxArgs, "act", _softmax_infer, _softmax_lower, lambda a: "softmax",
               source=lambda a, s, src: (None, "torch.softmax({0}, %d)" % a.dim),
               doc="Softmax along `dim` (1, the channels or classes, by default)."))

register(OpDef("scale", ScaleArgs, "shape", lambda a, s: s[0], lambda a, s: Lowered(None, "{0} * %r" % a.factor),
               lambda a: f"x {a.factor:g}", source=lambda a, s, src: (None, "{0} * " + src.attr("factor", a.factor)),
               doc="Multiplies its input by a constant `factor`."))

# ---------------------------------------------------------------------------
# LeNet-5's own layers


def _subsample_geometry(a: SubsampleArgs) -> tuple[tuple[int, int], tuple[int, int]]:
    k = pair(a.k)
    return k, pair(a.s) if a.s is not None else k


def _subsample_infer(a: SubsampleArgs, shapes: list[Shape]) -> Shape:
    c, h, w = _need_map(shapes, "subsample")
    (kh, kw), (sh, sw) = _subsample_geometry(a)
    if min(kh, kw, sh, sw) <= 0:
        raise ShapeError("subsample kernel and stride must be positive")
    out = (c, _window_out(h, kh, sh, 0, 0, 1, False), _window_out(w, kw, sw, 0, 0, 1, False))
    return _positive(out, f"subsample {kh}x{kw}/{sh}", (c, h, w))


def _subsample_lower(a: SubsampleArgs, shapes: list[Shape]) -> Lowered:
    from .modules import Subsample2d

    k, s = _subsample_geometry(a)
    return Lowered(Subsample2d(shapes[0][0], k, s), _act_call(a.act, "{m}({0})"))


register(OpDef(
    "subsample", SubsampleArgs, "pool", _subsample_infer, _subsample_lower,
    lambda a: "subsample %s" % "x".join(map(str, pair(a.k))) + (f" +{a.act}" if a.act else ""),
    params=lambda a, s: (2 * s[0][0], 0),
    window=lambda a, s: (*_subsample_geometry(a), (1, 1)),
    source=lambda a, s, src: (src.need("Subsample2d") or
                              f"Subsample2d({src.cin}, {src.arg('k', a.k)}, "
                              f"{src.arg('s', a.s) if a.s is not None else src.arg('k', a.k)})",
                              _act_call(a.act, "{m}({0})")),
    doc="Trainable subsampling (LeNet-5's S layers): each window's sum times a per-map coefficient, "
        "plus a per-map bias, then `act`.",
))


def rbf_prototypes(out: int, features: int, code: str = "paley", seed: int = 0) -> list[list[int]]:
    """The fixed +-1 prototype of each RBF unit.

    `paley`: rows 1..out of the Hadamard matrix of order `features` built by
    Paley's construction (needs features - 1 a prime = 3 mod 4; 84 - 1 = 83
    is): every two prototypes differ in exactly half their entries, the error
    correcting code LeCun et al. mention as an alternative to their bitmaps.
    `random`: each entry +-1 with equal probability, from `seed`.
    """
    if code == "random":
        import random

        rng = random.Random(seed)
        return [[rng.choice((-1, 1)) for _ in range(features)] for _ in range(out)]
    q = features - 1
    if q < 3 or q % 4 != 3 or any(q % d == 0 for d in range(2, math.isqrt(q) + 1)):
        raise ShapeError(f"rbf code 'paley' needs an input size one more than a prime = 3 mod 4 "
                         f"(such as 84), got {features}; use code: random")
    if out > q:
        raise ShapeError(f"rbf code 'paley' gives at most {q} prototypes of size {features}, asked for {out}")
    squares = {(i * i) % q for i in range(1, q)}

    def chi(x: int) -> int:  # the Legendre symbol of x modulo q
        return 0 if x % q == 0 else (1 if x % q in squares else -1)

    # H = I + S with S = [[0, 1...], [-1..., Q]], Q[i][j] = chi(j - i): a skew Hadamard matrix.
    return [[-1] + [chi(j - i) + (1 if i == j else 0) for j in range(q)] for i in range(out)]


def _rbf_infer(a: RBFArgs, shapes: list[Shape]) -> Shape:
    rbf_prototypes(a.out, _need_vector(shapes, "rbf"), a.code, a.seed)
    return (a.out,)


def _rbf_lower(a: RBFArgs, shapes: list[Shape]) -> Lowered:
    import torch

    from .modules import RBF

    return Lowered(RBF(torch.tensor(rbf_prototypes(a.out, shapes[0][0], a.code, a.seed), dtype=torch.float32)), "{m}({0})")


register(OpDef(
    "rbf", RBFArgs, "linear", _rbf_infer, _rbf_lower, lambda a: f"RBF {a.out}",
    params=lambda a, s: (0, a.out * s[0][0]),
    macs=lambda a, s, o: a.out * s[0][0],
    source=lambda a, s, src: (src.need("RBF") or
                              f"RBF(torch.tensor(rbf_prototypes({src.arg('out', a.out)}, {src.cin}, {a.code!r}, "
                              f"{a.seed}), dtype=torch.float32))", "{m}({0})"),
    doc="Euclidean radial basis units (LeNet-5's output): unit j gives the squared distance between "
        "the input and its fixed +-1 prototype (a buffer, not trained); `code` chooses the prototypes.",
))

# ---------------------------------------------------------------------------
# joins, made by the concat / add / residual containers


def _concat_infer(a: JoinArgs, shapes: list[Shape]) -> Shape:
    first = shapes[0]
    for other in shapes[1:]:
        if len(other) != len(first) or other[1:] != first[1:]:
            raise ShapeError(
                "concat needs inputs of the same spatial size, got "
                + ", ".join(fmt_shape(s) for s in shapes)
            )
    return (sum(s[0] for s in shapes), *first[1:])


def _add_infer(a: JoinArgs, shapes: list[Shape]) -> Shape:
    if any(s != shapes[0] for s in shapes):
        raise ShapeError("add needs inputs of one shape, got " + ", ".join(fmt_shape(s) for s in shapes))
    return shapes[0]


def _concat_lower(a: JoinArgs, shapes: list[Shape]) -> Lowered:
    return Lowered(None, "torch.cat([{args}], 1)")


def _add_lower(a: JoinArgs, shapes: list[Shape]) -> Lowered:
    return Lowered(None, _act_call(a.act, " + ".join("{%d}" % i for i in range(len(shapes)))))


def _residual_lower(a: JoinArgs, shapes: list[Shape]) -> Lowered:
    # inputs: (shortcut, body); the body is scaled before the sum, as in Inception-ResNet.
    body = "{1}" if a.scale == 1.0 else "{1} * %r" % a.scale
    return Lowered(None, _act_call(a.act, f"{body} + {{0}}"))


def _join_label(kind: str) -> Callable[[JoinArgs], str]:
    def label(a: JoinArgs) -> str:
        text = kind + (f" x{a.scale:g}" if a.scale != 1.0 else "")
        return text + (f" +{a.act}" if a.act else "")

    return label


def _residual_source(a: JoinArgs, shapes: list[Shape], src: Any) -> tuple[Optional[str], str]:
    body = "{1}" if a.scale == 1.0 and not src.is_expr("scale") else "{1} * " + src.attr("scale", a.scale)
    return None, _act_call(a.act, f"{body} + {{0}}")


register(OpDef("concat", JoinArgs, "join", _concat_infer, _concat_lower, _join_label("concat"), arity=None, internal=True,
               source=lambda a, s, src: (None, "torch.cat([{args}], 1)")))
register(OpDef("add", JoinArgs, "join", _add_infer, _add_lower, _join_label("add"), arity=None, internal=True,
               source=lambda a, s, src: (None, _add_lower(a, s).call)))
register(OpDef("residual_add", JoinArgs, "join", _add_infer, _residual_lower, _join_label("residual add"),
               arity=2, internal=True, source=_residual_source))
