"""Shaped `Graph` -> graphviz diagram.

In: a `Graph` after `infer_shapes` and a view: a depth, blocks to open, or
one block template on its own.  Out: a `graphviz.Digraph` (`diagram`,
`block_diagram`) or rendered bytes (`render`).

What is a box: the modules of a network are its block instances, its
`repeat`s and its `concat` / `add` / `residual` containers; at depth N every
module N levels down is one box (its name, its block and arguments, its
output shape), `expand` opens chosen ones, and depth None draws every layer.
A plain chain is never a box, only a dashed cluster around what it holds,
and opened modules become labelled clusters too, so branches run as
parallel lanes into their concat or add.  Edges carry the tensor shape that
flows along them (H x W x C, as the papers write it); an edge into a concat
also gives the channels it fills, since dot, not the spec, orders the lanes.  Boxes are coloured
by the registry's op category, with a legend of the colours used; layers
that run only in training mode are dashed.  No torch; rendering needs
Graphviz's `dot` except for `.dot` output.
"""

from __future__ import annotations

import html
import shutil
from typing import Iterable, Optional

import graphviz

from .errors import UserError
from .graph import INPUT, Graph, Scope
from .ops import CATEGORIES, OPS, fmt_shape
from .spec import BRANCHING_CONTAINERS

FORMATS = ("svg", "png", "pdf", "dot")

# One colour per category, shared by every diagram: the ops' categories (ops.CATEGORIES), modules and I/O.
PALETTE = {**{name: c.colour for name, c in CATEGORIES.items()}, "block": "#a2c4c9", "io": "#ffffff"}
LEGEND = {"block": "module (block, repeat)", **{name: c.legend for name, c in CATEGORIES.items()}}


def _shape(shape: tuple) -> str:
    # Papers write maps as HxWxC; vectors as their length.
    return f"{shape[1]}x{shape[2]}x{shape[0]}" if len(shape) == 3 else fmt_shape(shape)


def is_module(scope: Scope) -> bool:
    """Whether a scope can be drawn as one box: anything but a plain chain."""
    return bool(scope.block) or scope.kind != "seq"


def module_title(graph: Graph, scope: Scope) -> str:
    """`inception(64, 96, ...)`, `block8(scale=1.0, act=None)`, `block35 x10`, or the container kind."""
    if scope.kind == "repeat":
        copies = [s for s in graph.scopes.values() if s.parent == scope.id]
        first = copies[0] if copies else scope
        return f"{module_title(graph, first)} x{len(copies)}" if copies else "repeat"
    if not scope.block:
        return scope.kind
    values = list(scope.args.values())
    if not values:
        return scope.block
    if len(values) <= 3:
        return f"{scope.block}({', '.join(f'{k}={v}' for k, v in scope.args.items())})"
    return f"{scope.block}({', '.join(str(v) for v in values)})"


def _graph_attrs(title: str, rankdir: str) -> dict:
    return {"rankdir": rankdir, "fontname": "Helvetica", "fontsize": "14", "nodesep": "0.25", "ranksep": "0.3",
            "label": title, "labelloc": "t"}


def _new_digraph(name: str, title: str, rankdir: str) -> graphviz.Digraph:
    return graphviz.Digraph(
        name, graph_attr=_graph_attrs(title, rankdir),
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"fontname": "Helvetica", "fontsize": "8", "color": "#555555", "fontcolor": "#333333"})


def diagram(graph: Graph, depth: Optional[int] = 1, rankdir: str = "TB",
            expand: Iterable[str] = ()) -> graphviz.Digraph:
    """The network with modules folded at `depth` (None: every layer), `expand` opened."""
    dot = _new_digraph(graph.name, graph.title or graph.name, rankdir)
    _draw(dot, graph, list(graph.nodes), depth, set(expand), outside=None)
    for out in graph.outputs.values():
        name = f"output:{out.name}"
        dot.node(_id(name), f"{out.name}\n{_shape(graph.nodes[out.node].shape)}", fillcolor=PALETTE["io"],
                 style="rounded,filled,dashed" if out.train_only else "rounded,filled")
        dot.edge(_id(_unit_of(graph, _absorbed(graph, depth).get(out.node, out.node), depth, set(expand))), _id(name))
    return dot


def block_diagram(graph: Graph, block: str, rankdir: str = "TB") -> graphviz.Digraph:
    """One block template on its own, every layer drawn: its first instance in the network."""
    instances = [s for s in graph.scopes.values() if s.block == block]
    if not instances:
        used = sorted({s.block for s in graph.scopes.values() if s.block})
        raise UserError(f"'{graph.name}' has no block '{block}' in use",
                        hint=f"its blocks are: {', '.join(used)}" if used else "this spec defines no blocks")
    scope = instances[0]
    title = f"{module_title(graph, scope)}, as {scope.id} of {graph.title or graph.name}"
    dot = _new_digraph(f"{graph.name}_{block}", title, rankdir)
    _draw(dot, graph, scope.nodes, None, set(), outside=scope)
    out = graph.nodes[scope.output]
    dot.node("output", f"output\n{_shape(out.shape)}", fillcolor=PALETTE["io"])
    dot.edge(_id(scope.output), "output")
    return dot


def _absorbed(graph: Graph, depth: Optional[int]) -> dict[str, str]:
    """Activation layers drawn inside the box of the layer they follow (not in the every-layer view).

    A ReLU that is its own layer (torchvision's VGG, AlexNet, ResNet) would
    double the boxes of an overview; it joins its one input's box as "+relu"
    when that input is a layer feeding nothing else.
    """
    if depth is None:
        return {}
    consumers: dict[str, int] = {}
    for node in graph.nodes.values():
        for i in node.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    absorbed = {}
    for node in graph.nodes.values():
        if OPS[node.op].category == "act" and len(node.inputs) == 1:
            src = absorbed.get(node.inputs[0], node.inputs[0])
            if src != INPUT and consumers[node.inputs[0]] == 1 and graph.nodes[src].scopes == node.scopes:
                absorbed[node.id] = src
    return absorbed


def _unit_of(graph: Graph, node_id: str, depth: Optional[int], expand: set[str]) -> str:
    """The box a node is drawn in: itself, or its enclosing module at the folding depth."""
    if node_id == INPUT:
        return INPUT
    level = 0
    for scope_id in graph.nodes[node_id].scopes:
        scope = graph.scopes[scope_id]
        if not is_module(scope):
            continue
        level += 1
        if scope_id in expand:
            continue
        if depth is not None and level >= depth:
            return scope_id
    return node_id


def _draw(dot: graphviz.Digraph, graph: Graph, node_ids: list[str], depth: Optional[int], expand: set[str],
          outside: Optional[Scope]) -> None:
    """Boxes, clusters, edges and legend for `node_ids`; inputs from elsewhere are drawn as input boxes."""
    inside = set(node_ids)
    within = _nested(graph, outside) if outside is not None else None
    absorbed = _absorbed(graph, depth)

    def lift(scope_id: Optional[str]) -> Optional[str]:
        # Drawing one block: what sits directly in it is drawn at the top level.
        return None if outside is not None and scope_id == outside.id else scope_id

    units: dict[str, dict] = {}  # box id -> graphviz attributes, in declaration order
    members: dict[Optional[str], list[str]] = {}  # enclosing scope -> boxes drawn inside it
    categories: set[str] = set()
    for node_id in node_ids:
        u = _unit_of(graph, absorbed.get(node_id, node_id), depth, expand)
        if node_id in absorbed and u == absorbed[node_id]:
            units[u]["label"] += f" +{graph.nodes[node_id].op}"
            continue
        if u not in units:
            units[u], parent, category = _box(graph, u)
            categories.add(category)
            if "dashed" in units[u].get("style", ""):
                categories.add("train_only")
            members.setdefault(lift(parent), []).append(u)

    children: dict[Optional[str], list[Scope]] = {}
    for scope in graph.scopes.values():
        if scope.id in units or (within is not None and (scope.id not in within or scope.id == outside.id)):
            continue
        children.setdefault(lift(scope.parent), []).append(scope)

    def has_boxes(scope_id: str) -> bool:
        return bool(members.get(scope_id)) or any(has_boxes(s.id) for s in children.get(scope_id, []))

    position = {n: i for i, n in enumerate(node_ids)}

    def first(item: str) -> int:  # boxes and clusters are written in declaration order
        if item in graph.scopes:
            return min(position.get(n, len(position)) for n in graph.scopes[item].nodes)
        return position[item]

    def emit(container: graphviz.Digraph, scope_id: Optional[str]) -> None:
        items = members.get(scope_id, []) + [c.id for c in children.get(scope_id, []) if has_boxes(c.id)]
        holder = graph.scopes[scope_id] if scope_id is not None else outside
        lanes = holder is not None and holder.kind in BRANCHING_CONTAINERS
        for item in sorted(items, key=first):
            node = graph.nodes.get(item, None)
            if item in units and lanes and node is not None and OPS[node.op].category != "join":
                # A one-layer branch is a lane too, or dot would put it beside the other lanes in any order.
                with container.subgraph(name=f"cluster_lane_{_id(item)}") as lane:
                    lane.attr(label="", style="rounded,dashed", color="#bbbbbb")
                    lane.node(_id(item), **units[item])
                continue
            if item in units:
                container.node(_id(item), **units[item])
                continue
            child = graph.scopes[item]
            with container.subgraph(name=f"cluster_{_id(child.id)}") as sub:
                if is_module(child):
                    sub.attr(label=f"{child.id}: {module_title(graph, child)}", style="rounded", color="#6d8bbf",
                             fontsize="11", fontcolor="#274e8c")
                else:  # a plain chain: a lane (unlabelled when its name is scopeless)
                    name = child.id.rsplit(".", 1)[-1]
                    sub.attr(label="" if name.startswith("_") else name, style="rounded,dashed", color="#bbbbbb",
                             fontsize="9", fontcolor="#777777")
                emit(sub, child.id)

    emit(dot, None)

    sources: dict[str, str] = {}  # an outside node feeding the drawing -> its input box
    seen: set[tuple[str, str]] = set()
    for node_id in node_ids:
        node = graph.nodes[node_id]
        dst = _unit_of(graph, absorbed.get(node_id, node_id), depth, expand)
        channel = 0  # into a drawn concat, each edge also says which channels it fills: dot may reorder lanes
        for src_node in node.inputs:
            shape = graph.shape_of(src_node)
            label = _shape(shape)
            if OPS[node.op].channel_ranges and dst == node_id:
                label += f"\n[{channel}:{channel + shape[0]}]"
                channel += shape[0]
            if src_node != INPUT and src_node not in inside:
                src = sources.setdefault(src_node, "input" if not sources else f"input:{src_node}")
            else:
                src = _unit_of(graph, absorbed.get(src_node, src_node), depth, expand)
            if src == dst or (src, dst) in seen:
                continue
            seen.add((src, dst))
            dot.edge(_id(src), _id(dst), label=label)
    if outside is None:
        dot.node(INPUT, f"input\n{_shape(graph.input_shape)}", fillcolor=PALETTE["io"])
    for src_node, box in sources.items():
        dot.node(_id(box), f"input\n{_shape(graph.nodes[src_node].shape)}", fillcolor=PALETTE["io"])
    _legend(dot, categories)


def _nested(graph: Graph, scope: Scope) -> set[str]:
    """`scope` and every scope nested in it."""
    inner = {scope.id}
    for s in graph.scopes.values():  # parents come before children
        if s.parent in inner:
            inner.add(s.id)
    return inner


def _box(graph: Graph, u: str) -> tuple[dict, Optional[str], str]:
    """Graphviz attributes of box `u` (a module or a layer), the scope it sits in, its colour category."""
    if u in graph.scopes:
        scope = graph.scopes[u]
        title = module_title(graph, scope)
        name = u.rsplit(".", 1)[-1] if "." in u else u
        lines = [u] if title in (name, u) else [u, title]
        attrs = {"fillcolor": PALETTE["block"], "label": "\n".join([*lines, _shape(graph.nodes[scope.output].shape)])}
        train, parent, category = all(graph.nodes[n].train_only for n in scope.nodes), scope.parent, "block"
    else:
        node = graph.nodes[u]
        op = OPS[node.op]
        label = op.label(node.args)
        attrs = {"fillcolor": PALETTE[op.category], "label": f"{u.rsplit('.', 1)[-1]}\n{label}"}
        if op.category == "join":
            attrs.update(shape="ellipse", label=label)
        train, parent, category = node.train_only, (node.scopes[-1] if node.scopes else None), op.category
    if train:
        attrs["style"] = "rounded,filled,dashed"
    return attrs, parent, category


def _legend(dot: graphviz.Digraph, categories: set[str]) -> None:
    rows = "".join(
        f'<TR><TD BGCOLOR="{PALETTE[c]}" WIDTH="18" BORDER="1"> </TD><TD ALIGN="LEFT">{html.escape(text)}</TD></TR>'
        for c, text in LEGEND.items() if c in categories
    )
    if "train_only" in categories:
        rows += '<TR><TD BORDER="1" STYLE="dashed" WIDTH="18"> </TD><TD ALIGN="LEFT">training mode only</TD></TR>'
    dot.node("legend", f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2"><TR><TD COLSPAN="2"><B>legend</B></TD></TR>'
                       f"{rows}</TABLE>>", shape="plaintext", style="", fontsize="9")


def _id(name: str) -> str:
    # Graphviz treats ':' in a node id as a port separator.
    return name.replace(":", "__")


def render(graph: Graph, fmt: str, depth: Optional[int] = 1, rankdir: str = "TB", expand: Iterable[str] = (),
           block: Optional[str] = None) -> bytes:
    """The diagram (or, with `block`, that block template on its own) in `fmt` (svg, png, pdf or dot)."""
    dot = block_diagram(graph, block, rankdir) if block else diagram(graph, depth, rankdir, expand)
    if fmt == "dot":
        return dot.source.encode()
    if shutil.which("dot") is None:
        raise UserError(
            f"drawing {fmt.upper()} needs Graphviz's 'dot' program, which is not installed",
            hint="install it (apt-get install graphviz / brew install graphviz), or write a .dot file",
        )
    return dot.pipe(format=fmt)
