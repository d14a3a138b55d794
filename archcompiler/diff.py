"""Two shaped `Graph`s -> a `Diff`: the networks side by side per stage.

In: two `Graph`s after `infer_shapes`.  Out: a `Diff` with one `StageRow` per
stage, A's and B's figures and the deltas B - A, and its renderings (a rich
table, Markdown, JSON, LaTeX).  No torch.

Networks name and nest their modules differently, and take inputs of
different sizes (GoogLeNet 224x224, Inception-v3 299x299), so they are
aligned by stage, that is by downsampling step, not by module name or grid:

- a layer's stride is how many input pixels apart its output's units are:
  the product of the window strides on its way from the input (ResNet's
  conv1 and max pool make 4).  Stage "stride s" holds the layers of stride s:
  stage k comes after the k-th halving of the grid, whatever the grid's size
  (Inception-v3's 149x149 and 147x147 are both stride 2, and pair with
  GoogLeNet's 112x112).  A join's stride is its finest input's, so a
  squeeze-and-excitation gate (a 1x1 map multiplied back in) stays in its
  block's stage, and so do layers on a 1x1 map that feed a later feature map.
- the head is what comes after the last feature map: a layer whose output is
  flat or a 1x1 map and that no later feature map reads (the global pool,
  flatten and classifier, LeNet's C5), so pool + flatten + classifier stay
  together however a network reaches its vector.
- a stage holds every layer of its stride, not only one consecutive run:
  declaration order interleaves the branches of a reduction block (a 35x35
  conv, then a 17x17 one, then a 35x35 one), and each layer counts where its
  output, and so its work, is.
- a stage's output is the shape of its last trunk layer, the last layer of
  that stage that all data flows through (the concat after a block, not a
  branch inside the next reduction); a stage without one shows its last layer.
- stages run from the finest stride to the coarsest, head last; A's and B's
  stages pair by stride, and a stage only one network has gets an empty side,
  counted as zero in the deltas (so the stage deltas add up to the total's).
  When the inputs, or a pair's grids, differ, a note says so and lists the
  grids each stage paired.
- the stages hold what runs in eval mode.  Training-only layers (auxiliary
  heads) are left out of them, parameters included; the totals leave them out
  too unless `train_only` is set, and then they are one row of their own
  ("train-only") and in the totals.  A note says which.
Figures follow `analysis` (params: trainable; MACs: conv, linear and rbf).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .analysis import analyze
from .graph import INPUT, Graph
from .ops import OPS, Shape, counting_convention, fmt_shape
from .report import count

HEAD = "head"
TRAIN_ONLY = "train-only"
PAIRING = ("Stages are downsampling steps: stride s holds the layers whose outputs are s input pixels apart; "
           "1x1 and flat outputs after the last feature map are the head.")


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
    stage: str  # "stride 8", or "head"
    params: int
    macs: int
    output: Shape  # of its last trunk layer
    layers: int
    first: str  # the module (outermost block instance, else layer) of its first layer
    last: str  # ... and of its last layer

    @property
    def grid(self) -> str:
        """Its output's grid, "35x35" ("" for a flat output)."""
        return "x".join(str(n) for n in self.output[1:]) if len(self.output) == 3 else ""


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
    train_only_modules: tuple[str, ...]  # the modules of its training-only layers, in order ("aux1", "aux2")


@dataclass(frozen=True)
class StageRow:
    stage: str
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
    train_only: bool = False  # the totals include the training-only layers

    def total(self, n: Network, what: str) -> int:
        """A side's total params or MACs: eval mode, plus the training-only layers when they are included."""
        return getattr(n, what) + (getattr(n, f"train_only_{what}") if self.train_only else 0)


def diff(a: Graph, b: Graph, *, train_only: bool = False) -> Diff:
    """A and B per stage, paired by stride from the input, finest first, head last."""
    na, nb = network(a), network(b)
    by_stage = {s.stage: [s, None] for s in na.stages}
    for s in nb.stages:
        by_stage.setdefault(s.stage, [None, None])[1] = s
    rows = [StageRow(k, *by_stage[k]) for k in sorted(by_stage, key=_stage_order)]
    return Diff(na, nb, rows, train_only)


def network(graph: Graph) -> Network:
    """One network's eval-mode layers grouped into stages."""
    report = analyze(graph)  # its per-layer counts, so a diff's numbers are the summary's
    layer = {r.name: r for r in report.rows if r.kind == "layer"}
    order = [n for n in graph.order() if not graph.nodes[n].train_only]
    trunk = _trunk(graph, order)
    stages: dict[str, list[str]] = {}
    for n, stage in stage_of(graph, order).items():
        stages.setdefault(stage, []).append(n)

    def stage(name: str, ids: list[str]) -> Stage:
        out = [n for n in ids if n in trunk] or ids
        return Stage(name, sum(layer[n].params for n in ids), sum(layer[n].macs for n in ids),
                     graph.nodes[out[-1]].shape, len(ids), _module(graph, ids[0]), _module(graph, ids[-1]))

    train_only = [n for n in graph.order() if graph.nodes[n].train_only]
    return Network(
        graph.name, graph.title, graph.input_shape,
        sorted((stage(k, ids) for k, ids in stages.items()), key=lambda s: _stage_order(s.stage)),
        params=sum(layer[n].params for n in order), macs=report.total_macs,
        train_only_params=sum(layer[n].params for n in train_only), train_only_macs=report.train_only_macs,
        train_only_modules=tuple(dict.fromkeys(_outermost(graph, n) for n in train_only)),
    )


def stage_of(graph: Graph, order: list[str]) -> dict[str, str]:
    """Each eval-mode layer (in `order`) -> its stage: "stride 8" (its stride from the input), or "head"."""
    stride: dict[str, tuple[int, int]] = {INPUT: (1, 1)}
    for n in order:
        node = graph.nodes[n]
        # The finest grid among its inputs is the one it works on: a broadcast 1x1 gate does not coarsen it.
        h, w = min((stride[i] for i in node.inputs), key=lambda s: (s[0] * s[1], s), default=(1, 1))
        if _is_map(node.shape):
            sh, sw = OPS[node.op].window(node.args, graph.input_shapes(n))[1]
            h, w = h * sh, w * sw
        stride[n] = (h, w)
    feeds_a_map: set[str] = set()  # layers that a later feature map reads, directly or not
    for n in reversed(order):
        if _is_map(graph.nodes[n].shape) or n in feeds_a_map:
            feeds_a_map.update(graph.nodes[n].inputs)
    return {n: HEAD if not _is_map(graph.nodes[n].shape) and n not in feeds_a_map else _stride_name(stride[n])
            for n in order}


def _is_map(shape: Shape) -> bool:
    """A feature map: three dimensions, and not 1x1 (a global pool's output is a vector in a map's shape)."""
    return len(shape) == 3 and shape[1:] != (1, 1)


def _stride_name(stride: tuple[int, int]) -> str:
    h, w = stride
    return f"stride {h}" if h == w else f"stride {h}x{w}"


def _stage_order(stage: str) -> tuple:
    if stage == HEAD:
        return (1, 0, 0)
    h, _, w = stage.removeprefix("stride ").partition("x")
    return (0, int(h) * int(w or h), int(h))


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


def _outermost(graph: Graph, node_id: str) -> str:
    """A layer's outermost scope ("aux1"), else itself."""
    scopes = graph.nodes[node_id].scopes
    return scopes[0] if scopes else node_id


def _get(stage: Optional[Stage], what: str) -> int:
    return getattr(stage, what) if stage else 0


def _sign(x: float) -> str:
    return "+" if x > 0 else "\u2212" if x < 0 else ""  # a true minus sign, as wide as the plus


def _signed(n: int, units: str = "raw") -> str:
    return f"{_sign(n)}{count(abs(n), units)}"


def _percent(d: int, base: int) -> str:
    return f" ({_sign(d)}{abs(100 * d / base):.1f}%)" if base else ""


def _span(modules: tuple[str, ...]) -> str:
    return "" if not modules else modules[0] if len(modules) == 1 else f"{modules[0]} \u2026 {modules[-1]}"


def total_label(d: Diff) -> str:
    """The totals row's name, saying whether training-only layers are in it."""
    if not (d.a.train_only_modules or d.b.train_only_modules):
        return "total"
    return "total, with train-only" if d.train_only else "total, eval mode"


def _cells(d: Diff, units: str = "raw") -> list[list[str]]:
    """The rows of every rendering: stages, [the training-only layers], then the totals (the last row);
    `units`: "raw" (exact) or "si" (13.0M), as `report.count` writes them."""
    def num(s: Optional[Stage], what: str) -> str:
        return count(getattr(s, what), units) if s else ""

    def span(s: Optional[Stage]) -> str:
        return "" if not s else _span((s.first, s.last) if s.first != s.last else (s.first,))

    rows = [[r.stage, num(r.a, "params"), num(r.b, "params"), _signed(r.d_params, units), num(r.a, "macs"),
             num(r.b, "macs"), _signed(r.d_macs, units), fmt_shape(r.a.output) if r.a else "",
             fmt_shape(r.b.output) if r.b else "", span(r.a), span(r.b)] for r in d.rows]
    if d.train_only and (d.a.train_only_modules or d.b.train_only_modules):
        a, b = d.a, d.b
        rows.append([TRAIN_ONLY, count(a.train_only_params, units), count(b.train_only_params, units),
                     _signed(b.train_only_params - a.train_only_params, units), count(a.train_only_macs, units),
                     count(b.train_only_macs, units), _signed(b.train_only_macs - a.train_only_macs, units), "", "",
                     _span(a.train_only_modules), _span(b.train_only_modules)])
    (pa, pb), (ma, mb) = ((d.total(d.a, w), d.total(d.b, w)) for w in ("params", "macs"))
    rows.append([total_label(d), count(pa, units), count(pb, units), _signed(pb - pa, units) + _percent(pb - pa, pa),
                 count(ma, units), count(mb, units), _signed(mb - ma, units) + _percent(mb - ma, ma), "", "", "", ""])
    return rows


HEADERS = ("stage", "A params", "B params", "\u0394 params", "A MACs", "B MACs", "\u0394 MACs",
           "A output", "B output", "A modules", "B modules")


def _legend(d: Diff) -> str:
    return (f"A = {d.a.title or d.a.name} (input {fmt_shape(d.a.input)}), "
            f"B = {d.b.title or d.b.name} (input {fmt_shape(d.b.input)}); \u0394 = B \u2212 A.")


def pairing_note(d: Diff) -> Optional[str]:
    """How stages were paired, when the inputs or the paired grids differ; None when every pair shares its grid."""
    pairs = [f"{r.stage} pairs {r.a.grid} with {r.b.grid}" for r in d.rows
             if r.a and r.b and r.stage != HEAD and r.a.grid != r.b.grid]
    if d.a.input == d.b.input and not pairs:
        return None
    lead = (f"The inputs differ (A {fmt_shape(d.a.input)}, B {fmt_shape(d.b.input)})" if d.a.input != d.b.input
            else "The grids differ")
    how = "stages are paired by downsampling step (stride from the input), not by grid"
    return f"{lead}: {how}" + (f": {'; '.join(pairs)}." if pairs else ".")


def totals_note(d: Diff) -> str:
    """Whether the totals hold the training-only layers (auxiliary heads), and how much those are."""
    def side(letter: str, n: Network) -> str:
        if not n.train_only_modules:
            return f"{letter} has none"
        return (f"{letter}'s {', '.join(n.train_only_modules)}: {n.train_only_params:,} params, "
                f"{n.train_only_macs:,} MACs")

    if not (d.a.train_only_modules or d.b.train_only_modules):
        return "Neither network has training-only layers (auxiliary heads): the totals are the whole networks."
    which = f"{side('A', d.a)}; {side('B', d.b)}"
    if d.train_only:
        return (f"The totals include the training-only layers (auxiliary heads), shown in the train-only row "
                f"({which}); the stages are eval mode.")
    return (f"The totals and stages are eval mode: training-only layers (auxiliary heads) are left out ({which}); "
            f"--include-train-only adds them to the totals.")


def notes(d: Diff) -> list[str]:
    """The sentences under every rendering: pairing, [inputs], totals, what is counted."""
    return [PAIRING, *filter(None, [pairing_note(d)]), totals_note(d), counts() + "."]


# How the table narrows to a terminal's width, step by step until it fits (then it wraps, never cuts):
# the module spans go first (the stage and the outputs already say where a row is), then numbers take
# SI prefixes, then the outputs go.
FIT_STEPS = (("drop", ("A modules", "B modules")), ("si", ()), ("drop", ("A output", "B output")))


def _table(d: Diff, headers: tuple[str, ...], units: str, overflow: str = "ignore"):
    from rich.table import Table

    table = Table(title=_legend(d), title_justify="left")
    keep = [HEADERS.index(h) for h in headers]
    for h in headers:
        table.add_column(h, justify="left" if h in ("stage", "A modules", "B modules") else "right",
                         no_wrap=overflow != "fold", overflow=overflow)
    *stages, total = _cells(d, units)
    for cells in stages:
        table.add_row(*(cells[i] for i in keep))
    table.add_section()
    table.add_row(*(total[i] for i in keep), style="bold")
    return table


def to_table(d: Diff, width: Optional[int] = None):  # -> rich.table.Table
    """The diff as a rich table, fitted to `width` columns by `FIT_STEPS` (None: as wide as it needs);
    what was left out to fit is said in the caption."""
    from .report import fit_to_width

    table, left_out = fit_to_width(lambda cols, units, overflow="ignore": _table(d, cols, units, overflow),
                                   list(HEADERS), "raw", FIT_STEPS, width, str)
    fitted = [f"To fit {width} columns: {', '.join(left_out)} (a wider terminal, COLUMNS=N or --format "
              "markdown shows all)."] if left_out else []
    table.caption = " ".join([*notes(d), *fitted])
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
    lines += ["", f"_{' '.join(notes(d))}_", ""]
    return "\n".join(lines)


def to_json(d: Diff) -> str:
    def side(n: Network) -> dict[str, Any]:
        return {"name": n.name, "title": n.title, "input": list(n.input), "params": n.params, "macs": n.macs,
                "train_only_params": n.train_only_params, "train_only_macs": n.train_only_macs,
                "train_only_modules": list(n.train_only_modules)}

    def stage(s: Optional[Stage]) -> Optional[dict[str, Any]]:
        return {**asdict(s), "output": list(s.output), "grid": s.grid} if s else None

    def totals(n: Network) -> dict[str, int]:
        return {"params": d.total(n, "params"), "macs": d.total(n, "macs")}

    ta, tb = totals(d.a), totals(d.b)
    data = {
        "a": side(d.a), "b": side(d.b),
        "stages": [{"stage": r.stage, "a": stage(r.a), "b": stage(r.b),
                    "delta": {"params": r.d_params, "macs": r.d_macs}} for r in d.rows],
        "totals": {"train_only_included": d.train_only, "a": ta, "b": tb,
                   "delta": {k: tb[k] - ta[k] for k in ta}},
        "notes": notes(d),
    }
    return json.dumps(data, indent=2)


def to_latex(d: Diff) -> str:
    """The diff as a booktabs table: stages, then the totals, with the notes under it."""
    from .report import latex_table

    *stages, total = _cells(d)
    return latex_table(list(HEADERS), "l" + "r" * (len(HEADERS) - 3) + "ll", stages, total=total,
                       caption=f"{d.a.name} vs {d.b.name}: {_legend(d)}", notes=(" ".join(notes(d)),))
