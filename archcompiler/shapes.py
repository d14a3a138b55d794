"""`Graph` -> `Graph` with every node's output shape, statically.

In: an expanded `Graph`.  Out: a copy whose nodes carry `shape`, the shape
of one sample's output (batch excluded), computed by each op's shape rule
from the registry in dependency order.  Shape errors (mismatched concat,
a kernel larger than its input, ...) become `SpecError`s naming the node's
full dotted path and pointing at the YAML that made it.  No torch.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import SpecError
from .graph import INPUT, Graph
from .ops import OPS, Shape, ShapeError, fmt_shape


def infer_shapes(graph: Graph) -> Graph:
    """A copy of `graph` with `shape` set on every node."""
    shapes: dict[str, Shape] = {INPUT: graph.input_shape}
    nodes = {}
    for node_id in graph.order():
        node = graph.nodes[node_id]
        op = OPS[node.op]
        if op.arity is not None and len(node.inputs) != op.arity:
            raise SpecError(f"'{node.id}': {node.op} takes {op.arity} input(s), got {len(node.inputs)}", node.loc)
        inputs = [shapes[i] for i in node.inputs]
        try:
            shape = tuple(op.infer(node.args, inputs))
        except ShapeError as exc:
            got = ", ".join(fmt_shape(s) for s in inputs)
            raise SpecError(f"'{node.id}' ({node.op} on {got}): {exc}", node.loc) from None
        shapes[node_id] = shape
        nodes[node_id] = replace(node, shape=shape)
    return replace(graph, nodes={k: nodes[k] for k in graph.nodes})
