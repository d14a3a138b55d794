"""Shaped `Graph` + `Report` -> the papers' table form (GoogLeNet's Table 1).

In: a shaped `Graph` and its `Report`.  Out: a `PaperTable`, one `PaperRow`
per top-level layer or module (plain chains are opened, a `repeat` stays one
row), with the columns of the Inception papers' tables: type, patch size /
stride, output size, depth, the width of every Inception branch, params and
ops (MACs); and its renderings.

Nothing here is written per network.  The branch columns are read off each
module's outermost concat: every branch is walked from the concat back to
the module's input, its convolutions are listed (a 1xn followed by an nx1,
or a split into parallel 1xn and nx1, counts as one factorised nxn), and the
branch is named by what it holds:

    pool [+ 1x1]                 -> "pool proj"   (e.g. "max + 32", "avg + pass through")
    one kxk conv                 -> "#kxk"
    1x1, then one kxk            -> "#kxk reduce", "#kxk"
    1x1, then two kxk            -> "double #kxk reduce", "double #kxk"
    1x1, then anything else      -> "#k1+k2+... reduce", "#k1+k2+..."

A module with two branches of one kind gets a second column, "(2)".
Depth is the longest chain of conv and linear layers through the row, as
the papers count it.  No torch.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Optional

from .analysis import Report
from .graph import Graph, Node
from .ops import OPS, PaperRole, counting_convention, weighted_families
from .report import count, latex_table

# Each op's role here (type name, weighted, skipped, patch, branch naming) is its `OpDef.paper`.
FILTERS, POOL = "filters", "pool"  # the kinds of unit a branch is named by


def _role(node: Node) -> PaperRole:
    return OPS[node.op].paper


@dataclass
class PaperRow:
    name: str
    type: str
    patch: str  # "7x7/2", "stride 2" for a reducing module, "" otherwise
    output: str  # papers' order: H x W x C
    depth: int
    branches: dict[str, str]  # column -> value
    params: int
    ops: int


@dataclass
class PaperTable:
    title: str
    rows: list[PaperRow]
    columns: list[str]  # branch columns, in order of first use
    omitted: list[str] = field(default_factory=list)  # training-only rows left out
    omitted_params: int = 0


def paper_table(graph: Graph, report: Report) -> PaperTable:
    rows, columns, omitted, omitted_params = [], [], [], 0
    for item in _items(graph, report):
        row = report.row(item)
        if row.train_only:
            omitted.append(item)
            omitted_params += row.params
            continue
        if item in graph.scopes:
            paper_row = _module_row(graph, item, row)
        else:
            node = graph.nodes[item]
            if _role(node).skipped:
                continue
            paper_row = _layer_row(graph, node, row)
        for column in paper_row.branches:
            if column not in columns:
                columns.append(column)
        rows.append(paper_row)
    return PaperTable(report.title or report.name, rows, columns, omitted, omitted_params)


def _items(graph: Graph, report: Report) -> list[str]:
    """Top-level rows, with plain chains (named seq containers) opened into their children."""
    out = []

    def visit(name: str, depth: int) -> None:
        scope = graph.scopes.get(name)
        if scope is not None and not scope.block and scope.kind == "seq":
            for child in report.rows:
                if child.depth == depth + 1 and child.name.startswith(name + "."):
                    visit(child.name, depth + 1)
        else:
            out.append(name)

    for row in report.rows:
        if row.depth == 1:
            visit(row.name, 1)
    return out


def _hwc(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]}x{shape[0]}" if len(shape) == 3 else f"1x1x{shape[0]}"


def _layer_row(graph: Graph, node: Node, row) -> PaperRow:
    role = _role(node)
    patch = role.patch(node.args, [graph.shape_of(i) for i in node.inputs]) if role.patch else ""
    kind = role.type(node.args) if callable(role.type) else (role.type or node.op)
    return PaperRow(node.id, kind, patch, _hwc(node.shape), int(role.weighted), {}, row.params, row.macs)


def _module_row(graph: Graph, scope_id: str, row) -> PaperRow:
    scope = graph.scopes[scope_id]
    members = set(scope.nodes)
    out = graph.nodes[scope.output].shape
    entry = next(i for n in scope.nodes for i in graph.nodes[n].inputs if i not in members)
    into = graph.shape_of(entry)
    patch = ""
    if len(into) == 3 and len(out) == 3 and round(into[1] / out[1]) >= 2:  # a grid-reducing module
        patch = f"stride {round(into[1] / out[1])}"
    if scope.kind == "repeat":
        first = next(r for r in graph.scopes.values() if r.parent == scope_id)
        kind = f"{first.block or first.kind} x{sum(1 for r in graph.scopes.values() if r.parent == scope_id)}"
    else:
        kind = scope.block or scope.kind
    return PaperRow(scope_id, kind, patch, _hwc(out), _depth(graph, scope.nodes, members),
                    _branch_columns(graph, scope.nodes, members), row.params, row.macs)


def _depth(graph: Graph, nodes: list[str], members: set[str]) -> int:
    longest: dict[str, int] = {}
    for n in nodes:  # declaration order is an order in which inputs come first within a module
        node = graph.nodes[n]
        before = max((longest.get(i, 0) for i in node.inputs if i in members), default=0)
        longest[n] = before + _role(node).weighted
    return max(longest.values(), default=0)


def _branch_columns(graph: Graph, nodes: list[str], members: set[str]) -> dict[str, str]:
    concats = [n for n in nodes if _role(graph.nodes[n]).branches]
    if not concats:
        return {}
    outer = min(concats, key=lambda n: len(graph.nodes[n].scopes))  # the first of the shallowest
    columns: dict[str, str] = {}
    for branch_end in graph.nodes[outer].inputs:
        for column, value in _classify(_units(graph, branch_end, members)):
            name, k = column, 2
            while name in columns:
                name, k = f"{column} ({k})", k + 1
            columns[name] = value
    return columns


def _units(graph: Graph, end: str, members: set[str]) -> list[tuple]:
    """The branch ending at `end`, from the module input on: (FILTERS, kh, kw, width) and (POOL, kind) units."""
    units: list[tuple] = []
    node_id = end
    while node_id in members:
        node = graph.nodes[node_id]
        role = _role(node)
        if role.branches:  # a split: parallel 1xn and nx1 over one input
            parts = [graph.nodes[i] for i in node.inputs]
            filters = [_role(p).filters(p.args) for p in parts if _role(p).filters]
            k = max(max(kh, kw) for kh, kw, _ in filters) if filters else 1
            units.append((FILTERS, k, k, "+".join(str(width) for _, _, width in filters)))
            node_id = parts[0].inputs[0]
            continue
        if role.filters:
            kh, kw, width = role.filters(node.args)
            units.append((FILTERS, kh, kw, str(width)))
        elif role.pool:
            units.append((POOL, role.pool))
        node_id = node.inputs[0]
    units.reverse()
    merged: list[tuple] = []  # 1xn then nx1 (or nx1 then 1xn) is one factorised nxn
    for unit in units:
        previous = merged[-1] if merged else None
        if (previous and unit[0] == previous[0] == FILTERS and 1 in unit[1:3] and unit[1] != unit[2]
                and previous[1:3] == (unit[2], unit[1])):
            n = max(unit[1], unit[2])
            merged[-1] = (FILTERS, n, n, unit[3])
        else:
            merged.append(unit)
    return merged


def _classify(units: list[tuple]) -> list[tuple[str, str]]:
    if not units:
        return [("pool proj", "pass through")]
    if units[0][0] == POOL:
        rest = [u for u in units[1:] if u[0] == FILTERS]
        return [("pool proj", f"{units[0][1]} + {rest[-1][3] if rest else 'pass through'}")]
    convs = [u for u in units if u[0] == FILTERS]
    size = lambda u: f"{u[1]}x{u[2]}"  # noqa: E731
    if len(convs) == 1:
        return [(f"#{size(convs[0])}", convs[0][3])]
    reduce, body = convs[0], convs[1:]
    if size(reduce) != "1x1":
        return [(f"#{'+'.join(size(u) for u in convs)}", convs[-1][3])]
    if len(body) == 1:
        name = f"#{size(body[0])}"
    elif len(body) == 2 and size(body[0]) == size(body[1]):
        name = f"double #{size(body[0])}"
    else:
        name = f"#{'+'.join(size(u) for u in body)}"
    return [(f"{name} reduce", reduce[3]), (name, body[-1][3])]


# ---------------------------------------------------------------------------
# renderings

HEADERS = ("type", "name", "patch size / stride", "output size", "depth")


def _cells(table: PaperTable, row: PaperRow, units: Optional[str]) -> list[str]:
    number = str if units is None else (lambda n: count(n, units))  # None: plain integers, for CSV
    return [row.type, row.name, row.patch, row.output, str(row.depth),
            *(row.branches.get(c, "") for c in table.columns), number(row.params), number(row.ops)]


def _headers(table: PaperTable) -> list[str]:
    return [*HEADERS, *table.columns, "params", "ops"]


def _note(table: PaperTable, units: str) -> str:
    note = (f"ops: multiply-accumulates of {counting_convention(by_family=True)} layers (eval mode); "
            f"depth: {weighted_families()} layers in a row")
    if table.omitted:
        note += (f"; training-only heads ({', '.join(table.omitted)}: {count(table.omitted_params, units)} params) "
                 "are not rows, as in the papers' tables")
    return note


def to_table(table: PaperTable, units: str = "raw"):  # -> rich.table.Table
    from rich.table import Table

    out = Table(title=f"{table.title}, in the papers' table form", title_justify="left")
    for i, header in enumerate(_headers(table)):
        out.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
    for row in table.rows:
        out.add_row(*_cells(table, row, units), style="bold" if row.branches else None)
    out.caption, out.caption_justify = _note(table, units) + ".", "left"
    return out


def to_markdown(table: PaperTable, units: str = "raw") -> str:
    headers = _headers(table)
    lines = [f"**{table.title}**", "", "| " + " | ".join(headers) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + " |"]
    lines += ["| " + " | ".join(_cells(table, row, units)) + " |" for row in table.rows]
    return "\n".join(lines + ["", f"_{_note(table, units)}._", ""])


def to_csv(table: PaperTable, units: str = "raw") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_headers(table))
    for row in table.rows:
        writer.writerow(_cells(table, row, None if units == "raw" else units))
    return out.getvalue()


def to_json(table: PaperTable, units: Optional[str] = None) -> str:
    return json.dumps({
        "title": table.title, "columns": _headers(table), "note": _note(table, "raw"),
        "rows": [{"type": r.type, "name": r.name, "patch": r.patch, "output": r.output, "depth": r.depth,
                  "branches": r.branches, "params": r.params, "ops": r.ops} for r in table.rows],
    }, indent=2)


def to_latex(table: PaperTable, units: str = "raw") -> str:
    """The papers' table as a booktabs table, with the note under it."""
    headers = _headers(table)
    return latex_table(headers, "ll" + "r" * (len(headers) - 2),
                       [_cells(table, row, units) for row in table.rows], caption=table.title,
                       notes=(_note(table, units) + ".",))
