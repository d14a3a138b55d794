"""One op description, two consumers: build it (the compiled model) or print it (the standalone source).

An op's `lowering` (see `ops.registry`) describes the module a node becomes
as data: a `Construct` (a class name, its arguments, nested children) and a
call template.  Here:

- `instantiate` builds the torch module of a description (for `lower`);
- `render` prints the same description as Python source (for `emit`); an
  argument that a block's spec wrote as an expression (`$c3r`) prints as
  that expression, everything else as a literal;
- a description whose `parameter` is set makes an `nn.Parameter` instead of a
  module, attached at the node's own path (`is_parameter` says which);
- `identifier`, `Names` and `statement` write the forward's lines for both,
  with one rule for variable names.

Only `instantiate` needs torch, and imports it when called.
"""

from __future__ import annotations

import importlib
import keyword
import re
from typing import Any, Callable, Iterable, Mapping, Optional

from .graph import attribute_ref
from .ops import OPS, REQUIRED, Arg, Const, Construct, InChannels, Kw, Lowered, Lowering, OpDef, Ref, Shape

# ---------------------------------------------------------------------------
# the forward's lines


def identifier(text: str) -> str:
    """A Python identifier for a dotted name: every non-word character becomes `_`, and a leading `_`
    guards a name that starts with a digit, is empty or is a keyword."""
    name = re.sub(r"\W", "_", text)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


class Names:
    """Unique variable names: `identifier(text)`, then `_2`, `_3` ... on a clash."""

    def __init__(self, reserved: Iterable[str] = ()):
        self.used = set(reserved)

    def add(self, text: str) -> str:
        base = identifier(text)
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


RESERVED = ("self", "torch", "F", "nn", "math")  # names the generated code uses itself


def statement(target: str, call: str, inputs: list[str], module: Optional[str], parameter: bool = False) -> str:
    """`target = CALL`, the call template filled with the input variables and `self.MODULE` (a `parameter`
    at that path: `self.PARENT.NAME`, or `._parameters['NAME']` for a name that is no identifier)."""
    ref = attribute_ref("self", module) if module is not None else ""
    if parameter and module is not None:
        parent, _, leaf = module.rpartition(".")
        ref = attribute_ref("self", parent) if parent else "self"
        ref += f".{leaf}" if leaf.isidentifier() and not keyword.iskeyword(leaf) else f"._parameters[{leaf!r}]"
    return f"{target} = " + call.format(*inputs, m=ref, args=", ".join(inputs))


def execution_order(graph: Any) -> list[str]:
    """The order the forward runs nodes in: the spec's (`Graph.order`), except that a train-only node
    (an auxiliary head's) runs as soon as its inputs exist, so an aux head runs where it branches off
    the trunk, as in torchvision's GoogLeNet and Inception-v3.  Seeded dropout then draws its masks in
    the reference's order.  Train-only nodes keep their relative order; the others keep theirs."""
    from .graph import INPUT

    order = graph.order()
    pending = [n for n in order if graph.nodes[n].train_only]
    if not pending:
        return order
    done, out = {INPUT}, []

    def flush() -> None:
        while pending and all(i in done for i in graph.nodes[pending[0]].inputs):
            done.add(pending[0])
            out.append(pending.pop(0))

    flush()
    for n in order:
        if not graph.nodes[n].train_only:
            out.append(n)
            done.add(n)
            flush()
    return out


def inplace_plan(graph: Any, order: list[str], overwrite: Callable[[str], Mapping[int, str]],
                 keep: set[str]) -> dict[str, int]:
    """For each node that may write its result into one of its inputs, which input (a key of `overwrite(node)`,
    the node's lowering's in-place forms).

    Execution runs `order` (every node, train-only ones included, so that a value an auxiliary head reads
    later is never overwritten in either mode).  Node N may overwrite input X when:

    1. X is not the network's input (the caller's tensor), not an output (`keep`), and N is X's last use,
       reading it once;
    2. X's producer makes a fresh tensor (`Autograd.fresh`: no view of, or alias for, anything alive)
       and its backward does not read its output (`Autograd.reads_output`: relu's does, BatchNorm's and
       a plain conv's do not);
    3. every other consumer of X (all ran earlier) neither reads its inputs in backward (a conv does, so
       a value a conv also took is never overwritten) nor returned a view of X.

    Where X's producer passes its input on (`Autograd.passes_input`: the identity, and dropout or stochastic
    depth in eval mode), writing into X may write into that input: N is X's only consumer, the producer's
    backward reads nothing it would change, and the input must itself pass 1 to 3 with the producer as its
    last use (a chain of such producers is followed to its start).  So torchvision's `result =
    stochastic_depth(block(x)); result += x` runs in place here too.

    N's own backward never needs X's old value: that is what an `overwrite` template promises (relu_ reads
    its result, add_ nothing).  So gradients are those of the out-of-place forward, bit for bit, with one
    exception, of memory layout: an add written into its second input keeps that input's layout, where
    `a + b` takes the first's.  Where the two differ (a LayerNorm2d's permuted output, or a value computed
    from one, added to a contiguous map), the kernels after it may round differently: values equal, gradients
    a few ulp apart (`tests/test_inplace.py`).  In the zoo only ConvNeXt adds maps of different layouts (2 of
    its 18 adds), each written into the first operand of its sum, so bit for bit there too.
    """
    from .graph import INPUT

    consumers: dict[str, list[str]] = {}
    for n in order:
        for i in graph.nodes[n].inputs:
            consumers.setdefault(i, []).append(n)

    def overwritable(x: str, n: str) -> bool:
        """Whether `n`, which reads `x` once, may write into `x`."""
        while True:
            if x == INPUT or x in keep or consumers[x][-1] != n:
                return False
            producer = graph.nodes[x]
            grad = OPS[producer.op].autograd
            if not grad.passes_input:
                break
            if len(consumers[x]) != 1 or grad.reads_inputs or grad.reads_output(producer.args):
                return False
            x, n = producer.inputs[0], x  # the value that writing into x may write into, and its reader
            if graph.nodes[n].inputs.count(x) != 1:
                return False
        if not grad.fresh or grad.reads_output(producer.args):
            return False
        others = [OPS[graph.nodes[q].op].autograd for q in consumers[x] if q != n]
        return not any(g.reads_inputs or not g.fresh for g in others)

    # `overwrite` is asked last, only for a node with an input it may write into: where the caller has no
    # lowering yet (`analysis.runs_as`), most nodes then never need one made.
    plan: dict[str, int] = {}
    for n in order:
        node = graph.nodes[n]
        for k, x in enumerate(node.inputs):
            if node.inputs.count(x) == 1 and overwritable(x, n) and k in overwrite(n):
                plan[n] = k
                break
    return plan


# ---------------------------------------------------------------------------
# building: the compiled model


def resolve(callee: str) -> Any:
    """The object a description's callee names: torch.nn's, archc's own support code, or importable."""
    if callee.startswith("nn."):
        import torch.nn

        return getattr(torch.nn, callee[3:])
    if "." not in callee:
        from . import modules, ops

        return getattr(modules, callee) if hasattr(modules, callee) else getattr(ops, callee)
    where, _, name = callee.rpartition(".")
    return getattr(importlib.import_module(where), name)


def constructed(callee: Any, *args: Any, **kwargs: Any) -> Any:
    """`callee(*args, **kwargs)`: how `instantiate` makes each `Construct` unless told otherwise."""
    return callee(*args, **kwargs)


def _value(item: Any, construct: Callable[..., Any] = constructed) -> Any:
    if isinstance(item, Construct):
        return construct(resolve(item.callee), *(_value(a, construct) for a in item.args),
                         **{k.name: _value(k.value, construct) for k in item.kwargs})
    if isinstance(item, (Arg, InChannels)):
        return item.value
    if isinstance(item, Ref):
        return resolve(item.name)
    if isinstance(item, (tuple, list)):  # a size written with description items: (InChannels(c), 1, 1)
        return type(item)(_value(v, construct) for v in item)
    return item


def _call_text(low: Lowering, const: Any, template: Optional[str] = None) -> str:
    call = low.call if template is None else template
    for name, c in low.consts.items():
        call = call.replace("{%s}" % name, const(c))
    return call


def instantiate(low: Lowering, construct: Callable[..., Any] = constructed) -> Lowered:
    """The torch module of a description (arguments left to right, children first) and its call.

    `construct(callee, *args, **kwargs)` makes each `Construct` (`lower` passes its own for a device)."""

    def const(c: Const) -> str:
        return "" if c.unless is not REQUIRED and c.value == c.unless else c.fmt.format(repr(c.value))

    inplace = _call_text(low, const, low.inplace_call) if low.inplace_call is not None else None
    overwrite = {k: _call_text(low, const, t) for k, t in low.overwrite.items()}
    if low.parameter is not None:
        import torch.nn

        return Lowered(torch.nn.Parameter(_value(low.parameter, construct)), _call_text(low, const), parameter=True,
                       inplace_call=inplace, overwrite=overwrite)
    return Lowered(_value(low.module, construct) if low.module is not None else None, _call_text(low, const),
                   inplace_call=inplace, overwrite=overwrite)


def lowered(op: OpDef, args: Any, shapes: list[Shape]) -> Lowered:
    """What `lower` attaches for one node: its op's description, instantiated."""
    return instantiate(op.lowering(args, shapes))


# ---------------------------------------------------------------------------
# printing: the standalone source


def render(item: Any, src: Any) -> str:
    """The source text of a description's value; `src` (the emitter's, per node) knows the expressions."""
    if isinstance(item, Construct):
        if "." not in item.callee:
            src.need(item.callee)  # archc's own code, copied into the file
        positional = [render(a, src) for a in item.args]
        keywords = [f"{k.name}={render(k.value, src)}" for k in item.kwargs if not _omitted(k, src)]
        return f"{item.callee}({', '.join(positional + keywords)})"
    if isinstance(item, Arg):
        if item.field is None:
            return repr(item.literal)
        return src.arg(item.field, item.spec_value if src.is_expr(item.field) else item.literal)
    if isinstance(item, InChannels):
        return src.cin
    if isinstance(item, Ref):
        return item.name
    if isinstance(item, (tuple, list)):
        parts = [render(v, src) for v in item]
        if isinstance(item, list):
            return f"[{', '.join(parts)}]"
        return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"
    return repr(item)


def _omitted(k: Kw, src: Any) -> bool:
    if k.default is REQUIRED:
        return False
    if isinstance(k.value, Arg):
        return not (k.value.field is not None and src.is_expr(k.value.field)) and k.value.literal == k.default
    return not isinstance(k.value, (Construct, InChannels, Ref)) and k.value == k.default


def render_lowering(low: Lowering, src: Any) -> tuple[Optional[str], str]:
    """(constructor source or None, call template) of a description; a parameter's constructor is
    `nn.Parameter(...)` (see `is_parameter`)."""
    if low.parameter is not None:
        ctor: Optional[str] = f"nn.Parameter({render(low.parameter, src)})"
    else:
        ctor = render(low.module, src) if low.module is not None else None

    def const(c: Const) -> str:
        if c.unless is not REQUIRED and c.value == c.unless and not src.is_expr(c.field):
            return ""
        return c.fmt.format(src.attr(c.field, c.value))

    # the op's own trailing activation in place where it can be (always safe: see `Lowering.inplace_call`)
    return ctor, _call_text(low, const, low.inplace_call)


def emitted(op: OpDef, args: Any, shapes: list[Shape], src: Any) -> tuple[Optional[str], str]:
    """What `emit` writes for one node: its op's description, printed."""
    return render_lowering(op.lowering(args, shapes), src)


def is_parameter(op: OpDef, args: Any, shapes: list[Shape]) -> bool:
    """Whether a node becomes a parameter at its path rather than a module (`Lowering.parameter`)."""
    return op.lowering(args, shapes).parameter is not None


def is_module_call(op: OpDef, args: Any, shapes: list[Shape]) -> bool:
    """Whether a node is a module called on its one input, `{m}({0})` (a link of an nn.Sequential)."""
    low = op.lowering(args, shapes)
    return low.module is not None and low.call == "{m}({0})"


__all__ = ["identifier", "Names", "RESERVED", "statement", "resolve", "constructed", "instantiate", "lowered", "render",
           "render_lowering", "emitted", "is_parameter", "is_module_call", "execution_order", "inplace_plan", "OPS"]
