"""archc: a declarative architecture-spec compiler for convolutional networks.

The pipeline, one module per stage (docs/architecture.md is the map):

    spec.load_spec ─▶ expand.expand ─────────────────────────▶ shapes.infer_shapes ─▶ limits.check_memory ─┐
      (source: YAML;   (params: bind, items: parse, expand:      (static shapes)        (fits the machine)  │
       pydantic)        blocks/repeats, wiring: refs, DAG)                                                   │
      ┌──────────────────────────────────────────────────────────────────────────────────────────────────┘
      ├─ analysis.analyze ─▶ Report ─▶ report (table, json, csv, md), paper (the papers' table form)
      ├─ diff.diff (two graphs, per stage)
      ├─ draw.diagram ─▶ graphviz
      ├─ emit.emit_python ─▶ standalone PyTorch source  ┐ codegen: one op description, built or printed;
      └─ lower.lower ─▶ torch.nn.Module                 ┘ one forward writer
                          └─▶ export (onnx, torchscript, torch.export), checkpoints (load, save), training
                          └─▶ optimize.inference_model (BatchNorm folded, eval only: build(optimize="inference"))

Every op is one `OpDef` in the registry (`ops/`), which every stage consults.

`graph.select_outputs` cuts a graph down to named feature maps.  Only
`lower`, `optimize`, `export`, `checkpoints` and `training` import torch, and only when used.
`plugins.register_op` adds a user's op to the registry (`ops.OPS`), and
`plugins.load_plugins` imports the plugin modules that call it (docs/extending.md).
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from .analysis import Counting, Report, analyze
from .errors import SpecError, UserError
from .expand import expand
from .graph import Graph, select_outputs
from .limits import DEFAULT_MAX_MEMORY, META_MAX_MEMORY, check_memory
from .memory import TrainingMemory, training_memory
from .plugins import PluginError, load_plugins, register_op
from .shapes import infer_shapes
from .spec import Spec, load_spec
from .zoo import list_models

if TYPE_CHECKING:
    import torch

__all__ = ["SpecError", "UserError", "WeightsError", "Spec", "Graph", "Report", "Counting", "TrainingMemory",
           "training_memory", "load_spec", "compile_graph",
           "summary", "build", "list_models", "load_weights", "save_weights", "register_op", "load_plugins", "PluginError"]
__version__ = "0.1.0"

SpecLike = Union[Spec, str, Path]

# The checkpoint functions are imported when first asked for: the static path (check, summary) has no use
# for them, nor for the modules they import (pickle among them).
_LAZY = {"WeightsError": "checkpoints", "load_weights": "checkpoints", "save_weights": "checkpoints"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compile_graph(spec: SpecLike, *, input_shape: Optional[tuple[int, ...]] = None,
                  outputs: Optional[Sequence[str]] = None, max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
                  **params: Any) -> Graph:
    """Load (if given a path or a zoo model name: `list_models()`), expand with `params`, infer shapes and check the memory bound.

    `input_shape` (C, H, W) replaces the spec's `input`; `outputs` (names of
    layers, blocks or outputs) makes it a feature extractor (`select_outputs`).
    `max_memory` (bytes) bounds the weights plus one sample's activations
    (`limits.check_memory`); a network over it is a `SpecError`; None: no bound.
    """
    with _collector_paused():
        if not isinstance(spec, Spec):
            spec = load_spec(spec)
        graph = infer_shapes(expand(spec, input_shape=input_shape, **params))
        if max_memory is not None:
            check_memory(graph, max_memory)
        return select_outputs(graph, outputs) if outputs is not None else graph


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off inside, the caller's setting restored after.

    Compiling makes objects that all live on (a few per value and layer) and no
    cycles worth collecting; with the collector on, its full passes over that
    growing heap made a 10,000-layer spec several times slower, and growth in
    the number of layers worse than linear.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def summary(spec: SpecLike, *, outputs: Optional[Sequence[str]] = None,
            max_memory: Optional[int] = DEFAULT_MAX_MEMORY, counting: Optional[Counting] = None,
            **params: Any) -> Report:
    """Parameters, MACs and shapes of every layer and block, without torch.

    With `outputs`, of the feature extractor that returns those maps.  With `counting`
    (`Counting(like="fvcore")`, `Counting(("bias", "norm"))`), the MACs are that count.
    """
    with _collector_paused():
        return analyze(compile_graph(spec, outputs=outputs, max_memory=max_memory, **params), counting=counting)


def build(spec: SpecLike, *, seed: int = 0, device: Any = None, weights: Any = None,
          outputs: Optional[Sequence[str]] = None, max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
          input_shape: Optional[tuple[int, ...]] = None, optimize: Optional[str] = None,
          **params: Any) -> "torch.nn.Module":
    """Compile a spec (a `Spec`, a path, or a zoo model name such as "resnet18") into a `torch.nn.Module`.

    Weights are initialised from `seed`; `input_shape` (C, H, W) replaces the spec's `input`.

    - `weights`: a checkpoint to load, strictly (a path to a state_dict, a dict
      holding one under "state_dict" or "model", or a .safetensors file; or a
      state_dict in memory); a mismatch raises `WeightsError` with a short report.
    - `outputs`: names of layers, blocks or outputs; the model then returns
      those maps as a dict and keeps only the layers they need (a backbone).
      `weights` are those of the whole network, loaded before it is cut down.
    - `device="meta"` builds the module without allocating its weights (so
      without the `max_memory` bound, which otherwise refuses a network whose
      weights and one sample's activations exceed it, in bytes; only sizes
      past torch's 64-bit byte counts, `limits.META_MAX_MEMORY`, are refused).  A device torch does
      not know, or cannot reach here ("cuda" on a CPU-only torch), is a `UserError` before anything is built.
    - `optimize="inference"`: the inference build of that model (`optimize.inference_model`):
      BatchNorm folded into the weights, eval mode only; its state_dict is not the
      checkpoint's (docs/export.md, "The inference build").
    """
    from .checkpoints import load_weights
    from .lower import check_device, lower

    check_device(device)  # before the spec is compiled
    if optimize is not None:
        from .optimize import check_optimize

        check_optimize(optimize)
    on_meta = device is not None and str(device) == "meta"
    if weights is not None and on_meta:
        raise UserError("weights cannot be loaded into a model built on the meta device")
    # Modules, parameters and the generated forward all live on, as the graph does: the collector's
    # passes over them while they are made would find nothing to free.
    with _collector_paused():
        graph = compile_graph(spec, input_shape=input_shape, max_memory=META_MAX_MEMORY if on_meta else max_memory,
                              **params)
        if outputs is None:
            model = lower(graph, seed=seed, device=device)
            if weights is not None:
                load_weights(model, weights)
            return _optimized(model, optimize)
        backbone = lower(select_outputs(graph, outputs), seed=seed, device=device)
        if weights is not None:
            whole = lower(graph, seed=seed, device=device)
            load_weights(whole, weights)
            backbone.load_state_dict({k: v for k, v in whole.state_dict().items() if k in backbone.state_dict()})
        return _optimized(backbone, optimize)


def _optimized(model: Any, optimize: Optional[str]) -> Any:
    if optimize is None:
        return model
    from .optimize import inference_model

    return inference_model(model)
