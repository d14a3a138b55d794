"""Two shaped `Graph`s -> a `Diff`: the networks side by side per stage.

In: two `Graph`s after `infer_shapes`.  Out: a `Diff` with one `StageRow` per
stage, A's and B's figures and the deltas B - A, and its renderings (a rich
table, Markdown, JSON).  No torch.

Networks name and nest their modules differently, so they are aligned by
stage, the spatial grid their layers produce:

- a layer whose output is an HxW map belongs to stage "HxW"; a layer whose
  output is flat, or a 1x1 map (a global pool's output, LeNet's C5), belongs
  to "head", so pool + flatten + classifier stay together however a network
  reaches its vector.
- a stage holds every layer of its grid, not only one consecutive run:
  declaration order interleaves the branches of a reduction block (a 35x35
  conv, then a 17x17 one, then a 35x35 one), and each layer counts where its
  output, and so its work, is.
- a stage's output is the shape of its last trunk layer, the last layer of
  that grid that all data flows through (the concat after a block, not a
  branch inside the next reduction); a stage without one shows its last layer.
- stages run from the largest grid to the smallest, head last; A's and B's
  stages pair by grid, and a grid only one network has gets an empty side,
  counted as zero in the deltas (so the stage deltas add up to the total's).
- only what runs in eval mode is compared: training-only layers (auxiliary
  heads) are left out of both sides, parameters included.
Figures follow `analysis` (params: trainable; MACs: conv, linear and rbf).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .analysis import analyze
from .graph import INPUT, Graph
from .ops import Shape, counting_convention, fmt_shape

HEAD = "head"
NOTE = "Training-only layers (auxiliary heads) are left out of both networks: eval mode only."


def counts() -> str:
    """What the numbers count; the ops MACs count come from the registry, as in `archc summary`."""
    return (f"params: trainable; MACs: multiply-accumulates of {counting_convention()} layers, one sample, "
            "as in `archc summary`")


def __getattr__(name: str) -> str:
    if name == "COUNTS":  # computed when asked for, so it names the ops registered by then
        return counts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Stage:
    grid: str  # "35x35" or "head"
    params: int
    macs: int
    output: Shape  # of its last trunk layer
    layers: int
    first: str  # the module (outermost block instance, else layer) of its first layer
    last: str  # ... and of its last layer


@dataclass(frozen=True)
class Network:
    name: str
    title: Optional[str]
    input: Shape
    stages: list[Stage]
    params: int  # eval-mode layers only: the report's total_params minus train_only_params
    macs: int  # the report's total_macs
    train_only_params: int
    train_only_macs: int


@dataclass(frozen=True)
class StageRow:
    grid: str
    a: Optional[Stage]
    b: Optional[Stage]

    @property
    def d_params(self) -> int:
        return _get(self.b, "params") - _get(self.a, "params")

    @property
    def d_macs(self) -> int:
        return _get(self.b, "macs") - _get(self.a, "macs")


@dataclass(frozen=True)
class Diff:
    a: Network
    b: Network
    rows: list[StageRow]


def diff(a: Graph, b: Graph) -> Diff:
    """A and B per stage, paired by grid, largest grid first."""
    na, nb = network(a), network(b)
    by_grid = {s.grid: [s, None] for s in na.stages}
    for s in nb.stages:
        by_grid.setdefault(s.grid, [None, None])[1] = s
    rows = [StageRow(g, *by_grid[g]) for g in sorted(by_grid, key=_grid_order)]
    return Diff(na, nb, rows)


def network(graph: Graph) -> Network:
    """One network's eval-mode layers grouped into stages."""
    report = analyze(graph)  # its per-layer counts, so a diff's numbers are the summary's
    layer = {r.name: r for r in report.rows if r.kind == "layer"}
    order = [n for n in graph.order() if not graph.nodes[n].train_only]
    trunk = _trunk(graph, order)
    stages: dict[str, list[str]] = {}
    for n in order:
        stages.setdefault(_grid(graph.nodes[n].shape), []).append(n)

    def stage(grid: str, ids: list[str]) -> Stage:
        out = [n for n in ids if n in trunk] or ids
        return Stage(grid, sum(layer[n].params for n in ids), sum(layer[n].macs for n in ids),
                     graph.nodes[out[-1]].shape, len(ids), _module(graph, ids[0]), _module(graph, ids[-1]))

    train_only = [r for r in layer.values() if r.train_only]
    return Network(
        graph.name, graph.title, graph.input_shape,
        sorted((stage(g, ids) for g, ids in stages.items()), key=lambda s: _grid_order(s.grid)),
        params=sum(layer[n].params for n in order), macs=report.total_macs,
        train_only_params=sum(r.params for r in train_only), train_only_macs=report.train_only_macs,
    )


def _grid(shape: Shape) -> str:
    return f"{shape[1]}x{shape[2]}" if len(shape) == 3 and shape[1:] != (1, 1) else HEAD


def _grid_order(grid: str) -> tuple:
    if grid == HEAD:
        return (1, 0, 0)
    h, w = (int(d) for d in grid.split("x"))
    return (0, -h * w, -h)


def _trunk(graph: Graph, order: list[str]) -> set[str]:
    """The layers every path from the input to the outputs goes through, in eval mode.

    A layer is on the trunk when nothing before it is still read after it:
    then all later layers see the input only through it.
    """
    position = {n: i for i, n in enumerate(order)}
    last_read = {INPUT: -1}  # the position of a layer's last reader
    for n in order:
        for src in graph.nodes[n].inputs:
            last_read[src] = max(last_read.get(src, -1), position[n])
    trunk, reach = set(), last_read[INPUT]
    for i, n in enumerate(order):
        if reach <= i:
            trunk.add(n)
        reach = max(reach, last_read.get(n, i))
    return trunk


def _module(graph: Graph, node_id: str) -> str:
    """A layer's module for display: its outermost block instance ("features.6 inception_a"), else itself."""
    for scope_id in graph.nodes[node_id].scopes:
        block = graph.scopes[scope_id].block
        if block:
            return scope_id if scope_id.rsplit(".", 1)[-1] == block else f"{scope_id} {block}"
    return node_id


def _get(stage: Optional[Stage], what: str) -> int:
    return getattr(stage, what) if stage else 0


def _sign(x: float) -> str:
    return "+" if x > 0 else "\u2212" if x < 0 else ""  # a true minus sign, as wide as the plus


def _signed(n: int) -> str:
    return f"{_sign(n)}{abs(n):,}"


def _percent(d: int, base: int) -> str:
    return f" ({_sign(d)}{abs(100 * d / base):.1f}%)" if base else ""


def _cells(d: Diff) -> list[list[str]]:
    """The rows of every rendering: stages, then the totals (the last row)."""
    def num(s: Optional[Stage], what: str) -> str:
        return f"{getattr(s, what):,}" if s else ""

    def span(s: Optional[Stage]) -> str:
        return "" if not s else s.first if s.first == s.last else f"{s.first} \u2026 {s.last}"

    rows = [[r.grid, num(r.a, "params"), num(r.b, "params"), _signed(r.d_params), num(r.a, "macs"),
             num(r.b, "macs"), _signed(r.d_macs), fmt_shape(r.a.output) if r.a else "",
             fmt_shape(r.b.output) if r.b else "", span(r.a), span(r.b)] for r in d.rows]
    dp, dm = d.b.params - d.a.params, d.b.macs - d.a.macs
    rows.append(["total", f"{d.a.params:,}", f"{d.b.params:,}", _signed(dp) + _percent(dp, d.a.params),
                 f"{d.a.macs:,}", f"{d.b.macs:,}", _signed(dm) + _percent(dm, d.a.macs), "", "", "", ""])
    return rows


HEADERS = ("stage", "A params", "B params", "\u0394 params", "A MACs", "B MACs", "\u0394 MACs",
           "A output", "B output", "A modules", "B modules")


def _legend(d: Diff) -> str:
    return (f"A = {d.a.title or d.a.name} (input {fmt_shape(d.a.input)}), "
            f"B = {d.b.title or d.b.name} (input {fmt_shape(d.b.input)}); \u0394 = B \u2212 A.")


def to_table(d: Diff):  # -> rich.table.Table
    from rich.table import Table

    table = Table(title=_legend(d), title_justify="left")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("stage", "A modules", "B modules") else "right", no_wrap=True)
    *stages, total = _cells(d)
    for cells in stages:
        table.add_row(*cells)
    table.add_section()
    table.add_row(*total, style="bold")
    table.caption = f"Stages: layers grouped by output grid, 1x1 and flat outputs in head. {NOTE} {counts()}."
    table.caption_justify = "left"
    return table


def to_markdown(d: Diff) -> str:
    lines = [f"**{d.a.name}** vs **{d.b.name}**: {_legend(d)}", "",
             "| " + " | ".join(HEADERS) + " |",
             "| --- | " + " | ".join("---:" for _ in HEADERS[1:-2]) + " | --- | --- |"]
    *stages, total = _cells(d)
    for cells in stages:
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in total) + " |")
    lines += ["", f"_{NOTE} {counts()}._", ""]
    return "\n".join(lines)


def to_json(d: Diff) -> str:
    def side(n: Network) -> dict[str, Any]:
        return {"name": n.name, "title": n.title, "input": list(n.input), "params": n.params, "macs": n.macs,
                "train_only_params_excluded": n.train_only_params, "train_only_macs_excluded": n.train_only_macs}

    def stage(s: Optional[Stage]) -> Optional[dict[str, Any]]:
        return {**asdict(s), "output": list(s.output)} if s else None

    data = {
        "a": side(d.a), "b": side(d.b),
        "stages": [{"stage": r.grid, "a": stage(r.a), "b": stage(r.b),
                    "delta": {"params": r.d_params, "macs": r.d_macs}} for r in d.rows],
        "totals": {"a": {"params": d.a.params, "macs": d.a.macs}, "b": {"params": d.b.params, "macs": d.b.macs},
                   "delta": {"params": d.b.params - d.a.params, "macs": d.b.macs - d.a.macs}},
        "notes": [NOTE, counts()],
    }
    return json.dumps(data, indent=2)


def to_latex(d: Diff) -> str:
    """The diff as a booktabs table: stages, then the totals, with the notes under it."""
    from .report import latex_table

    *stages, total = _cells(d)
    return latex_table(list(HEADERS), "l" + "r" * (len(HEADERS) - 3) + "ll", stages, total=total,
                       caption=f"{d.a.name} vs {d.b.name}: {_legend(d)}", notes=(f"{NOTE} {counts()}.",))
