"""Pooling: max and average over a window, adaptive to a fixed size, global over the map."""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Optional

from pydantic import StrictBool

from .registry import (
    READS_INPUTS,
    Arg,
    Args,
    Construct,
    Costs,
    Kw,
    Lowering,
    NoArgs,
    OpDef,
    Pair,
    PaperRole,
    RunsAs,
    Saved,
    Saves,
    Shape,
    ShapeError,
    Window,
    fmt_shape,
    need_map,
    pair,
    positive,
    register,
    simple,
    whole_map_window,
    window_out,
    window_patch,
)


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


def _pool_geometry(a: PoolArgs) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    k = pair(a.k)
    return k, pair(a.s) if a.s is not None else k, pair(a.pad)


def _pool_infer(kind: str) -> Callable[[PoolArgs, list[Shape]], Shape]:
    def infer(a: PoolArgs, shapes: list[Shape]) -> Shape:
        c, h, w = need_map(shapes, kind)
        (kh, kw), (sh, sw), (ph, pw) = _pool_geometry(a)
        if min(kh, kw, sh, sw) <= 0 or min(ph, pw) < 0:
            raise ShapeError(f"{kind} kernel and stride must be positive and padding not negative")
        if 2 * ph > kh or 2 * pw > kw:
            raise ShapeError(f"{kind} padding {ph}x{pw} must be at most half the kernel {kh}x{kw}")
        out = (c, window_out(h, kh, sh, ph, ph, 1, a.ceil), window_out(w, kw, sw, pw, pw, 1, a.ceil))
        return positive(out, f"{kind} {kh}x{kw}/{sh}", (c, h, w))

    return infer


def _pool_lowering(cls: str) -> Callable[[Any, list[Shape]], Lowering]:
    def lowering(a: Any, shapes: list[Shape]) -> Lowering:
        k, s, p = _pool_geometry(a)
        stride = Arg(s, ("s",), shown=a.s) if a.s is not None else Arg(s, ("k",), shown=a.k)
        options = [Kw("padding", Arg(p, ("pad",), shown=a.pad), 0), Kw("ceil_mode", Arg(a.ceil, ("ceil",)), False)]
        if isinstance(a, AvgPoolArgs):
            options.append(Kw("count_include_pad", Arg(a.count_include_pad, ("count_include_pad",)), True))
        return Lowering(Construct(cls, (Arg(k, ("k",), shown=a.k), stride), tuple(options)))

    return lowering


def _pool_costs(fvcore_counts: bool) -> Callable[[Any, list[Shape], Shape, RunsAs], Costs]:
    """One per input element.  fvcore counts only aten::adaptive_avg_pool2d (so); ptflops counts twice: its
    hook on the pool module, and its patch of the torch.nn.functional pool that module's forward calls."""

    def costs(a: Any, shapes: list[Shape], out: Shape, runs: RunsAs) -> Costs:
        n = math.prod(shapes[0])
        return Costs({"pool": n}, {"ptflops": 2 * n} if fvcore_counts else {"ptflops": 2 * n, "fvcore": 0})

    return costs


def _pool_label(kind: str) -> Callable[[PoolArgs], str]:
    def label(a: PoolArgs) -> str:
        (kh, kw), (sh, sw), _ = _pool_geometry(a)
        return f"{kind} {kh}x{kw}/{sh}" if (kh, sh) == (kw, sw) else f"{kind} {kh}x{kw}/{sh}x{sw}"

    return label


def _pool_window(a: PoolArgs, shapes: list[Shape]) -> Window:
    k, s, _ = _pool_geometry(a)
    return k, s, (1, 1)


def _adaptive_window(a: AdaptivePoolArgs, shapes: list[Shape]) -> Window:
    # PyTorch's adaptive window i spans [floor(i*n/o), ceil((i+1)*n/o)); sizes vary, so take the largest
    # (the receptive field is an upper bound there) and the smallest step between windows.
    (_, h, w), (oh, ow) = shapes[0], pair(a.size)

    def widest(n: int, o: int) -> int:
        return max(-(-(i + 1) * n // o) - (i * n // o) for i in range(o))

    return (widest(h, oh), widest(w, ow)), (max(h // oh, 1), max(w // ow, 1)), (1, 1)


def _whole_map_patch(a: Any, shapes: list[Shape]) -> str:
    _, h, w = shapes[0]
    return f"{h}x{w}/1"


def _keeps_input(a: Any, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    return Saves((Saved(0, what="input"),))


def _keeps_input_and_indices(a: Any, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # max pooling's backward routes each gradient to the input element it took, by int64 index
    return Saves((Saved(0, what="input"), Saved(None, out, itemsize=8, what="max indices")))


def _adaptive_avg_saves(a: AdaptivePoolArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # to 1x1, torch takes a mean over the map, whose backward keeps nothing
    return Saves() if pair(a.size) == (1, 1) else _keeps_input(a, shapes, out, runs)


register(OpDef("maxpool", PoolArgs, "pool", _pool_infer("maxpool"), _pool_label("max pool"),
               _pool_lowering("nn.MaxPool2d"), window=_pool_window, autograd=READS_INPUTS, saves=_keeps_input_and_indices,
               paper=PaperRole("max pool", patch=window_patch, pool="max"),
               costs=_pool_costs(fvcore_counts=False),
               doc="Max pooling; `s` defaults to `k`; `ceil` rounds the output size up."))
register(OpDef("avgpool", AvgPoolArgs, "pool", _pool_infer("avgpool"), _pool_label("avg pool"),
               _pool_lowering("nn.AvgPool2d"), window=_pool_window, autograd=READS_INPUTS, saves=_keeps_input,
               paper=PaperRole("avg pool", patch=window_patch, pool="avg"),
               costs=_pool_costs(fvcore_counts=False),
               doc="Average pooling; `count_include_pad` says whether padding counts in the mean."))


def _adaptive_infer(a: AdaptivePoolArgs, shapes: list[Shape]) -> Shape:
    c, _, _ = need_map(shapes, "adaptive pool")
    oh, ow = pair(a.size)
    return positive((c, oh, ow), "adaptive pool", shapes[0])


def _adaptive_lowering(cls: str) -> Callable[[AdaptivePoolArgs, list[Shape]], Lowering]:
    return lambda a, s: Lowering(Construct(cls, (Arg(pair(a.size), ("size",), shown=a.size),)))


def _global_infer(a: NoArgs, shapes: list[Shape]) -> Shape:
    c, _, _ = need_map(shapes, "global pool")
    return (c, 1, 1)


register(OpDef("adaptive_avgpool", AdaptivePoolArgs, "pool", _adaptive_infer,
               lambda a: f"adaptive avg pool {fmt_shape(pair(a.size))}", _adaptive_lowering("nn.AdaptiveAvgPool2d"),
               window=_adaptive_window, autograd=READS_INPUTS, saves=_adaptive_avg_saves,
               costs=_pool_costs(fvcore_counts=True),
               paper=PaperRole("avg pool"), doc="Average pooling to a fixed output size."))
register(OpDef("adaptive_maxpool", AdaptivePoolArgs, "pool", _adaptive_infer,
               lambda a: f"adaptive max pool {fmt_shape(pair(a.size))}", _adaptive_lowering("nn.AdaptiveMaxPool2d"),
               window=_adaptive_window, autograd=READS_INPUTS, saves=_keeps_input_and_indices,
               costs=_pool_costs(fvcore_counts=False),
               paper=PaperRole("max pool"), doc="Max pooling to a fixed output size."))
register(OpDef("global_avgpool", NoArgs, "pool", _global_infer, lambda a: "global avg pool",
               simple(Construct("nn.AdaptiveAvgPool2d", (1,))), window=whole_map_window, autograd=READS_INPUTS,
               saves=lambda a, s, o, r: Saves(),  # a mean over the map: its backward keeps nothing
               paper=PaperRole("avg pool", patch=_whole_map_patch),
               costs=_pool_costs(fvcore_counts=True),
               doc="Average over the whole map: (C, H, W) -> (C, 1, 1)."))
register(OpDef("global_maxpool", NoArgs, "pool", _global_infer, lambda a: "global max pool",
               simple(Construct("nn.AdaptiveMaxPool2d", (1,))), window=whole_map_window, autograd=READS_INPUTS,
               saves=_keeps_input_and_indices,
               paper=PaperRole("max pool", patch=_whole_map_patch),
               costs=_pool_costs(fvcore_counts=False),
               doc="Maximum over the whole map: (C, H, W) -> (C, 1, 1)."))
