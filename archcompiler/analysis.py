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
from typing import Any, Optional

from .graph import INPUT, Graph
from .ops import OPS, Shape, counting_convention
from .ops.registry import _pointwise


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

    BYTES_PER_ACTIVATION = 4  # fp32

    @property
    def activation_bytes(self) -> int:
        """Memory of every eval-mode layer's output at fp32 (what a training step keeps, roughly)."""
        return self.total_activations * self.BYTES_PER_ACTIVATION

    def model_bytes(self, bytes_per_value: int) -> int:
        """Size of the parameters and buffers stored at `bytes_per_value` each (4 fp32, 2 fp16, 1 int8)."""
        return (self.total_params + self.total_buffers) * bytes_per_value

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

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
            "conventions": conventions(),
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


def conventions() -> str:
    """The counting conventions every summary states; which ops MACs count comes from the registry."""
    return (
        f"MACs: multiply-accumulates of {counting_convention()} layers (fvcore's 'flops'; BatchNorm, pooling, "
        "activations and adds count 0); total MACs: eval mode; params: trainable; buffers: BatchNorm "
        "statistics, fixed prototypes; activation memory: every eval-mode layer output at fp32; "
        "RF: receptive field in input pixels (padding ignored), jump: its stride"
    )


def __getattr__(name: str) -> str:
    # `CONVENTIONS`, computed when asked for, so it names the ops registered by then (plugins too).
    if name == "CONVENTIONS":
        return conventions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def analyze(graph: Graph, batch: int = 1) -> Report:
    """Count parameters, MACs, activations and receptive fields per layer and per scope.

    MACs and activations are for `batch` samples.
    """
    per_node: dict[str, tuple[int, int, int, int]] = {}
    for node in graph.nodes.values():
        op = OPS[node.op]
        inputs = graph.input_shapes(node.id)
        params, buffers = op.params(node.args, inputs)
        macs = op.macs(node.args, inputs, node.shape)
        per_node[node.id] = (params, buffers, macs * batch, math.prod(node.shape) * batch)
    fields = receptive_fields(graph)

    depth = {}
    for scope in graph.scopes.values():  # parents come before children
        depth[scope.id] = depth[scope.parent] + 1 if scope.parent else 1
    # One pass over the layers adds each into every scope around it.
    scope_totals = {scope_id: [0, 0, 0, 0] for scope_id in graph.scopes}
    scope_runs_in_eval: set[str] = set()
    for node in graph.nodes.values():
        counts = per_node[node.id]
        for scope_id in node.scopes:
            into = scope_totals[scope_id]
            for i in range(4):
                into[i] += counts[i]
        if not node.train_only:
            scope_runs_in_eval.update(node.scopes)

    rows: list[Row] = []
    opened: set[str] = set()
    for node in graph.nodes.values():
        for scope_id in node.scopes:
            if scope_id in opened:
                continue
            opened.add(scope_id)
            scope = graph.scopes[scope_id]
            out = graph.nodes[scope.output]
            rows.append(Row(
                scope.id, "block" if scope.block else "group", scope.block or scope.kind,
                _scope_label(scope), depth[scope_id], out.shape, *scope_totals[scope_id],
                scope_id not in scope_runs_in_eval, *fields[scope.output],
            ))
        params, buffers, macs, acts = per_node[node.id]
        op = OPS[node.op]
        kernel = (tuple(op.window(node.args, graph.input_shapes(node.id))[0])
                  if op.window is not _pointwise else None)
        rows.append(Row(
            node.id, "layer", node.op, op.label(node.args), len(node.scopes) + 1, node.shape,
            params, buffers, macs, acts, node.train_only, *fields[node.id], kernel,
        ))

    live = [n for n in graph.nodes.values() if not n.train_only]
    return Report(
        name=graph.name, title=graph.title, paper=graph.paper, input=graph.input_shape, rows=rows,
        total_params=sum(p[0] for p in per_node.values()),
        total_buffers=sum(p[1] for p in per_node.values()),
        total_macs=sum(per_node[n.id][2] for n in live),
        train_only_macs=sum(per_node[n.id][2] for n in graph.nodes.values() if n.train_only),
        total_activations=sum(per_node[n.id][3] for n in live),
        outputs={name: graph.nodes[o.node].shape for name, o in graph.outputs.items()},
        batch=batch,
        output_strides={name: fields[o.node][1] for name, o in graph.outputs.items()},
    )


def receptive_fields(graph: Graph) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Node id -> (receptive field, jump), each (h, w) in input pixels.

    The usual recurrence, per axis: field = field_in + (k - 1) * dilation * jump_in,
    jump = jump_in * stride, with (k, stride, dilation) from the op's window.
    """
    fields: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {INPUT: ((1, 1), (1, 1))}
    for node_id in graph.order():
        node = graph.nodes[node_id]
        ins = [fields[i] for i in node.inputs]
        rf = tuple(max(f[0][axis] for f in ins) for axis in (0, 1))
        jump = tuple(max(f[1][axis] for f in ins) for axis in (0, 1))
        shapes = graph.input_shapes(node_id)
        k, s, d = OPS[node.op].window(node.args, shapes)
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
