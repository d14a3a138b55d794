"""Joins: concat and add over several inputs (`from: [a, b]`), and the joins the concat / add / residual containers make."""

from __future__ import annotations

from typing import Callable

from .registry import ActName, Args, Const, Lowering, OpDef, PaperRole, Shape, ShapeError, act_call, fmt_shape, register


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


def _add_lowering(a: JoinArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(None, act_call(a.act, " + ".join("{%d}" % i for i in range(len(shapes)))))


def _residual_lowering(a: JoinArgs, shapes: list[Shape]) -> Lowering:
    # inputs: (shortcut, body); the body is scaled before the sum, as in Inception-ResNet.
    return Lowering(None, act_call(a.act, "{1}{scale} + {0}"), {"scale": Const(a.scale, "scale", unless=1.0, fmt=" * {}")})


def _join_label(kind: str) -> Callable[[JoinArgs], str]:
    def label(a: JoinArgs) -> str:
        text = kind + (f" x{a.scale:g}" if a.scale != 1.0 else "")
        return text + (f" +{a.act}" if a.act else "")

    return label


register(OpDef("concat", JoinArgs, "join", _concat_infer, _join_label("concat"),
               lambda a, s: Lowering(None, "torch.cat([{args}], 1)"), arity=None,
               doc="its inputs joined along the channels, in order (`from: [a, b]`; also the `concat` container's join)",
               channels=lambda a, ins, s, src: " + ".join(ins), paper=PaperRole(branches=True), channel_ranges=True,
               container="concat", join_name="concat"))
register(OpDef("add", JoinArgs, "join", _add_infer, _join_label("add"), _add_lowering, arity=None,
               doc="the sum of its inputs, of one shape, then `act` (`from: [a, b]`; also the `add` container's join)",
               container="add", join_name="add"))
register(OpDef("residual_add", JoinArgs, "join", _add_infer, _join_label("residual add"), _residual_lowering,
               arity=2, internal=True, container="residual", join_name="add"))
