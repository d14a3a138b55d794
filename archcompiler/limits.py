"""Shaped `Graph` -> nothing, or a `SpecError`: refuse what no machine can build.

In: a `Graph` after `infer_shapes`, a byte budget and a batch size.  Out:
nothing when the network fits; otherwise a `SpecError` at the layer that does
not fit, naming the bytes it needs.  Static, no torch: it runs before anything
is allocated, so `archc check` says "too big" where torch would die inside its
allocator and look like a bug in archc.

What is counted, at fp32 (what `build` allocates):

- every layer's weights and buffers, and every layer's output for `batch` samples;
- any one of those tensors must fit the budget on its own;
- so must their sum, the network's weights plus one batch of every layer's
  output.  `build`'s self-check holds all of them at once (it records each
  layer's output), so the sum is what it really needs.
"""

from __future__ import annotations

import math
import re

from .errors import SpecError, UserError
from .graph import INPUT, Graph
from .ops import OPS, RuleMemo

# 8 GiB: an ordinary laptop builds any zoo network many times over within it
# (VGG-16, the largest, needs about 0.6 GiB at batch 1), and it still stops a
# `out: 10000000` or a 10^12-pixel input long before the machine swaps.
DEFAULT_MAX_MEMORY = 8 * 2**30
# A model built on the meta device allocates nothing, but torch still computes each tensor's byte
# size in 64 bits: past this, its constructor fails with a raw overflow instead of a located error.
META_MAX_MEMORY = 2**62
BYTES_PER_VALUE = 4  # fp32

_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12,
          "p": 2**50, "pib": 2**50, "pb": 10**15}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """`"8GiB"` -> 8589934592; `"512MB"` -> 512000000; `"1000"` -> 1000 (bytes).

    K, M, G, T and P alone are binary (as in `ulimit` and `free`); KB, MB, ...
    are decimal, KiB, MiB, ... binary.
    """
    m = _SIZE.fullmatch(text)
    unit = m[2].lower() if m else None
    if m is None or unit not in _UNITS or len(m[1]) > 20:
        raise UserError(f"--max-memory expects a size such as 8GiB, 512MB or 16G, got '{text[:40]}'",
                        hint="units: B, KB, MB, GB, TB (decimal) or KiB, MiB, GiB, TiB (binary)")
    size = int(float(m[1]) * _UNITS[unit])
    if size < 1:
        raise UserError(f"--max-memory must be at least one byte, got '{text}'")
    return size


def fmt_bytes(n: int) -> str:
    """`2880000000` -> "2.68 GiB"."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def check_memory(graph: Graph, max_bytes: int = DEFAULT_MAX_MEMORY, batch: int = 1) -> None:
    """Raise a located `SpecError` unless `graph`'s weights and one batch of activations fit `max_bytes`."""
    hint = f"make the layer smaller, or raise the limit with --max-memory (now {fmt_bytes(max_bytes)})"
    weights = activations = 0
    largest, largest_bytes = None, -1
    input_bytes = math.prod(graph.input_shape) * batch * BYTES_PER_VALUE
    if input_bytes > max_bytes:
        raise SpecError(f"the input {_fmt(graph.input_shape)} needs {fmt_bytes(input_bytes)} at batch {batch}, "
                        f"over the {fmt_bytes(max_bytes)} limit", graph.input_loc,
                        hint=hint.replace("make the layer smaller", "make the input smaller"))
    shapes = {node_id: node.shape for node_id, node in graph.nodes.items()}
    shapes[INPUT] = graph.input_shape
    found: RuleMemo[tuple[int, int]] = RuleMemo()
    for node in graph.nodes.values():
        inputs = [shapes[i] for i in node.inputs]
        trainable, buffers = found(node.op, node.args, inputs, OPS[node.op].params, node.args, inputs)
        own = (trainable + buffers) * BYTES_PER_VALUE
        out = math.prod(node.shape) * batch * BYTES_PER_VALUE
        if own > max_bytes:
            raise SpecError(f"'{node.id}' ({node.op}) has {trainable + buffers:,} weights, {fmt_bytes(own)}, "
                            f"over the {fmt_bytes(max_bytes)} limit", node.loc, hint=hint)
        if out > max_bytes:
            raise SpecError(f"the output of '{node.id}' ({node.op}), {_fmt(node.shape)}, needs {fmt_bytes(out)} "
                            f"at batch {batch}, over the {fmt_bytes(max_bytes)} limit", node.loc, hint=hint)
        weights, activations = weights + own, activations + out
        if own + out > largest_bytes:
            largest, largest_bytes = node, own + out
    total = weights + activations + input_bytes
    if total > max_bytes and largest is not None:
        raise SpecError(f"the network needs {fmt_bytes(total)}: {fmt_bytes(weights)} of weights and "
                        f"{fmt_bytes(activations + input_bytes)} of activations at batch {batch}, over the "
                        f"{fmt_bytes(max_bytes)} limit; the largest layer is '{largest.id}' "
                        f"({fmt_bytes(largest_bytes)})", largest.loc, hint=hint)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if len("".join(map(str, shape))) < 60 else f"a {len(shape)}-d shape"

