"""Shaped `Graph` -> `TrainingMemory`: what one training step holds, without torch.

In: a `Graph` after `infer_shapes`, an optimizer (`OPTIMIZERS`), a dtype (`DTYPES`) and a batch size.
Out: a `TrainingMemory` with one `MemoryRow` per scope (block instance or named container) and per
layer, in the summary's order, and the totals, in bytes:

- parameters: the trainable parameters at the dtype (the whole model cast to it, as `model.to(dtype)`
  does: under bf16 or fp16 the parameters, gradients and optimizer state are bf16 or fp16 too);
- gradients: one per trainable parameter, the same size;
- optimizer state: sgd none; momentum one buffer per parameter (torch's `momentum_buffer`); adam and
  adamw two (`exp_avg`, `exp_avg_sq`); torch's Adam also keeps a scalar `step` per parameter tensor,
  which is not counted (a few hundred scalars);
- saved activations: the tensors autograd keeps for backward in training mode, from each op's `saves`
  rule in the registry (`ops.registry.Saved`), for `batch` samples.  A tensor is counted once, by
  storage: a relu's output that the next conv also keeps, a view (a flatten, a chunk) of a map that
  is kept whole, a map written into in place (`codegen.inplace_plan`, the default forward's) are one
  tensor each; each is counted in the row of the first layer (in execution order) that keeps it.
  Parameters and buffers that an op keeps (a conv's weight, BatchNorm's running statistics) are
  counted as parameters, not here.  A layer whose output needs no gradient (nothing trainable
  before it) keeps nothing.  An op registered without a rule (a plugin's) is assumed to keep its
  inputs, and the report says so (`assumed`).

Buffers (BatchNorm's running statistics) are left out: `archc summary` lists them.  The numbers
are tested against torch's own count (`torch.autograd.graph.saved_tensors_hooks` over one training
step of `archcompiler.build(...)`'s model) in tests/test_memory.py; docs/summaries.md says where a
rule is exact and where it assumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

from .analysis import named_row, runs_as
from .codegen import execution_order
from .errors import UserError
from .graph import INPUT, Graph
from .ops import OPS
from .ops.registry import RunsAs, Saved, Saves

OPTIMIZERS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}  # state tensors per parameter
DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2}  # bytes per value
MB = 1_000_000  # the totals' MB are powers of 1000, as the summary's


@dataclass(frozen=True)
class MemoryRow:
    name: str  # full dotted name
    kind: str  # "layer", "block" (a block instance) or "group" (a named container)
    op: str
    label: str
    depth: int  # 1 for top-level rows
    train_only: bool
    params: int  # trainable parameters (elements)
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    saved_bytes: int  # activations kept for backward that this row counts first
    saved: tuple[str, ...] = ()  # a layer's: what those are ("input", "max indices", ...)
    assumed: bool = False  # a layer whose op has no `saves` rule: assumed to keep its inputs

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.saved_bytes


@dataclass(frozen=True)
class TrainingMemory:
    name: str
    title: Optional[str]
    input: tuple[int, ...]
    batch: int
    optimizer: str
    dtype: str
    inplace: bool
    rows: list[MemoryRow]
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    saved_bytes: int
    assumed: tuple[str, ...] = ()  # ops (plugins') whose layers were assumed to keep their inputs

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.saved_bytes

    @property
    def state_per_parameter(self) -> int:
        return OPTIMIZERS[self.optimizer]

    def row(self, name: str) -> MemoryRow:
        return named_row(self.rows, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "input": list(self.input), "batch": self.batch,
            "optimizer": self.optimizer, "optimizer_states_per_parameter": self.state_per_parameter,
            "dtype": self.dtype, "bytes_per_value": DTYPES[self.dtype], "inplace": self.inplace,
            "parameter_bytes": self.parameter_bytes, "gradient_bytes": self.gradient_bytes,
            "optimizer_bytes": self.optimizer_bytes, "saved_activation_bytes": self.saved_bytes,
            "total_bytes": self.total_bytes, "assumed": list(self.assumed), "conventions": conventions(self),
            "nodes": [
                {"name": r.name, "kind": r.kind, "op": r.op, "label": r.label, "depth": r.depth,
                 "train_only": r.train_only, "params": r.params, "parameter_bytes": r.parameter_bytes,
                 "gradient_bytes": r.gradient_bytes, "optimizer_bytes": r.optimizer_bytes,
                 "saved_activation_bytes": r.saved_bytes, "total_bytes": r.total_bytes,
                 **({"saved": list(r.saved), "assumed": r.assumed} if r.kind == "layer" else {})}
                for r in self.rows
            ],
        }


def conventions(mem: TrainingMemory) -> str:
    """What the numbers count, in one sentence (every rendering states it)."""
    states = {0: "no state", 1: "one buffer per parameter", 2: "two buffers per parameter"}[mem.state_per_parameter]
    return (f"training memory at {mem.dtype} ({DTYPES[mem.dtype]} bytes a value, the whole model cast to it): "
            f"parameters, their gradients, {mem.optimizer}'s state ({states}; Adam's scalar step not counted), "
            f"and the activations autograd saves for backward in one training step of batch {mem.batch}, "
            "each tensor once, in the row of the first layer that keeps it (parameters it keeps are "
            "parameters; max-pool indices are int64); buffers not included")


def check_options(optimizer: str, dtype: str, batch: int) -> None:
    """A `UserError` naming the choices for an optimizer, dtype or batch size that is not one."""
    if optimizer not in OPTIMIZERS:
        raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got '{str(optimizer)[:40]}'")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got '{str(dtype)[:40]}'")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"--batch must be at least 1, got {str(batch)[:40]}")


def _assumed_rule(n_inputs: int) -> Saves:
    return Saves(tuple(Saved(k, what="input (assumed)") for k in range(n_inputs)))


def _saved_per_layer(graph: Graph, itemsize: int, batch: int,
                     inplace: bool) -> tuple[dict[str, int], dict[str, list[str]], set[str]]:
    """Node id -> bytes it keeps first, what those tensors are, and the nodes whose rule was assumed."""
    order = execution_order(graph)
    runs = runs_as(graph) if inplace else {n: RunsAs(inplace=False) for n in graph.nodes}  # as lower() runs them
    storage: dict[str, str] = {INPUT: INPUT}  # value -> the storage it lives in (a view's: its base's)
    nbytes: dict[str, int] = {INPUT: math.prod(graph.input_shape) * batch * itemsize}
    needs_grad: dict[str, bool] = {INPUT: False}
    seen: set[Union[str, tuple[str, int]]] = set()
    saved: dict[str, int] = {}
    what: dict[str, list[str]] = {}
    assumed: set[str] = set()
    for n in order:
        node = graph.nodes[n]
        op, shapes = OPS[node.op], graph.input_shapes(n)
        if op.saves is None:
            rule = _assumed_rule(len(node.inputs))
            assumed.add(n)
        else:
            rule = op.saves(node.args, shapes, node.shape, runs[n])
        needs_grad[n] = any(needs_grad[i] for i in node.inputs) or op.params(node.args, shapes)[0] > 0
        if rule.view is not None:
            storage[n] = storage[node.inputs[rule.view]]
        else:
            storage[n] = n
            nbytes[n] = math.prod(node.shape) * batch * itemsize
        saved[n], what[n] = 0, []
        if not needs_grad[n]:  # autograd records nothing for it
            continue
        for k, tensor in enumerate(rule.tensors):
            if tensor.needs_grad is not None and not any(needs_grad[node.inputs[j]] for j in tensor.needs_grad):
                continue
            key: Union[str, tuple[str, int]]
            if tensor.source is None:
                key = (n, k)
                size = (math.prod(tensor.shape) * (batch if tensor.per_sample else 1)
                        * (tensor.itemsize or itemsize))
            else:
                key = storage[n] if tensor.source == "output" else storage[node.inputs[tensor.source]]
                size = nbytes[key]
            if key in seen:
                continue
            seen.add(key)
            saved[n] += size
            what[n].append(tensor.what or ("output" if tensor.source == "output" else
                                           f"input {tensor.source}" if tensor.source is not None else "own tensor"))
    return saved, what, assumed


def training_memory(graph: Any, *, optimizer: str = "adam", dtype: str = "fp32", batch: int = 1,
                    inplace: bool = True) -> TrainingMemory:
    """The training memory of `graph` (a `Graph`, or a spec, path or zoo model name to compile) at
    `dtype` with `optimizer`, for `batch` samples; `inplace`: the forward `lower(inplace=...)` builds."""
    check_options(optimizer, dtype, batch)
    if not isinstance(graph, Graph):
        from . import compile_graph

        graph = compile_graph(graph)
    itemsize, states = DTYPES[dtype], OPTIMIZERS[optimizer]
    saved, what, assumed = _saved_per_layer(graph, itemsize, batch, inplace)
    params = {n: OPS[node.op].params(node.args, graph.input_shapes(n))[0] for n, node in graph.nodes.items()}

    def row(name: str, kind: str, op: str, label: str, depth: int, train_only: bool, members: list[str],
            node: Optional[str] = None) -> MemoryRow:
        p = sum(params[m] for m in members)
        return MemoryRow(name, kind, op, label, depth, train_only, p, p * itemsize, p * itemsize,
                         p * itemsize * states, sum(saved[m] for m in members),
                         tuple(what[node]) if node else (), node in assumed)

    members: dict[str, list[str]] = {s: [] for s in graph.scopes}
    for node in graph.nodes.values():
        for s in node.scopes:
            members[s].append(node.id)
    depth: dict[str, int] = {}
    for scope in graph.scopes.values():  # parents come before children
        depth[scope.id] = depth[scope.parent] + 1 if scope.parent else 1
    rows: list[MemoryRow] = []
    opened: set[str] = set()
    for node in graph.nodes.values():
        for s in node.scopes:
            if s not in opened:
                opened.add(s)
                scope = graph.scopes[s]
                label = scope.block or scope.kind
                rows.append(row(s, "block" if scope.block else "group", label, label, depth[s],
                                all(graph.nodes[m].train_only for m in members[s]), members[s]))
        op = OPS[node.op]
        rows.append(row(node.id, "layer", node.op, op.label(node.args), len(node.scopes) + 1, node.train_only,
                        [node.id], node.id))
    total = sum(params.values())
    return TrainingMemory(
        graph.name, graph.title, graph.input_shape, batch, optimizer, dtype, inplace, rows,
        total * itemsize, total * itemsize, total * itemsize * states, sum(saved.values()),
        tuple(sorted({graph.nodes[n].op for n in assumed})))


# ------------------------------------------------------------------------------------ rendering
# The summary's forms (report.py's table style, fitted to the width; JSON, CSV, Markdown, LaTeX), with
# columns of bytes; `--units si` prints them in kB, MB, GB (powers of 1000).

COLUMNS = ("name", "op", "params", "weights", "grads", "optimizer", "saved", "total")
HEADERS = {"name": "name", "op": "op / block", "params": "params", "weights": "parameters", "grads": "gradients",
           "optimizer": "optimizer", "saved": "saved act.", "total": "total"}
COLUMN_ALIASES = {"num_params": "params", "parameters": "weights", "gradients": "grads", "optimizer_state": "optimizer",
                  "activations": "saved", "saved_activations": "saved", "op_block": "op", "block": "op"}
# How the table fits a narrow terminal, in this order, until it fits (chosen columns stay; numbers may shorten).
FIT_STEPS = (("si", None), ("drop", "params"), ("drop", "op"))


def _cells(mem: TrainingMemory, r: Any, units: str) -> dict[str, str]:
    from .report import count, size

    return {"op": r.label, "params": count(r.params, units), "weights": size(r.parameter_bytes, units),
            "grads": size(r.gradient_bytes, units), "optimizer": size(r.optimizer_bytes, units),
            "saved": size(r.saved_bytes, units), "total": size(r.total_bytes, units)}


def _total_cells(mem: TrainingMemory, units: str) -> dict[str, str]:
    from .report import count, size

    return {"op": "", "params": count(mem.parameter_bytes // DTYPES[mem.dtype], units),
            "weights": size(mem.parameter_bytes, units), "grads": size(mem.gradient_bytes, units),
            "optimizer": size(mem.optimizer_bytes, units), "saved": size(mem.saved_bytes, units),
            "total": size(mem.total_bytes, units)}


def parse_columns(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """`"saved,total"` -> ("name", "saved", "total"); None: every column."""
    from .report import choose_columns

    return choose_columns(text, COLUMNS, COLUMN_ALIASES, "training-memory column",
                          "with --train, choose from " + ", ".join(COLUMNS[1:]))


def _bytes(n: int) -> str:
    from .report import si

    return f"{n:,} bytes ({si(n, 'B')})"


def totals_lines(mem: TrainingMemory) -> list[str]:
    """The totals, each naming its unit (bytes, and MB or what suits), and what was assumed."""
    params = mem.parameter_bytes // DTYPES[mem.dtype]
    lines = [
        f"parameters: {params:,} at {mem.dtype}, {_bytes(mem.parameter_bytes)}",
        f"gradients: {_bytes(mem.gradient_bytes)}",
        f"optimizer state ({mem.optimizer}, {mem.state_per_parameter} per parameter): {_bytes(mem.optimizer_bytes)}",
        f"saved activations (batch {mem.batch}): {_bytes(mem.saved_bytes)}",
        f"total: {_bytes(mem.total_bytes)}",
    ]
    if mem.assumed:
        lines.append(f"assumed: {', '.join(mem.assumed)} {'has' if len(mem.assumed) == 1 else 'have'} no rule for "
                     "what autograd saves; each such layer is assumed to keep its inputs")
    return lines


def _title(mem: TrainingMemory) -> str:
    from .report import fmt_shape

    return (f"training memory: {mem.title or mem.name}  (input {fmt_shape(mem.input)}, batch {mem.batch}, "
            f"{mem.optimizer}, {mem.dtype})")


def _build_table(mem: TrainingMemory, rows: list[Any], columns: tuple[str, ...], units: str, overflow: str = "ellipsis"):
    from rich.table import Table

    from .report import tree_prefixes

    table = Table(title=_title(mem) + (", bytes" if units == "raw" else ""), title_justify="left")
    for c in columns:
        table.add_column(HEADERS[c], justify="left" if c in ("name", "op") else "right", no_wrap=overflow != "fold",
                         overflow=overflow)
    for r, prefix in zip(rows, tree_prefixes(rows)):
        style = "bold" if r.kind == "block" else ("dim" if r.train_only else None)
        name = prefix + (r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name) + (" *" if r.train_only else "")
        name += " (assumed)" if r.assumed else ""
        cells = _cells(mem, r, units)
        table.add_row(*[name if c == "name" else cells[c] for c in columns], style=style)
    table.add_section()
    totals = _total_cells(mem, units)
    table.add_row(*["total" if c == "name" else totals[c] for c in columns], style="bold")
    return table


def to_table(mem: TrainingMemory, depth: Any = "modules", units: str = "raw", *, width: Optional[int] = None,
             columns: Optional[tuple[str, ...]] = None):  # -> rich.console.Group
    """The tree table fitted to `width` by `FIT_STEPS`, then the totals and the conventions."""
    from rich.console import Group
    from rich.text import Text

    from .report import fit_to_width, visible

    rows = visible(mem, depth)  # type: ignore[arg-type]  (it reads only .rows)
    table, notes = fit_to_width(
        lambda cols, u, overflow="ellipsis": _build_table(mem, rows, cols, u, overflow=overflow),
        list(columns or COLUMNS), units, FIT_STEPS, width, HEADERS.__getitem__, keep_columns=columns is not None)
    foot = ["* runs in training mode only"] if any(r.train_only for r in rows) else []
    if notes:
        foot.append(f"to fit {width} columns: {', '.join(notes)} (--columns chooses; a wider terminal or "
                    "COLUMNS=N shows more)")
    return Group(table, Text("\n".join([*totals_lines(mem), *foot, conventions(mem) + "."])))


def to_json(mem: TrainingMemory, depth: Any = None, units: str = "raw") -> str:
    import json

    from .report import visible

    data = mem.to_dict()
    if depth is not None:
        names = {r.name for r in visible(mem, depth)}  # type: ignore[arg-type]
        data["nodes"] = [n for n in data["nodes"] if n["name"] in names]
    return json.dumps(data, indent=2)


def to_csv(mem: TrainingMemory, depth: Any = None, units: str = "raw") -> str:
    import csv
    import io

    from .report import visible

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "kind", "op", "params", "parameter_bytes", "gradient_bytes", "optimizer_bytes",
                     "saved_activation_bytes", "total_bytes", "train_only", "saved", "assumed"])
    for r in visible(mem, depth):  # type: ignore[arg-type]
        writer.writerow([r.name, r.kind, r.op, r.params, r.parameter_bytes, r.gradient_bytes, r.optimizer_bytes,
                         r.saved_bytes, r.total_bytes, str(r.train_only).lower(), "; ".join(r.saved),
                         str(r.assumed).lower()])
    return out.getvalue()


def to_markdown(mem: TrainingMemory, depth: Any = "modules", units: str = "raw") -> str:
    from .report import visible

    cols = COLUMNS[1:]
    unit = " (bytes)" if units == "raw" else ""
    lines = [f"**{_title(mem)}**{unit}", "", "| name | " + " | ".join(HEADERS[c] for c in cols) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in cols[1:]) + " |"]
    for r in visible(mem, depth):  # type: ignore[arg-type]
        name = "&nbsp;&nbsp;" * (r.depth - 1) + f"`{r.name}`" + (" (train only)" if r.train_only else "")
        cells = _cells(mem, r, units)
        lines.append(f"| {name} | " + " | ".join(cells[c] for c in cols) + " |")
    totals = _total_cells(mem, units)
    lines.append("| **total** | | " + " | ".join(f"**{totals[c]}**" for c in cols[1:]) + " |")
    lines += ["", *(f"- {line}" for line in totals_lines(mem)), "", f"_{conventions(mem)}._", ""]
    return "\n".join(lines)


def to_latex(mem: TrainingMemory, depth: Any = "modules", units: str = "raw") -> str:
    from .report import latex_escape, latex_table, visible

    cols = COLUMNS[1:]
    rows = []
    for r in visible(mem, depth):  # type: ignore[arg-type]
        tail = r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name
        name = r"\quad " * (r.depth - 1) + r"\texttt{" + latex_escape(tail) + "}" + (r"$^*$" if r.train_only else "")
        cells = _cells(mem, r, units)
        rows.append([name, *(cells[c] for c in cols)])
    totals = _total_cells(mem, units)
    notes = [*totals_lines(mem)]
    if any(r.train_only for r in visible(mem, depth)):  # type: ignore[arg-type]
        notes.append("* runs in training mode only.")
    return latex_table([HEADERS[c] for c in COLUMNS], "ll" + "r" * (len(cols) - 1), rows,
                       total=["total", *(totals[c] for c in cols)], caption=_title(mem) + (", bytes" if units == "raw" else ""),
                       notes=(*notes, conventions(mem) + "."), raw_first=True)


RENDERERS = {"json": to_json, "csv": to_csv, "markdown": to_markdown, "latex": to_latex}
