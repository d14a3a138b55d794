"""Shaped `Graph` -> graphviz diagram.

In: a `Graph` after `infer_shapes` and a depth.  Out: a `graphviz.Digraph`
(`diagram`) or rendered bytes (`render`).  At depth N every scope at depth N
is one box (a block instance shows its block name and arguments), shallower
scopes are labelled clusters around their contents, and edges carry the
tensor shape that flows along them.  Boxes are coloured by op category
(the registry's `category`); layers that run only in training mode are
dashed.  No torch; rendering needs Graphviz's `dot` except for `.dot` output.
"""

from __future__ import annotations

import shutil
from typing import Optional

import graphviz

from .errors import UserError
from .graph import INPUT, Graph
from .ops import OPS, fmt_shape

FORMATS = ("svg", "png", "pdf", "dot")

PALETTE = {  # one colour per op category, shared by every diagram
    "conv": "#cfe2f3",
    "pool": "#d9ead3",
    "norm": "#fff2cc",
    "act": "#fce5cd",
    "linear": "#d9d2e9",
    "join": "#eeeeee",
    "shape": "#f3f3f3",
    "regularize": "#f4cccc",
    "block": "#c9daf8",
    "io": "#ffffff",
}


def _shape(shape: tuple) -> str:
    # Papers write maps as HxWxC; vectors as their length.
    return f"{shape[1]}x{shape[2]}x{shape[0]}" if len(shape) == 3 else fmt_shape(shape)


def diagram(graph: Graph, depth: Optional[int] = 1, rankdir: str = "TB") -> graphviz.Digraph:
    """The network at `depth` (None: every layer) as a graphviz Digraph."""
    dot = graphviz.Digraph(graph.name, graph_attr={
        "rankdir": rankdir, "fontname": "Helvetica", "fontsize": "12", "nodesep": "0.25", "ranksep": "0.3",
        "label": f"{graph.title or graph.name}", "labelloc": "t",
    }, node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"fontname": "Helvetica", "fontsize": "8", "color": "#555555"})

    scope_depth: dict[str, int] = {}
    for scope in graph.scopes.values():
        scope_depth[scope.id] = scope_depth[scope.parent] + 1 if scope.parent else 1

    def unit(node_id: str) -> str:
        """The box a node is drawn in: itself, or its enclosing scope at the folding depth."""
        if node_id == INPUT:
            return INPUT
        for scope in graph.nodes[node_id].scopes:
            if depth is not None and scope_depth[scope] >= depth:
                return scope
        return node_id

    units: dict[str, dict] = {}  # box id -> graphviz attributes, in declaration order
    members: dict[Optional[str], list[str]] = {}  # enclosing scope -> boxes drawn inside it
    for node in graph.nodes.values():
        u = unit(node.id)
        if u not in units:
            units[u], parent = _box(graph, u)
            members.setdefault(parent, []).append(u)

    def has_boxes(scope_id: str) -> bool:
        return bool(members.get(scope_id)) or any(has_boxes(s.id) for s in children.get(scope_id, []))

    children: dict[Optional[str], list] = {}
    for scope in graph.scopes.values():
        if scope.id not in units:
            children.setdefault(scope.parent, []).append(scope)

    def emit(container: graphviz.Digraph, scope_id: Optional[str]) -> None:
        for u in members.get(scope_id, []):
            container.node(_id(u), **units[u])
        for child in children.get(scope_id, []):
            if not has_boxes(child.id):
                continue
            with container.subgraph(name=f"cluster_{_id(child.id)}") as sub:
                label = f"{child.id}: {child.block}" if child.block else child.id
                sub.attr(label=label, style="rounded,dashed", color="#888888", fontsize="10")
                emit(sub, child.id)

    dot.node(INPUT, f"input\n{_shape(graph.input_shape)}", fillcolor=PALETTE["io"])
    emit(dot, None)

    seen: set[tuple[str, str]] = set()
    for node in graph.nodes.values():
        dst = unit(node.id)
        for src_node in node.inputs:
            src = unit(src_node)
            if src == dst or (src, dst) in seen:
                continue
            seen.add((src, dst))
            shape = graph.input_shape if src_node == INPUT else graph.nodes[src_node].shape
            dot.edge(_id(src), _id(dst), label=_shape(shape))
    for out in graph.outputs.values():
        name = f"output:{out.name}"
        dot.node(_id(name), f"{out.name}\n{_shape(graph.nodes[out.node].shape)}", fillcolor=PALETTE["io"],
                 style="rounded,filled,dashed" if out.train_only else "rounded,filled", shape="box")
        dot.edge(_id(unit(out.node)), _id(name))
    return dot


def _box(graph: Graph, u: str) -> tuple[dict, Optional[str]]:
    """Graphviz attributes of box `u` (a scope or a node) and the scope it sits in."""
    if u in graph.scopes:
        scope = graph.scopes[u]
        args = ", ".join(str(v) for v in scope.args.values())
        title = (f"{scope.block}({args})" if args else scope.block) if scope.block else scope.kind
        attrs = {"fillcolor": PALETTE["block"], "label": f"{u}\n{title}\n{_shape(graph.nodes[scope.output].shape)}"}
        train, parent = all(graph.nodes[n].train_only for n in scope.nodes), scope.parent
    else:
        node = graph.nodes[u]
        op = OPS[node.op]
        label = op.label(node.args)
        attrs = {"fillcolor": PALETTE[op.category], "label": f"{u.rsplit('.', 1)[-1]}\n{label}"}
        if op.category == "join":
            attrs.update(shape="ellipse", label=label)
        train, parent = node.train_only, (node.scopes[-1] if node.scopes else None)
    if train:
        attrs["style"] = "rounded,filled,dashed"
    return attrs, parent


def _id(name: str) -> str:
    # Graphviz treats ':' in a node id as a port separator.
    return name.replace(":", "__")


def render(graph: Graph, fmt: str, depth: Optional[int] = 1, rankdir: str = "TB") -> bytes:
    """The diagram in `fmt` (svg, png, pdf or dot) as bytes."""
    dot = diagram(graph, depth, rankdir)
    if fmt == "dot":
        return dot.source.encode()
    if shutil.which("dot") is None:
        raise UserError(
            f"drawing {fmt.upper()} needs Graphviz's 'dot' program, which is not installed",
            hint="install it (apt-get install graphviz / brew install graphviz), or write a .dot file",
        )
    return dot.pipe(format=fmt)
