"""Shaped `Graph` -> graphviz diagram.

In: a `Graph` after `infer_shapes` and a view: a depth, blocks to open,
repeats to unroll, or one block template on its own.  Out: a
`graphviz.Digraph` (`diagram`, `block_diagram`) or rendered bytes (`render`).

What is a box: the modules of a network are its block instances, its
`repeat`s and its `concat` / `add` / `residual` containers; at depth N every
module N levels down is one box (its block and arguments, its output shape),
`expand` opens chosen ones, and depth None draws every layer.  A `repeat`, or
a run of consecutive identical block instances, is one box `block × n` at
every depth, `full` included, unless `unroll` names it (`repeat_runs`).
Opened modules are labelled clusters; a plain chain is a dashed frame, and
inside a branching container not even that, so that the branches can be
held in the spec's order: the head of each branch goes into one `rank=same`
row chained by invisible edges (dot keeps those left to right; its second
crossing pass over clusters is turned off because it would not), with an
invisible centre point for an even row that the join hangs under.
Labels say what a paper would say: a name only where the spec gave one (not
a list position `6`, a scopeless `_1ab` or a `repeat_1`) and only where it
adds to the title; the dotted name is the SVG tooltip.  Shapes are CxHxW,
the summary's convention; an edge into a concat also gives the channels it
fills.  `annotate` adds parameters, MACs and receptive field per box, totals
in the legend.  Boxes are coloured by the registry's op category, with a
legend of the colours used; layers that run only in training mode are
dashed.  A block's figure draws its instance with the most layers
(`block_instance`), or one instance named by its dotted name.  `render`
takes a PNG's `dpi` and a `page`: the print style (STYLES), every text 8 pt
and the shapes in the boxes, with an overview wrapped into as many columns
as fit the page's text area (`_column_breaks` cuts only where one edge
leads on).  No torch; rendering needs Graphviz's `dot` except for `.dot`
output.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from typing import Iterable, Optional

import graphviz
import networkx as nx

from .errors import UserError
from .graph import INPUT, Graph, Scope
from .ops import CATEGORIES, OPS, fmt_shape
from .spec import BRANCHING_CONTAINERS

FORMATS = ("svg", "png", "pdf", "dot")

# One colour per category, shared by every diagram: the ops' categories (ops.CATEGORIES), modules and I/O.
PALETTE = {**{name: c.colour for name, c in CATEGORIES.items()}, "block": "#a2c4c9", "io": "#ffffff"}
LEGEND = {"block": "module (block, repeat)", **{name: c.legend for name, c in CATEGORIES.items()}}


def _shape(shape: tuple) -> str:
    # The summary's convention, CxHxW (a vector: its length), in every figure.
    return fmt_shape(shape)


def is_module(scope: Scope) -> bool:
    """Whether a scope can be drawn as one box: anything but a plain chain."""
    return bool(scope.block) or scope.kind != "seq"


def module_title(graph: Graph, scope: Scope, last: Optional[Scope] = None) -> str:
    """`inception(64, 96, ...)`, `block8(scale=1.0, act=None)`, `block35(scale=0.17) \u00d7 10`, or the container
    kind; with `last`, the title of a run from `scope` to `last`: an argument that changes along it is written
    `first\u2026last` (ConvNeXt's `cnblock(n=6\u202632, c=512)`)."""
    if scope.kind == "repeat":
        copies = [s for s in graph.scopes.values() if s.parent == scope.id]
        if not copies:
            return "repeat"
        return f"{module_title(graph, copies[0], copies[-1] if len(copies) > 1 else None)} \u00d7 {len(copies)}"
    if not scope.block:
        return scope.kind
    args = dict(scope.args)
    if last is not None:
        args = {k: v if last.args.get(k) == v else f"{_value(v)}\u2026{_value(last.args.get(k))}"
                for k, v in args.items()}
    args = {k: _value(v) for k, v in args.items()}
    values = list(args.values())
    if not values:
        return scope.block
    if len(values) <= 3:
        return f"{scope.block}({', '.join(f'{k}={v}' for k, v in args.items())})"
    return f"{scope.block}({', '.join(str(v) for v in values)})"


def _value(v):
    # A rate as a paper prints it: 0.075, not 0.07500000000000001 (and 1.0 stays 1.0).
    return str(round(v, 6)) if isinstance(v, float) else v


# Point sizes of the text and the spacing (inches) of the screen style and of the print style that `--page` lays
# out: there every text is 8 pt, the smallest a printed figure may have, and every box says its output shape, so
# that the edges need no label and the ranks close up.
STYLES = {
    "screen": {"title": 14, "box": 10, "edge": 8, "module": 11, "chain": 9, "legend": 9,
               "nodesep": 0.25, "ranksep": 0.3, "margin": None, "edge_shapes": True, "legend_across": 1, "arrowsize": None},
    "print": {"title": 10, "box": 8, "edge": 8, "module": 8, "chain": 8, "legend": 8,
              "nodesep": 0.1, "ranksep": 0.14, "margin": "0.08,0.04", "edge_shapes": False, "legend_across": 2,
              "arrowsize": "0.6"},
}


def _graph_attrs(title: str, rankdir: str, style: dict = STYLES["screen"]) -> dict:
    return {"rankdir": rankdir, "fontname": "Helvetica", "fontsize": str(style["title"]),
            "nodesep": str(style["nodesep"]), "ranksep": str(style["ranksep"]), "label": title, "labelloc": "t",
            # dot's second crossing pass over clusters would undo the branch rows that hold the spec's order.
            "remincross": "false"}


def _new_digraph(name: str, title: str, rankdir: str, style: dict = STYLES["screen"]) -> graphviz.Digraph:
    node_attr = {"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": str(style["box"])}
    if style["margin"]:
        node_attr["margin"] = style["margin"]
    edge_attr = {"fontname": "Helvetica", "fontsize": str(style["edge"]), "color": "#555555", "fontcolor": "#333333"}
    if style["arrowsize"]:
        edge_attr["arrowsize"] = style["arrowsize"]
    return graphviz.Digraph(name, graph_attr=_graph_attrs(title, rankdir, style), node_attr=node_attr,
                            edge_attr=edge_attr)


def diagram(graph: Graph, depth: Optional[int] = 1, rankdir: str = "TB",
            expand: Iterable[str] = (), unroll: Iterable[str] = (), annotate: Iterable[str] = (),
            columns: int = 1, style: str = "screen") -> graphviz.Digraph:
    """The network with modules folded at `depth` (None: every layer), `expand` opened, repeats folded but `unroll`;
    `annotate` (any of ANNOTATIONS) adds a line of counts to every box and their totals to the legend; `columns`
    wraps the boxes, in order, into that many columns side by side (plain chains then lose their frames); `style`
    is a key of STYLES."""
    dot = _new_digraph(graph.name, graph.title or graph.name, rankdir, STYLES[style])
    expand = set(expand)
    runs = repeat_runs(graph, set(unroll) | expand)
    folded = {member: box for box, members in runs.items() for member in members}
    _draw(dot, graph, list(graph.nodes), depth, expand, outside=None, runs=runs, annotate=tuple(annotate),
          columns=columns, style=STYLES[style])
    for out in graph.outputs.values():
        name = f"output:{out.name}"
        dot.node(_id(name), f"{out.name}\n{_shape(graph.nodes[out.node].shape)}", fillcolor=PALETTE["io"],
                 style="rounded,filled,dashed" if out.train_only else "rounded,filled")
        dot.edge(_id(_unit_of(graph, _absorbed(graph, depth).get(out.node, out.node), depth, expand, folded)), _id(name))
    return dot


def block_diagram(graph: Graph, block: str, rankdir: str = "TB", annotate: Iterable[str] = (),
                  style: str = "screen") -> graphviz.Digraph:
    """One block template on its own, every layer drawn: the instance `block_instance` chooses."""
    scope = block_instance(graph, block)
    name = paper_name(scope.id)
    heading = module_title(graph, scope)
    # In print, the network's title on a line of its own: the figure should be no wider than the module.
    title = f"{heading},{' ' if style == 'screen' else chr(10)}" \
            f"{f'as {name} of' if name and not _same(name, heading, scope.block) else 'in'} {graph.title or graph.name}"
    dot = _new_digraph(f"{graph.name}_{block}", title, rankdir, STYLES[style])
    dot.attr(tooltip=scope.id)
    _draw(dot, graph, scope.nodes, None, set(), outside=scope, annotate=tuple(annotate), style=STYLES[style])
    out = graph.nodes[scope.output]
    dot.node("output", f"output\n{_shape(out.shape)}", fillcolor=PALETTE["io"])
    dot.edge(_id(scope.output), "output")
    return dot


def block_instance(graph: Graph, block: str) -> Scope:
    """The instance of a block that its figure draws: `block` is a block's name or one instance's dotted name.

    By the block's name, the instance that shows the template most fully:
    the one with the most layers (its `when:` parts on, a residual's
    projection), the first of those.  MobileNetV2's first inverted residual
    (t = 1) has no expansion convolution and no residual; a later one has both.
    A name that is both a block's and an instance's (Inception-ResNet-v2's
    last `block8`) is the block's.
    """
    instances = [s for s in graph.scopes.values() if s.block == block]
    if not instances and block in graph.scopes and graph.scopes[block].block:
        return graph.scopes[block]
    if not instances:
        used = sorted({s.block for s in graph.scopes.values() if s.block})
        raise UserError(f"'{graph.name}' has no block '{block}' in use",
                        hint=f"its blocks are: {', '.join(used)} (or give one instance by its dotted name)"
                        if used else "this spec defines no blocks")
    return max(instances, key=lambda s: len(s.nodes))  # max keeps the first of equals


def repeat_runs(graph: Graph, unroll: set[str] = frozenset()) -> dict[str, list[str]]:
    """The repeats drawn as one box each: box id -> the scopes it stands for.

    A `repeat` is one box (its own id); so is a run of two or more
    consecutive instances of one block in one parent, each fed by the one
    before, with the same layers, shapes and layer arguments but a
    regulariser's (whose rate may follow a block argument, which the title
    then gives as a range), under the id of its first.  A repeat or run with a scope named in `unroll` is drawn
    copy by copy.
    """
    runs: dict[str, list[str]] = {}
    siblings: dict[Optional[str], list[Scope]] = {}
    for scope in graph.scopes.values():
        siblings.setdefault(scope.parent, []).append(scope)
        if scope.kind == "repeat" and scope.nodes:
            runs[scope.id] = [scope.id]

    def signature(scope: Scope) -> tuple:
        # Only a regulariser's arguments may change along a run (the title then shows the block's range):
        # ConvNeXt's and EfficientNet's blocks differ in their stochastic-depth rate alone, from a block index.
        nodes = [graph.nodes[n] for n in scope.nodes]
        return (scope.block, tuple(scope.args), tuple(
            (n.op, n.shape, None if OPS[n.op].category == "regularize" else repr(n.args)) for n in nodes))

    for parent, scopes in siblings.items():
        if parent is not None and graph.scopes[parent].kind == "repeat":
            continue  # the repeat itself is the box
        run: list[Scope] = []
        for scope in scopes + [None]:
            if (scope is not None and run and scope.block and scope.nodes and signature(scope) == signature(run[-1])
                    and run[-1].output in graph.nodes[scope.nodes[0]].inputs):
                run.append(scope)
                continue
            if len(run) >= 2:
                runs[run[0].id] = [s.id for s in run]
            run = [scope] if scope is not None and scope.block and scope.nodes else []
    return {box: members for box, members in runs.items()
            if not unroll & {*members, *(s.id for s in graph.scopes.values() if s.parent in members)}}


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


def _unit_of(graph: Graph, node_id: str, depth: Optional[int], expand: set[str],
             folded: Optional[dict[str, str]] = None) -> str:
    """The box a node is drawn in: itself, its folded run of repeats, or its enclosing module at the folding depth."""
    if node_id == INPUT:
        return INPUT
    level = 0
    for scope_id in graph.nodes[node_id].scopes:
        if folded and scope_id in folded:
            return folded[scope_id]
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
          outside: Optional[Scope], runs: Optional[dict[str, list[str]]] = None, annotate: tuple[str, ...] = (),
          columns: int = 1, style: dict = STYLES["screen"]) -> None:
    """Boxes, clusters, edges and legend for `node_ids`; inputs from elsewhere are drawn as input boxes."""
    inside = set(node_ids)
    within = _nested(graph, outside) if outside is not None else None
    absorbed = _absorbed(graph, depth)
    runs = runs or {}
    folded = {member: box for box, members in runs.items() for member in members}

    def lift(scope_id: Optional[str]) -> Optional[str]:
        # Drawing one block: what sits directly in it is drawn at the top level.
        return None if outside is not None and scope_id == outside.id else scope_id

    units: dict[str, dict] = {}  # box id -> graphviz attributes, in declaration order
    members: dict[Optional[str], list[str]] = {}  # enclosing scope -> boxes drawn inside it
    categories: set[str] = set()
    for node_id in node_ids:
        u = _unit_of(graph, absorbed.get(node_id, node_id), depth, expand, folded)
        if node_id in absorbed and u == absorbed[node_id]:
            lines = units[u]["label"].split("\n")
            lines[-1 if style["edge_shapes"] else -2] += f" +{graph.nodes[node_id].op}"  # before a shape line
            units[u]["label"] = "\n".join(lines)
            continue
        if u not in units:
            units[u], parent, category = _box(graph, u, runs.get(u), shape_line=not style["edge_shapes"])
            categories.add(category)
            if "dashed" in units[u].get("style", ""):
                categories.add("train_only")
            members.setdefault(lift(parent), []).append(u)

    totals: list[str] = []
    if annotate:
        totals = _annotate(graph, units, node_ids, depth, expand, absorbed, folded, runs, annotate, outside)

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
            if item in units:
                container.node(_id(item), **units[item])
                continue
            child = graph.scopes[item]
            if (lanes or columns > 1) and not is_module(child):  # a branch's chain (or wrapped): no frame
                emit(container, child.id)
                continue
            with container.subgraph(name=f"cluster_{_id(child.id)}") as sub:
                name = paper_name(child.id)
                if is_module(child):
                    title = module_title(graph, child)
                    sub.attr(label=f"{name}: {title}" if name and not _same(name, title, child.block) else title,
                             style="rounded", color="#6d8bbf", fontsize=str(style["module"]), fontcolor="#274e8c",
                             tooltip=child.id)
                else:  # a plain chain: a dashed frame (unlabelled when its name is generated)
                    sub.attr(label=name, style="rounded,dashed", color="#bbbbbb", fontsize=str(style["chain"]),
                             fontcolor="#777777", tooltip=child.id)
                emit(sub, child.id)
        for join, heads in rows.get(scope_id, []):
            _branch_row(container, join, heads)

    rows: dict[Optional[str], list] = {}
    for key, row in _branch_rows(graph, node_ids, depth, expand, absorbed, folded).items():
        rows.setdefault(lift(key), []).extend(row)
    emit(dot, None)
    breaks: dict[tuple[str, str], tuple[str, str]] = {}  # (foot of a column, head of the next) -> its lane's ends
    if columns > 1:
        # The main path's boxes (no joins, nothing training-only such as an auxiliary head), split evenly.  The
        # edge from a column's foot to the next one's head runs up a lane of its own between the two: a point
        # beside the foot, a point beside the head, and the edge between them, which dot lays out as a column of
        # its own, so that it neither crosses the boxes nor loops round them.
        order = [u for u in units if units[u].get("shape") != "ellipse" and "dashed" not in units[u].get("style", "")]
        row = [order[0]]
        for i in _column_breaks(graph, node_ids, list(units), order, columns, lambda n: _unit_of(
                graph, absorbed.get(n, n), depth, expand, folded)):
            foot, head = order[i - 1], order[i]
            breaks[foot, head] = (f"{foot}:wrap", f"{head}:wrap")
            for point in breaks[foot, head]:
                dot.node(_id(point), "", shape="point", width="0", height="0")
            with dot.subgraph() as same:
                same.attr(rank="same")
                same.edge(_id(foot), _id(f"{foot}:wrap"), dir="none")
            dot.edge(_id(f"{head}:wrap"), _id(f"{foot}:wrap"), dir="none")
            row += [f"{head}:wrap", head]
        with dot.subgraph() as same:
            same.attr(rank="same")
            for a, b in zip(row, row[1:]):
                same.edge(_id(a), _id(b), style="invis")
        dot.attr(newrank="true")

    sources: dict[str, str] = {}  # an outside node feeding the drawing -> its input box
    seen: set[tuple[str, str]] = set()
    for node_id in node_ids:
        node = graph.nodes[node_id]
        dst = _unit_of(graph, absorbed.get(node_id, node_id), depth, expand, folded)
        channel = 0  # into a drawn concat, each edge also says which channels it fills: dot may reorder lanes
        for src_node in node.inputs:
            shape = graph.shape_of(src_node)
            label = _shape(shape) if style["edge_shapes"] else ""  # in print, the box above says it
            if OPS[node.op].channel_ranges and dst == node_id:
                label = "\n".join(filter(None, [label, f"[{channel}:{channel + shape[0]}]"]))
                channel += shape[0]
            if src_node not in inside and (src_node != INPUT or outside is not None):  # the network's input too
                src = sources.setdefault(src_node, "input" if not sources else f"input:{src_node}")
            else:
                src = _unit_of(graph, absorbed.get(src_node, src_node), depth, expand, folded)
            if src == dst or (src, dst) in seen:
                continue
            seen.add((src, dst))
            if (src, dst) in breaks:
                dot.edge(_id(breaks[src, dst][1]), _id(dst), label=label)  # the lane's last step, into the head
            else:
                dot.edge(_id(src), _id(dst), label=label)
    if outside is None:
        dot.node(INPUT, f"input\n{_shape(graph.input_shape)}", fillcolor=PALETTE["io"])
    for src_node, box in sources.items():
        dot.node(_id(box), f"input\n{_shape(graph.shape_of(src_node))}", fillcolor=PALETTE["io"])
    _legend(dot, categories, totals, style["legend"], style["legend_across"])


def _column_breaks(graph: Graph, node_ids: list[str], boxes: list[str], order: list[str], columns: int,
                   unit) -> list[int]:
    """Where to wrap the main path `order` (of all `boxes`, in declaration order) into `columns` columns: positions
    j in `order`, each as near an even split as can be, where the one edge from the boxes declared before
    `order[j]` to it and those after is `order[j - 1] -> order[j]`, so that no module's branches (nor a join's
    inputs) are split between columns."""
    place = {u: i for i, u in enumerate(boxes)}
    edges = {(place[unit(i)], place[unit(n)]) for n in node_ids for i in graph.nodes[n].inputs
             if i in graph.nodes and unit(i) in place and unit(n) in place and unit(i) != unit(n)}
    cuts = [j for j in range(1, len(order))
            if {(a, b) for a, b in edges if a < place[order[j]] <= b} == {(place[order[j - 1]], place[order[j]])}]
    breaks: list[int] = []
    for k in range(1, columns):
        target = k * len(order) / columns
        free = [j for j in cuts if not breaks or j > breaks[-1]]
        if free:
            breaks.append(min(free, key=lambda j: abs(j - target)))
    return breaks


def _branch_rows(graph: Graph, node_ids: list[str], depth: Optional[int], expand: set[str],
                 absorbed: dict[str, str], folded: dict[str, str]) -> dict[Optional[str], list[tuple[str, list[str]]]]:
    """For every join drawn as a box, the first box of each of its branches in the spec's order, by the scope
    whose cluster holds the join.

    dot's crossing minimisation reorders lanes freely (and ignores `ordering`
    across clusters), so these boxes go into a `rank=same` row inside that
    cluster, chained by invisible edges, which dot lays out left to right.
    A branch's first box is the first layer that only it leads to (a branch
    that splits again is headed above its split).  An input that is also an
    ancestor of another input (a dense layer's carried features) is not a
    branch of its own and is left free.
    """
    inside = set(node_ids)
    position = {n: i for i, n in enumerate(node_ids)}
    rows: dict[Optional[str], list[tuple[str, list[str]]]] = {}
    for node_id in node_ids:
        node = graph.nodes[node_id]
        if OPS[node.op].category != "join" or len(node.inputs) < 2:
            continue
        if _unit_of(graph, node_id, depth, expand, folded) != node_id:
            continue  # folded into a module box
        feeding = [i for i in node.inputs if i != INPUT and i in inside]
        if len(feeding) < 2:
            continue
        ancestors = {i: nx.ancestors(graph.dag, i) for i in feeding}
        units: list[str] = []
        for i in feeding:
            others = set().union(*(ancestors[j] for j in feeding if j != i))
            if i in others:
                continue  # carried along, not a branch
            lane = [n for n in ({i} | ancestors[i]) - others if n in inside]
            head = min(lane, key=position.__getitem__)  # the first layer only this branch has
            u = _unit_of(graph, absorbed.get(head, head), depth, expand, folded)
            if u != node_id and u not in units:
                units.append(u)
        if len(units) >= 2:
            rows.setdefault(node.scopes[-1] if node.scopes else None, []).append((node_id, units))
    return rows


def _branch_row(container: graphviz.Digraph, join: str, heads: list[str]) -> None:
    """The heads of a join's branches on one row, in order; an even row gets a middle point the join hangs under.

    dot puts a join anywhere between its two middle branches (every such x
    costs the same); an invisible point between them, pulled hard towards
    the join, centres it.
    """
    row = list(heads)
    if len(row) % 2 == 0:
        middle = f"{join}:centre"
        container.node(_id(middle), "", shape="point", width="0", height="0", style="invis")
        container.edge(_id(middle), _id(join), style="invis", weight="2")
        row.insert(len(row) // 2, middle)
    with container.subgraph() as same:
        same.attr(rank="same")
        for a, b in zip(row, row[1:]):
            same.edge(_id(a), _id(b), style="invis")


def _nested(graph: Graph, scope: Scope) -> set[str]:
    """`scope` and every scope nested in it."""
    inner = {scope.id}
    for s in graph.scopes.values():  # parents come before children
        if s.parent in inner:
            inner.add(s.id)
    return inner


def _box(graph: Graph, u: str, run: Optional[list[str]] = None,
         shape_line: bool = False) -> tuple[dict, Optional[str], str]:
    """Graphviz attributes of box `u` (a module, a run of repeats or a layer), the scope it sits in, its category;
    a module's box ends in its output shape, a layer's too with `shape_line`."""
    if u in graph.scopes:
        scope = graph.scopes[u]
        title = module_title(graph, scope)
        if run and len(run) > 1:
            title = f"{module_title(graph, scope, graph.scopes[run[-1]])} \u00d7 {len(run)}"
            scope = Scope(u, scope.kind, scope.block, scope.loc, scope.parent, graph.scopes[run[-1]].output,
                          [n for m in run for n in graph.scopes[m].nodes], scope.args)
        name = paper_name(u)
        if run and len(run) > 1 and name:
            last = paper_name(run[-1])
            name = f"{name}\u2013{last}" if last else ""
        lines = [name, title] if name and not _same(name, title, scope.block) else [title]
        attrs = {"fillcolor": PALETTE["block"], "label": "\n".join([*lines, _shape(graph.nodes[scope.output].shape)]),
                 "tooltip": u if not run or len(run) < 2 else f"{u} .. {run[-1]}"}
        train, parent, category = all(graph.nodes[n].train_only for n in scope.nodes), scope.parent, "block"
    else:
        node = graph.nodes[u]
        op = OPS[node.op]
        label = op.label(node.args)
        name = paper_name(u)
        lines = [name, label] if name and not _same(name, label, None) else [label]
        if shape_line and op.category != "join":
            # In print, what a layer folds in (`+BN +relu`) goes on a line of its own: narrower module figures.
            head, plus, rest = lines[-1].partition(" +")
            lines[-1:] = [head, f"+{rest}"] if plus else [head]
            lines.append(_shape(node.shape))
        attrs = {"fillcolor": PALETTE[op.category], "label": "\n".join(lines), "tooltip": u}
        if op.category == "join":
            attrs.update(shape="ellipse", label=label)
        train, parent, category = node.train_only, (node.scopes[-1] if node.scopes else None), op.category
    if train:
        attrs["style"] = "rounded,filled,dashed"
    return attrs, parent, category


_GENERATED = re.compile(r"^(\d+|_.*|repeat(_\d+)?)$")


def paper_name(dotted: str) -> str:
    """The name a paper would print for a box or cluster: the last part of its dotted name, or "" when that part
    is generated (a list position `6`, a scopeless `_1ab`, a `repeat_1`)."""
    name = dotted.rsplit(".", 1)[-1]
    return "" if _GENERATED.match(name) else name


def _same(name: str, title: str, kind: Optional[str]) -> bool:
    """Whether a box's name only repeats what its title says (`flatten` / `flatten`, `aux1` / `aux`,
    `stochastic_depth` / `stochastic depth 0.1`)."""
    head = re.split(r"[\s(]", title, maxsplit=1)[0]
    words = name.replace("_", " ")
    return (name == title or name == head or (kind is not None and head == kind and name.rstrip("0123456789") == kind)
            or (words != name and re.match(rf"{re.escape(words)}\b", title) is not None))


ANNOTATIONS = ("params", "macs", "rf")


def _annotate(graph: Graph, units: dict[str, dict], node_ids: list[str], depth: Optional[int], expand: set[str],
              absorbed: dict[str, str], folded: dict[str, str], runs: dict[str, list[str]], annotate: tuple[str, ...],
              outside: Optional[Scope]) -> list[str]:
    """Add a line of counts (parameters, MACs, receptive field) to each box; return the legend's totals lines."""
    from .analysis import analyze
    from .report import count, field, si

    report = analyze(graph)
    rows = {r.name: r for r in report.rows}
    held: dict[str, list[str]] = {}
    for node_id in node_ids:
        held.setdefault(_unit_of(graph, absorbed.get(node_id, node_id), depth, expand, folded), []).append(node_id)

    def line(params: int, macs: int, rf: tuple[int, int], every: bool = False) -> str:
        parts = []
        if "params" in annotate and (params or every):
            parts.append(f"{count(params, 'si')} params")
        if "macs" in annotate and (macs or every):
            parts.append(si(macs, "MACs"))
        if "rf" in annotate and (rf != (1, 1) or every):
            parts.append(f"RF {field(rf)}")
        return ", ".join(parts)

    for u, attrs in units.items():
        if attrs.get("shape") == "ellipse":
            continue  # a join: no weights, next to no cost
        inside = held.get(u, [])
        if u in graph.scopes:
            last = runs.get(u, [u])[-1]
            out = graph.scopes[last].output
        else:
            out = u
        text = line(sum(rows[n].params for n in inside), sum(rows[n].macs for n in inside), rows[out].rf)
        if text:
            attrs["label"] += "\n" + text
    if outside is not None:
        row = rows[outside.id]
        return [f"this {outside.block}: " + line(row.params, row.macs, row.rf, every=True)]
    out_rf = max((rows[o.node].rf for o in graph.outputs.values() if not o.train_only), default=(1, 1))
    return ["total: " + line(report.total_params, report.total_macs, out_rf, every=True)]


def _legend(dot: graphviz.Digraph, categories: set[str], totals: Iterable[str] = (), fontsize: int = 9,
            across: int = 1) -> None:
    """The legend: a swatch and a line for every category drawn, `across` of them to a row, then the totals."""
    entries = [f'<TD BGCOLOR="{PALETTE[c]}" WIDTH="18" BORDER="1"> </TD><TD ALIGN="LEFT">{html.escape(text)}</TD>'
               for c, text in LEGEND.items() if c in categories]
    if "train_only" in categories:
        entries.append('<TD BORDER="1" STYLE="dashed" WIDTH="18"> </TD><TD ALIGN="LEFT">training mode only</TD>')
    rows = "".join(f"<TR>{''.join(entries[i:i + across])}</TR>" for i in range(0, len(entries), across))
    span = 2 * min(across, max(len(entries), 1))
    rows += "".join(f'<TR><TD COLSPAN="{span}" ALIGN="LEFT">{html.escape(t)}</TD></TR>' for t in totals)
    legend = dict(label=f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2"><TR><TD COLSPAN="{span}"><B>legend</B>'
                        f"</TD></TR>{rows}</TABLE>>", shape="plaintext", style="", fontsize=str(fontsize))
    if across == 1:
        dot.node("legend", **legend)
        return
    with dot.subgraph() as foot:  # in print, below the figure, where it widens no row
        foot.attr(rank="sink")
        foot.node("legend", **legend)


def _id(name: str) -> str:
    # Graphviz treats ':' in a node id as a port separator.
    return name.replace(":", "__")


# Page sizes in points (portrait) and the margin left on each side: a figure is placed at the text width.
PAGES = {"A4": (595, 842), "A5": (420, 595), "letter": (612, 792)}
PAGE_MARGIN = 54  # 3/4 inch
MIN_TEXT_PT = 8.0  # STYLES["print"] writes every text at this size, so a figure is placed at its natural size


def figure_size(dot: graphviz.Digraph) -> tuple[float, float]:
    """The laid-out figure's width and height in points (at its natural size, where its fonts are what they say)."""
    _need_dot("measuring a figure")
    bb = json.loads(dot.pipe(format="json0"))["bb"]
    x0, y0, x1, y1 = map(float, bb.split(","))
    return x1 - x0, y1 - y0


MAX_COLUMNS = 8


def _wrap_to_page(page: str, columns, hint: str) -> tuple:
    """The figure `columns(c)` draws in as few columns c as fit one page of `page` with its text at least 8 pt:
    `(dot, width, height)`; refuses, with its size and `hint`, a figure that fits in none."""
    text_width, text_height = (d - 2 * PAGE_MARGIN for d in PAGES[page])
    tried = []
    for c in range(1, MAX_COLUMNS + 1):
        dot = columns(c)
        if dot is None:
            break  # nothing to wrap: a module figure, or a figure drawn left to right
        width, height = figure_size(dot)
        tried.append((c, width, height))
        if width <= text_width and height <= text_height:
            return dot, width, height
        if width > text_width:
            break  # more columns only widen it
    c, width, height = min(tried, key=lambda t: max(t[1] / text_width, t[2] / text_height))
    raise UserError(f"the figure does not fit one {page} page with its text at least {MIN_TEXT_PT:g} pt: its "
                    f"text area is {text_width} x {text_height} pt, and the figure is {width:.0f} x {height:.0f} pt"
                    + (f" in {c} columns" if c > 1 else ""),
                    hint=hint)


def _need_dot(what: str) -> None:
    if shutil.which("dot") is None:
        raise UserError(
            f"{what} needs Graphviz's 'dot' program, which is not installed",
            hint="install it (apt-get install graphviz / brew install graphviz), or write a .dot file",
        )


def render(graph: Graph, fmt: str, depth: Optional[int] = 1, rankdir: str = "TB", expand: Iterable[str] = (),
           block: Optional[str] = None, unroll: Iterable[str] = (), annotate: Iterable[str] = (),
           dpi: Optional[int] = None, page: Optional[str] = None) -> bytes:
    """The diagram (or, with `block`, that block template on its own) in `fmt` (svg, png, pdf or dot).

    `dpi` sets a PNG's resolution (Graphviz's default is 96); `page` (a key of PAGES) lays the figure out in the
    print style (every text 8 pt, the shapes in the boxes) and an overview in as many columns as it takes to
    fit that page's text area at its natural size, refusing, with its size, one that does not fit.
    """
    if page is not None:
        if page not in PAGES:
            raise UserError(f"unknown page size '{page}'", hint=f"use one of {', '.join(PAGES)}")

        def laid_out(columns: int) -> Optional[graphviz.Digraph]:
            # The print style; an overview drawn top to bottom wraps into columns, anything else is one column.
            if block:
                return block_diagram(graph, block, rankdir, annotate, style="print") if columns == 1 else None
            if columns > 1 and rankdir != "TB":
                return None
            return diagram(graph, depth, rankdir, expand, unroll, annotate, columns=columns, style="print")

        if block:
            hint = "a module figure is not wrapped into columns: leave out --page and scale it yourself"
            hint += ", or try --rankdir LR" if rankdir == "TB" else ""
        else:
            hint = ("draw fewer boxes (a smaller --depth, or --block NAME for one module), "
                    "or leave out --page and scale the figure yourself")
        dot, width, height = _wrap_to_page(page, laid_out, hint)
        dot.attr(size=f"{width / 72:.3f},{height / 72:.3f}")
    else:
        dot = (block_diagram(graph, block, rankdir, annotate) if block
               else diagram(graph, depth, rankdir, expand, unroll, annotate))
    if dpi is not None:
        if fmt != "png":
            raise UserError(f"--dpi is for PNG output, not {fmt.upper()}", hint="SVG and PDF are vector formats")
        dot.attr(dpi=str(dpi))
    if fmt == "dot":
        return dot.source.encode()
    _need_dot(f"drawing {fmt.upper()}")
    return dot.pipe(format=fmt)
