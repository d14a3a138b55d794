"""archc: a declarative architecture-spec compiler for convolutional networks.

The pipeline, one module per stage (see docs/ and DESIGN):

    spec.load_spec ─▶ expand.expand ─▶ shapes.infer_shapes ─┬─ analysis.analyze ─▶ Report
      (YAML, pydantic)  (blocks, params)   (static shapes)   ├─ lower.lower ──────▶ torch.nn.Module
                                                             └─ draw.draw ────────▶ graphviz

Only `lower` (reached through `build`) imports torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .analysis import Report, analyze
from .errors import SpecError
from .expand import expand
from .graph import Graph
from .shapes import infer_shapes
from .spec import Spec, load_spec

if TYPE_CHECKING:
    import torch

__all__ = ["SpecError", "Spec", "Graph", "Report", "load_spec", "compile_graph", "summary", "build"]
__version__ = "0.1.0"

SpecLike = Union[Spec, str, Path]


def compile_graph(spec: SpecLike, *, input_shape: Optional[tuple[int, ...]] = None, **params: Any) -> Graph:
    """Load (if given a path), expand with `params` and infer shapes.

    `input_shape` (C, H, W) replaces the spec's `input`.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    graph = expand(spec, **params)
    if input_shape is not None:
        graph = replace(graph, input_shape=tuple(input_shape))
    return infer_shapes(graph)


def summary(spec: SpecLike, **params: Any) -> Report:
    """Parameters, MACs and shapes of every layer and block, without torch."""
    return analyze(compile_graph(spec, **params))


def build(spec: SpecLike, *, seed: int = 0, device: Any = None, **params: Any) -> "torch.nn.Module":
    """Compile a spec into a `torch.nn.Module` (weights initialised from `seed`).

    `device="meta"` builds the module without allocating its weights.
    """
    from .lower import lower

    return lower(compile_graph(spec, **params), seed=seed, device=device)
