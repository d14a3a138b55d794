"""Joins: concat, add and mul over several inputs (`from: [a, b]`), and the joins the concat / add / mul / residual
containers make."""

from __future__ import annotations

import math
from typing import Callable

from .registry import (
    READS_INPUTS,
    READS_NOTHING,
    ActName,
    Args,
    Const,
    Costs,
    Lowering,
    OpDef,
    PaperRole,
    RunsAs,
    Saved,
    Saves,
    Shape,
    ShapeError,
    act_call,
    act_call_inplace,
    act_costs,
    act_saves,
    fmt_shape,
    register,
)


class JoinArgs(Args):
    """Arguments of the join nodes that containers create (concat, add, residual)."""

    scale: float = 1.0
    act: ActName = None


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


def _mul_infer(a: JoinArgs, shapes: list[Shape]) -> Shape:
    # Broadcasting per sample: each axis has one size among the inputs, or 1.  The ranks must agree, or the
    # batch dimension of one input would line up with a sample axis of another.
    got = ", ".join(fmt_shape(s) for s in shapes)
    if any(len(s) != len(shapes[0]) for s in shapes):
        raise ShapeError(f"mul needs inputs with the same number of axes, got {got}; reshape one of them")
    out = []
    for axis, sizes in enumerate(zip(*shapes)):
        if len(set(sizes) - {1}) > 1:
            raise ShapeError(f"mul cannot broadcast {got}: axis {axis} has sizes {', '.join(map(str, sizes))}; "
                             "each axis needs one size, or 1")
        out.append(max(sizes))
    return tuple(out)


def _mul_channels(a: JoinArgs, ins: list[str], shapes: list[Shape], src: object) -> str:
    widest = max(s[0] for s in shapes)
    return next(c for c, s in zip(ins, shapes) if s[0] == widest)


def _add_lowering(a: JoinArgs, shapes: list[Shape]) -> Lowering:
    n = len(shapes)
    total = " + ".join("{%d}" % i for i in range(n))
    # a + b + c written into a (a.add_(b).add_(c)) or into b (b + a is a + b, bit for bit)
    into = {k: "{%d}" % k + "".join(".add_({%d})" % i for i in [1 - k, *range(2, n)]) for k in range(min(n, 2))}
    return Lowering(None, act_call(a.act, total), inplace_call=act_call_inplace(a.act, f"({total})"),
                    overwrite={k: act_call_inplace(a.act, t) or act_call(a.act, t) for k, t in into.items()})


def _mul_lowering(a: JoinArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(None, act_call(a.act, " * ".join("{%d}" % i for i in range(len(shapes)))))


def _residual_lowering(a: JoinArgs, shapes: list[Shape]) -> Lowering:
    # inputs: (shortcut, body); the body is scaled before the sum, as in Inception-ResNet.
    # written into the body, as torchvision's `out += identity`: body.mul_(scale).add_(shortcut)
    into = "{1}{iscale}.add_({0})"
    return Lowering(None, act_call(a.act, "{1}{scale} + {0}"),
                    {"scale": Const(a.scale, "scale", unless=1.0, fmt=" * {}"),
                     "iscale": Const(a.scale, "scale", unless=1.0, fmt=".mul_({})")},
                    inplace_call=act_call_inplace(a.act, "({1}{scale} + {0})"),
                    overwrite={1: act_call_inplace(a.act, into) or act_call(a.act, into)})


def _join_costs(per_element: Callable[[JoinArgs, int], int]) -> Callable[[JoinArgs, list[Shape], Shape, object], Costs]:
    """`per_element(args, inputs)` operations per output element, then the activation.  The joins run as
    Python operators (`a + b`, `a * b`, `.add_`), which none of the tools counts; ptflops counts the activation."""

    def costs(a: JoinArgs, shapes: list[Shape], out: Shape, runs: object) -> Costs:
        n = math.prod(out)
        act, act_ptflops = act_costs(a.act, n, as_module=False)
        return Costs({"add": per_element(a, len(shapes)) * n, **act}, {"ptflops": act_ptflops})

    return costs


def _sum_saves(a: JoinArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # a sum keeps nothing; its `act` runs on the sum, a fresh one or the input written into (runs.into)
    if runs.into is None:
        return Saves(act_saves(a.act, runs.inplace, Saved(None, out, what="sum"), out))
    kept = act_saves(a.act, True, Saved(runs.into, what="sum, in an input"), out)
    return Saves(kept, view=runs.into if a.act is None or kept == (Saved("output"),) else None)


def _product_saves(a: JoinArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # x0 * x1 * ... left to right: each product keeps each factor for the other's gradient
    kept = [Saved(0, needs_grad=(1,)), Saved(1, needs_grad=(0,))]
    for i in range(2, len(shapes)):
        partial = tuple(max(sizes) for sizes in zip(*shapes[:i]))
        kept += [Saved(None, partial, needs_grad=(i,), what="partial product"), Saved(i, needs_grad=tuple(range(i)))]
    return Saves(tuple(kept) + act_saves(a.act, False, Saved(None, out, what="product"), out))


def _join_label(kind: str) -> Callable[[JoinArgs], str]:
    def label(a: JoinArgs) -> str:
        text = kind + (f" x{a.scale:g}" if a.scale != 1.0 else "")
        return text + (f" +{a.act}" if a.act else "")

    return label


register(OpDef("concat", JoinArgs, "join", _concat_infer, _join_label("concat"),
               lambda a, s: Lowering(None, "torch.cat([{args}], 1)"), arity=None,
               doc="its inputs joined along the channels, in order (`from: [a, b]`; also the `concat` container's join)",
               channels=lambda a, ins, s, src: " + ".join(ins), paper=PaperRole(branches=True), channel_ranges=True,
               container="concat", join_name="concat", autograd=READS_NOTHING, saves=lambda a, s, o, r: Saves()))
register(OpDef("add", JoinArgs, "join", _add_infer, _join_label("add"), _add_lowering, arity=None,
               doc="the sum of its inputs, of one shape, then `act` (`from: [a, b]`; also the `add` container's join)",
               container="add", join_name="add", autograd=READS_NOTHING, saves=_sum_saves,
               costs=_join_costs(lambda a, k: k - 1)))
register(OpDef("mul", JoinArgs, "join", _mul_infer, _join_label("mul"), _mul_lowering, arity=None,
               doc="the elementwise product of its inputs, broadcast per axis (C x H x W times C x 1 x 1: "
                   "squeeze-and-excitation gating), then `act` (`from: [a, b]`; also the `mul` container's join)",
               channels=_mul_channels, container="mul", join_name="mul", autograd=READS_INPUTS, saves=_product_saves,
               costs=_join_costs(lambda a, k: k - 1)))
register(OpDef("residual_add", JoinArgs, "join", _add_infer, _join_label("residual add"), _residual_lowering,
               arity=2, internal=True, container="residual", join_name="add", autograd=READS_NOTHING, saves=_sum_saves,
               costs=_join_costs(lambda a, k: 1 if a.scale == 1.0 else 2)))
