"""Shaped `Graph` -> `Report`: parameters, multiply-adds and activations.

In: a `Graph` after `infer_shapes`.  Out: a `Report` with one `Row` per
scope (block instance or named container) and per layer, in module order,
and the totals.  Counting conventions, used everywhere archc prints a
number:

- params: trainable parameters; buffers: elements of non-trainable state
  (BatchNorm running statistics and its step counter, fixed RBF prototypes).
- macs: multiply-accumulates of the ops that have a MACs rule only (`ops.counted_ops()`:
  conv, linear and rbf among the built-ins; the unit of
  the GoogLeNet paper's "ops" and of fvcore's "flops"); bias additions,
  BatchNorm, pooling, subsampling, activations and adds are not MACs.
- activations: elements of each layer's output; activation memory is that
  at fp32 (4 bytes each).  MACs and activations are for `batch` samples
  (one by default); parameters and buffers do not depend on the batch.
- counted work (`Counting`, `summary --include` / `--like`): the MACs plus
  the kinds of work other tools also count (bias adds, normalisation,
  activations, pooling, elementwise joins: `ops.registry.COST_KINDS`), or what fvcore,
  torchinfo or ptflops counts (`ops.registry.COUNTERS`), from each op's
  `costs` rule; the rows' and totals' MACs are then that count.
- total_macs counts what runs in eval mode; layers that run only in training
  mode (auxiliary heads) are summed in train_only_macs.  Parameters count
  every layer, as a state_dict does.
- receptive field: the size (in input pixels) of the input window one output
  unit depends on, and its jump (the input-pixel distance between adjacent
  output units), from each op's window (kernel, stride, dilation); padding
  is ignored, joins take the largest field of their inputs, and a flatten
  or global pool sees the whole map.
No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .errors import UserError
from .graph import INPUT, Graph, frozen
from .ops import OPS, RuleMemo, Shape, counting_convention
from .ops.registry import COST_KINDS, COUNTERS, Costs, RunsAs, _pointwise


@dataclass(frozen=True)
class Counting:
    """What the MACs column counts: the MACs plus the kinds of work in `include` (COST_KINDS names),
    or, with `like`, what that tool (a COUNTERS name) counts as its multiply-adds."""

    include: tuple[str, ...] = ()
    like: Optional[str] = None

    def __post_init__(self) -> None:
        if self.like is not None and self.include:
            raise UserError("--like and --include choose what is counted in two ways; give one of them")
        if self.like is not None and self.like not in COUNTERS:
            raise UserError(f"--like must be one of {', '.join(COUNTERS)}, got '{self.like}'")
        unknown = [k for k in self.include if k not in COST_KINDS]
        if unknown:
            raise UserError(f"--include takes {', '.join(COST_KINDS)} (comma-separated), got '{unknown[0]}'")

    @property
    def kinds(self) -> tuple[str, ...]:
        return COUNTERS[self.like].kinds if self.like is not None else self.include

    def of(self, macs: int, costs: Costs) -> int:
        """One node's count, per sample, from its MACs and its op's `costs`."""
        if self.like is not None and self.like in costs.tools:
            return costs.tools[self.like]
        return macs + sum(costs.kinds.get(k, 0) for k in self.kinds)

    def describe(self) -> str:
        """What is counted, for the totals: "as fvcore counts them: MACs + norm, pool by its rules", "MACs + bias"."""
        if self.like is not None:
            return f"as {self.like} counts them: MACs + {', '.join(self.kinds)} by its rules"
        return "MACs + " + ", ".join(self.include)

    def to_dict(self) -> dict[str, Any]:
        return {"like": self.like, "include": list(self.kinds)}


def counting(include: Optional[str] = None, like: Optional[str] = None) -> Optional[Counting]:
    """The `Counting` of `--include bias,norm` / `--like fvcore`; None when neither is given (plain MACs)."""
    kinds = tuple(dict.fromkeys(k.strip() for k in (include or "").split(",") if k.strip()))
    if like is None and not kinds:
        return None
    return Counting(kinds, like)


def named_row(rows: Any, name: str) -> Any:
    """The row called `name` (a layer's or block's dotted name) of a report's rows; KeyError if none."""
    for r in rows:
        if r.name == name:
            return r
    raise KeyError(name)


def _overwrite(node: Any, inputs: list[Shape]) -> dict[int, str]:
    return OPS[node.op].lowering(node.args, inputs).overwrite


def _facts(op: Any, node: Any, inputs: list[Shape], counting: Optional[Counting],
           how: Optional[RunsAs]) -> tuple[Any, int, int, int, str, Optional[tuple[int, ...]]]:
    """A layer's window, parameters, buffers, MACs (or `counting`'s count, for a node that runs as `how`), label
    and kernel (None for a pointwise op), by its op's rules."""
    a = node.args
    window = op.window(a, inputs)
    macs = op.macs(a, inputs, node.shape)
    if counting is not None:
        macs = counting.of(macs, op.costs(a, inputs, node.shape, how))
    return (window, *op.params(a, inputs), macs, op.label(a), tuple(window[0]) if op.window is not _pointwise else None)


def runs_as(graph: Graph) -> dict[str, RunsAs]:
    """How each node runs in the compiled model's forward: the input it overwrites, where
    `codegen.inplace_plan` lets it (an activation then runs as its in-place function, not its module)."""
    from .codegen import execution_order, inplace_plan

    # Which inputs an op may write into is part of its lowering, made here only for the nodes the plan asks
    # about (those with an input they may write into), once per distinct layer.
    found: RuleMemo[dict[int, str]] = RuleMemo()

    def overwrite(node_id: str) -> dict[int, str]:
        node = graph.nodes[node_id]
        inputs = graph.input_shapes(node_id)
        return found(node.op, node.args, inputs, _overwrite, node, inputs)

    plan = inplace_plan(graph, execution_order(graph), overwrite, {o.node for o in graph.outputs.values()})
    # One object per distinct way of running, so that the rules' memos (`analyze`) find equal ones by identity.
    shared = {into: RunsAs(into=into) for into in {None, *plan.values()}}
    return {n: shared[plan.get(n)] for n in graph.nodes}


@dataclass(frozen=True)
class Row:
    name: str  # full dotted name
    kind: str  # "layer" or "block" (a block instance) or "group" (a named container)
    op: str  # the op, the block template's name, or the container kind
    label: str  # e.g. "conv 7x7/2, 64 +BN +relu"
    depth: int  # 1 for top-level rows
    output_shape: Shape
    params: int
    buffers: int
    macs: int
    activations: int
    train_only: bool
    rf: tuple[int, int] = (1, 1)  # receptive field (h, w) in input pixels
    jump: tuple[int, int] = (1, 1)  # input pixels between adjacent output units
    kernel: Optional[tuple[int, int]] = None  # a windowed layer's kernel (h, w); None for the rest


@dataclass(frozen=True)
class Report:
    name: str
    title: Optional[str]
    paper: Optional[str]
    input: Shape
    rows: list[Row]
    total_params: int
    total_buffers: int
    total_macs: int  # eval mode
    train_only_macs: int
    total_activations: int  # eval mode, `batch` samples
    outputs: dict[str, Shape] = field(default_factory=dict)
    batch: int = 1
    output_strides: dict[str, tuple[int, int]] = field(default_factory=dict)  # input pixels per output step
    counting: Optional[Counting] = None  # what `macs` counts beyond the MACs (None: the MACs only)

    BYTES_PER_ACTIVATION = 4  # fp32

    @property
    def activation_bytes(self) -> int:
        """Memory of every eval-mode layer's output at fp32 (what a training step keeps, roughly)."""
        return self.total_activations * self.BYTES_PER_ACTIVATION

    def model_bytes(self, bytes_per_value: int) -> int:
        """Size of the parameters and buffers stored at `bytes_per_value` each (4 fp32, 2 fp16, 1 int8)."""
        return (self.total_params + self.total_buffers) * bytes_per_value

    def row(self, name: str) -> Row:
        return named_row(self.rows, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "paper": self.paper,
            "input": list(self.input),
            "total_params": self.total_params,
            "total_buffers": self.total_buffers,
            "total_macs": self.total_macs,
            "train_only_macs": self.train_only_macs,
            "total_activations": self.total_activations,
            "activation_bytes": self.activation_bytes,
            "model_bytes": {"fp32": self.model_bytes(4), "fp16": self.model_bytes(2), "int8": self.model_bytes(1)},
            "batch": self.batch,
            "outputs": {k: list(v) for k, v in self.outputs.items()},
            "output_strides": {k: list(v) for k, v in self.output_strides.items()},
            "conventions": conventions(self.counting),
            **({"counting": self.counting.to_dict()} if self.counting is not None else {}),
            "nodes": [
                {
                    "name": r.name, "kind": r.kind, "op": r.op, "label": r.label, "depth": r.depth,
                    "output_shape": list(r.output_shape), "params": r.params, "buffers": r.buffers,
                    "macs": r.macs, "activations": r.activations, "train_only": r.train_only,
                    "receptive_field": list(r.rf), "jump": list(r.jump),
                }
                for r in self.rows
            ],
        }


def conventions(counting: Optional[Counting] = None) -> str:
    """The counting conventions every summary states; which ops MACs count comes from the registry.
    With a `counting` (`--include`, `--like`), the first sentence says what the MACs column holds instead."""
    if counting is None:
        macs = (f"MACs: multiply-accumulates of {counting_convention()} layers (fvcore's 'flops'; BatchNorm, pooling, "
                "activations and adds count 0)")
    else:
        left = [k for k in COST_KINDS if k not in counting.kinds]
        macs = (f"MACs: {counting.describe()}, the MACs being multiply-accumulates of {counting_convention()} layers"
                + (f" ({', '.join(left)} count 0)" if left else ""))
    return (
        f"{macs}; total MACs: eval mode; params: trainable; buffers: BatchNorm "
        "statistics, fixed prototypes; activation memory: every eval-mode layer output at fp32; "
        "RF: receptive field in input pixels (padding ignored), jump: its stride"
    )


def __getattr__(name: str) -> str:
    # `CONVENTIONS`, computed when asked for, so it names the ops registered by then (plugins too).
    if name == "CONVENTIONS":
        return conventions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def analyze(graph: Graph, batch: int = 1, counting: Optional[Counting] = None) -> Report:
    """Count parameters, MACs, activations and receptive fields per layer and per scope.

    MACs and activations are for `batch` samples.  With `counting`, the MACs of every row and total
    are that count instead (the MACs plus the kinds it includes, or a tool's count).
    """
    per_node: dict[str, tuple[int, int, int, int, str, Optional[tuple[int, ...]]]] = {}  # for `batch` samples
    runs = runs_as(graph) if counting is not None else {}
    shapes = {node_id: node.shape for node_id, node in graph.nodes.items()}
    shapes[INPUT] = graph.input_shape  # as `Graph.shape_of`
    # Every rule's result for a layer in one memo entry, keyed on the input shapes alone (the output shape is
    # the shape rule's, a function of the same) and, when counting, on how the node runs (`runs_as` shares
    # one object per way of running, so its identity stands for its value).
    found: RuleMemo[tuple[Any, int, int, int, str, Optional[tuple[int, ...]]]] = RuleMemo()
    windows = {}  # each node's window: the receptive fields read them
    # One pass over the layers counts each into its innermost scope; each scope then adds its totals into its
    # parent's (a node's `scopes` are a chain of `Scope.parent` links, outermost first).
    scope_totals = {scope_id: [0, 0, 0, 0] for scope_id in graph.scopes}
    scope_runs_in_eval: set[str] = set()
    totals = [0, 0, 0, 0, 0]  # params, buffers, eval-mode MACs, train-only MACs, eval-mode activations
    for node_id, node in graph.nodes.items():
        inputs = [shapes[i] for i in node.inputs]
        if counting is None:
            facts = found(node.op, node.args, inputs, _facts, OPS[node.op], node, inputs, None, None)
        else:
            how = runs[node_id]
            facts = found(node.op, node.args, (id(how), *inputs), _facts, OPS[node.op], node, inputs, counting, how)
        window, params, buffers, macs, label, kernel = facts
        windows[node_id] = window
        macs *= batch
        acts = math.prod(node.shape) * batch
        per_node[node_id] = (params, buffers, macs, acts, label, kernel)
        if node.scopes:
            into = scope_totals[node.scopes[-1]]
            into[0] += params
            into[1] += buffers
            into[2] += macs
            into[3] += acts
        totals[0] += params
        totals[1] += buffers
        if node.train_only:
            totals[3] += macs
        else:
            totals[2] += macs
            totals[4] += acts
            if node.scopes:
                scope_runs_in_eval.add(node.scopes[-1])
    for scope in reversed(graph.scopes.values()):  # children come after their parents
        if scope.parent is not None:
            into, own = scope_totals[scope.parent], scope_totals[scope.id]
            into[0] += own[0]
            into[1] += own[1]
            into[2] += own[2]
            into[3] += own[3]
            if scope.id in scope_runs_in_eval:
                scope_runs_in_eval.add(scope.parent)
    fields = receptive_fields(graph, windows)

    depth = {}
    for scope in graph.scopes.values():  # parents come before children
        depth[scope.id] = depth[scope.parent] + 1 if scope.parent else 1

    rows: list[Row] = []
    opened: set[str] = set()
    for node in graph.nodes.values():
        for scope_id in node.scopes:
            if scope_id in opened:
                continue
            opened.add(scope_id)
            scope = graph.scopes[scope_id]
            out = graph.nodes[scope.output]
            scope_params, scope_buffers, scope_macs, scope_acts = scope_totals[scope_id]
            rf, jump = fields[scope.output]
            rows.append(frozen(Row, {
                "name": scope.id, "kind": "block" if scope.block else "group", "op": scope.block or scope.kind,
                "label": _scope_label(scope), "depth": depth[scope_id], "output_shape": out.shape,
                "params": scope_params, "buffers": scope_buffers, "macs": scope_macs, "activations": scope_acts,
                "train_only": scope_id not in scope_runs_in_eval, "rf": rf, "jump": jump, "kernel": None,
            }))
        params, buffers, macs, acts, label, kernel = per_node[node.id]
        rf, jump = fields[node.id]
        rows.append(frozen(Row, {
            "name": node.id, "kind": "layer", "op": node.op, "label": label, "depth": len(node.scopes) + 1,
            "output_shape": node.shape, "params": params, "buffers": buffers, "macs": macs, "activations": acts,
            "train_only": node.train_only, "rf": rf, "jump": jump, "kernel": kernel,
        }))

    return Report(
        name=graph.name, title=graph.title, paper=graph.paper, input=graph.input_shape, rows=rows,
        total_params=totals[0], total_buffers=totals[1], total_macs=totals[2], train_only_macs=totals[3],
        total_activations=totals[4],
        outputs={name: graph.nodes[o.node].shape for name, o in graph.outputs.items()},
        batch=batch,
        output_strides={name: fields[o.node][1] for name, o in graph.outputs.items()},
        counting=counting,
    )


def receptive_fields(graph: Graph, windows: Optional[Mapping[str, Any]] = None,
                     ) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Node id -> (receptive field, jump), each (h, w) in input pixels.

    The usual recurrence, per axis: field = field_in + (k - 1) * dilation * jump_in,
    jump = jump_in * stride, with (k, stride, dilation) from the op's window
    (`windows`, node id -> window, where the caller has them already).
    """
    fields: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {INPUT: ((1, 1), (1, 1))}
    for node_id in graph.topological:
        node = graph.nodes[node_id]
        if len(node.inputs) == 1:  # most layers: the field and jump of their one input
            rf, jump = fields[node.inputs[0]]
        else:
            ins = [fields[i] for i in node.inputs]
            rf = (max([f[0][0] for f in ins]), max([f[0][1] for f in ins]))
            jump = (max([f[1][0] for f in ins]), max([f[1][1] for f in ins]))
        k, s, d = (windows[node_id] if windows is not None
                   else OPS[node.op].window(node.args, graph.input_shapes(node_id)))
        fields[node_id] = (
            (rf[0] + (k[0] - 1) * d[0] * jump[0], rf[1] + (k[1] - 1) * d[1] * jump[1]),
            (jump[0] * s[0], jump[1] * s[1]),
        )
    return fields


def _scope_label(scope: Any) -> str:
    if scope.block:
        args = ", ".join(str(v) for v in scope.args.values())
        return f"{scope.block}({args})" if args else scope.block
    return scope.kind
