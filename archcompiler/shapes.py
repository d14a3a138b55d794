"""`Expanded` -> `Graph`: every node's output shape, statically.

In: an `Expanded` graph of `Layer`s.  Out: a `Graph` whose `Node`s carry `shape`, the shape
of one sample's output (batch excluded), computed by each op's shape rule
from the registry in dependency order.  Shape errors (mismatched concat,
a kernel larger than its input, ...) become `SpecError`s naming the node's
full dotted path and pointing at the YAML that made it.  No torch.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Sequence

from .errors import SpecError
from .graph import INPUT, Expanded, Graph, Node, _Graph
from .ops import OPS, RuleMemo, Shape, ShapeError, fmt_shape


def infer_shapes(graph: Expanded) -> Graph:
    """`graph` with every layer's shape: a `Graph` of `Node`s.

    Each node's inputs must number as its op's `arity` says (None: any
    number); its op's shape rule then gets their shapes in input order.
    """
    shapes: dict[str, Shape] = {INPUT: graph.input_shape}
    nodes: dict[str, Node] = {}
    found: RuleMemo[Shape] = RuleMemo()
    order = graph.topological
    for node_id in order:
        node = graph.nodes[node_id]
        inputs = [shapes[i] for i in node.inputs]
        shape = shapes[node_id] = found(node.op, node.args, inputs, infer_node, node, node.inputs, inputs)
        nodes[node_id] = Node.shaped(node, shape)
    rest = {f.name: getattr(graph, f.name) for f in fields(_Graph) if f.name != "nodes"}
    shaped = Graph(**rest, nodes={k: nodes[k] for k in graph.nodes})
    shaped.__dict__["topological"] = order  # the same nodes in the same wiring: the same order
    return shaped


def infer_node(node: Any, input_ids: Sequence[str], inputs: list[Shape]) -> Shape:
    """One node's output shape from its inputs' shapes, by its op's rule (`expand` asks too, for `$in`).

    `node` is a `Layer` (or the walk's `Unwired` layer): its id, op, args, loc and inputs_loc are read.
    """
    op = OPS[node.op]
    if op.arity is not None and len(inputs) != op.arity:
        takes = f"{op.arity} input" + ("s" if op.arity != 1 else "")
        raise SpecError(f"'{node.id}': {node.op} takes {takes}, got {len(inputs)} "
                        f"({', '.join(input_ids)})", node.inputs_loc or node.loc,
                        hint="name one layer in 'from:'" if op.arity == 1 else None)
    try:
        return tuple(op.infer(node.args, inputs))
    except ShapeError as exc:
        got = ", ".join(fmt_shape(s) for s in inputs)
        raise SpecError(f"'{node.id}' ({node.op} on {got}): {exc}", node.loc) from None
