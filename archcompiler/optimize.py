"""Eager compiled model -> an inference build: BatchNorm folded into the weights before it, eval only.

In: a `CompiledModel` from `lower` (initialised, or with a checkpoint loaded).  Out: a new
`InferenceModel` of the same graph, which leaves the eager model as it was:

- every BatchNorm in eval mode is an affine map per channel, so it is folded into the conv or linear
  layer whose output it normalises (`torch.nn.utils.fusion`'s formulas, computed in float64): a conv
  with `norm:` becomes a plain conv with a bias, and a standalone `batchnorm` whose input feeds
  nothing else disappears into that input's layer.  Which op holds or takes a BatchNorm, and how, is
  its `OpDef.fold` (`ops.registry.Fold`);
- the forward is generated again for the folded layers, with each activation run in place on the
  conv's result and the in-place plan of `lower` (`codegen.inplace_plan`);
- the weights are in channels_last memory format where `channels_last_default` says it is faster.
- on CPU in channels_last, a node that is one `nn.Conv2d` becomes a `PrepackedConv2d`, which keeps its
  weight in oneDNN's layout too, so that an eager call does not reorder it every time (`torch.jit.freeze`
  does the same); traced, compiled or exported, it is a plain conv.

The result is a plain `torch.nn.Module` (a `CompiledModel` with its generated forward), so
`torch.compile`, `torch.export` and ONNX export take it as they take the eager model.  Its state_dict
is not the eager model's (no BatchNorm entries, folded weights, new biases): keep the eager checkpoint
and make the inference build from it again.  It has no training mode: `.train()` raises.

Why a pass of our own rather than torch's tools: `torch.jit.freeze` / `optimize_for_inference` return a
ScriptModule (TorchScript, deprecated), which `torch.compile` and `torch.export` do not take as an
nn.Module; `torch.fx.experimental.optimization.fuse` re-traces into a GraphModule, which drops the
generated forward, the graph and the train-only branches.  archc already knows which layer feeds
which, so folding here is a few lines and keeps the model what it was.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from .codegen import lowered
from .errors import UserError
from .graph import INPUT, Graph
from .lower import CompiledModel, assemble
from .ops import OPS, Lowered

INFERENCE = "inference"
OPTIMIZE_LEVELS = (INFERENCE,)


def check_optimize(optimize: Any) -> None:
    """Refuse an `optimize=` value other than None or one of `OPTIMIZE_LEVELS`."""
    if optimize is not None and optimize not in OPTIMIZE_LEVELS:
        raise UserError(f"optimize must be None or one of {', '.join(map(repr, OPTIMIZE_LEVELS))}, "
                        f"got {str(optimize)[:40]!r}")


class InferenceModel(CompiledModel):
    """Base of an inference build (`inference_model`): eval mode only, BatchNorm folded into the weights."""

    folded: dict[str, str]  # BatchNorm node -> the node whose weights took it in (itself, for a conv's `norm`)
    channels_last: bool

    def train(self, mode: bool = True) -> "InferenceModel":
        if mode:
            raise RuntimeError(
                f"{type(self).__name__} is an inference build (BatchNorm folded into the weights): it has no "
                "training mode; train the eager model (archcompiler.build(...)) and make the inference build "
                "from it again with archcompiler.optimize.inference_model(model)")
        return super().train(False)


class _ChannelsLastInput:
    """Mixed in before the generated forward when the weights are channels_last: the input map is made
    channels_last first (a conv given an NCHW input and channels_last weights is slower than either)."""

    def forward(self, x: torch.Tensor) -> Any:
        return super().forward(x.contiguous(memory_format=torch.channels_last))  # type: ignore[misc]


def prepacking_available() -> bool:
    """Whether this torch has oneDNN's prepacked convolution (`PrepackedConv2d`'s fast path)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


class PrepackedConv2d(nn.Conv2d):
    """An `nn.Conv2d` that also keeps its weight in oneDNN's blocked layout, as `torch.jit.freeze` does.

    Why: oneDNN reorders a convolution's weight into its own layout on every eager call.  On a network
    that is almost all large convolutions (ResNet-152, ResNeXt-101) that reorder is several per cent of
    the forward, which prepacking saves (benchmarks/README.md).

    The packed copy is made on the first eager call, for that call's input shape, and made again when the
    weight changes (another tensor, or its `_version`: written in place) or an input of another shape
    comes: oneDNN picks the blocked layout for a shape, and weights packed for batch 1 made ResNet-152
    slower at batch 8 than no packing.
    Deep copies and pickles leave it out (oneDNN's tensor has no storage to copy).  Everywhere else the
    forward is `nn.Conv2d`'s own, on the same weight and bias: traced (`torch.jit.trace`, ONNX),
    scripted, compiled or exported (a `FakeTensor` or another tensor subclass), with autograd on, off
    the CPU, or for an input that is not a channels_last float32 batch.  So the state_dict is a plain
    conv's, and every export sees one.
    """

    _packed: Optional[torch.Tensor]
    _packed_for: Optional[tuple[torch.Tensor, int, torch.Size]]  # (the weight, its _version, the input's shape)

    @classmethod
    def convert(cls, conv: Any) -> Any:
        """`conv` made a `PrepackedConv2d` in place when it is a plain `nn.Conv2d` that oneDNN can take
        (zeros padding, not padding="same"); anything else as it was."""
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return conv
        conv.__class__ = cls
        conv._packed, conv._packed_for = None, None
        return conv

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["_packed"], state["_packed_for"] = None, None
        return state

    @torch.jit.unused
    def _prepacked(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        packed_for = self._packed_for
        if packed_for is None or packed_for[0] is not weight or packed_for[1:] != (weight._version, x.shape):
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight.detach(), list(self.padding), list(self.stride), list(self.dilation), self.groups,
                list(x.shape))
            self._packed_for = (weight, weight._version, x.shape)
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed, self.bias, list(self.padding),
                                                       list(self.stride), list(self.dilation), self.groups,
                                                       "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not torch.jit.is_scripting() and type(x) is torch.Tensor and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.device.type == "cpu" and self.weight.dtype == torch.float32
                and type(self.weight) is nn.Parameter and x.dim() == 4
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and x.is_contiguous(memory_format=torch.channels_last)):
            return self._prepacked(x)
        return super().forward(x)


def fold_plan(graph: Graph) -> dict[str, tuple[str, Any]]:
    """For each node whose weights change: (the BatchNorm node folded into it, its args after folding).

    A node with its own BatchNorm (`Fold.own`) folds it into itself.  A standalone BatchNorm (`Fold.norm`)
    folds into its input's node when that node can take it (`Fold.absorb`), feeds nothing else and is no
    output of the network (which would then change).
    """
    consumers: dict[str, list[str]] = {}
    for node_id, node in graph.nodes.items():
        for i in node.inputs:
            consumers.setdefault(i, []).append(node_id)
    outputs = {o.node for o in graph.outputs.values()}
    plan: dict[str, tuple[str, Any]] = {}
    for node_id, node in graph.nodes.items():
        rule = OPS[node.op].fold
        own = rule.own(node.args)
        if own is not None:
            plan[node_id] = (node_id, own)
            continue
        if not rule.norm or len(node.inputs) != 1 or node.inputs[0] == INPUT:
            continue
        (source,) = node.inputs
        taking = OPS[graph.nodes[source].op].fold.absorb(graph.nodes[source].args)
        if taking is not None and consumers[source] == [node_id] and source not in outputs and source not in plan:
            plan[source] = (node_id, taking)
    return plan


def _folded_weights(weighted: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of `weighted` with `bn` (eval mode: running statistics) applied after it, computed in
    float64 and returned in the weight's dtype (so that the rounding is that of one multiply)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UserError("a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    wide = torch.float64 if weighted.weight.device.type != "mps" else torch.float32

    def w(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.detach().to(wide)

    ones = torch.ones_like(bn.running_mean, dtype=wide)
    args = (w(weighted.weight), w(weighted.bias), w(bn.running_mean), w(bn.running_var), bn.eps,
            w(bn.weight) if bn.weight is not None else ones, w(bn.bias) if bn.bias is not None else 0 * ones)
    fuse = fuse_linear_bn_weights if isinstance(weighted, nn.Linear) else fuse_conv_bn_weights
    weight, bias = fuse(*args)
    dtype = weighted.weight.dtype
    return weight.detach().to(dtype), bias.detach().to(dtype)


def channels_last_default(model: nn.Module) -> bool:
    """Whether the inference build runs channels_last: on CPU and CUDA, yes.  On this CPU (torch 2.13,
    2 threads, batch 8, nine families of the zoo) a forward with channels_last weights and input took 0.34
    to 0.92 of the default layout's time (benchmarks/README.md, "channels_last on this CPU"); on CUDA
    cuDNN's fast kernels are channels_last.  Elsewhere (MPS, ...) not measured: no."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return device.type in ("cpu", "cuda")


def inference_model(model: CompiledModel, *, channels_last: Optional[bool] = None) -> InferenceModel:
    """The inference build of eager `model` (left unchanged): BatchNorm folded, activations in place, eval only.

    `channels_last`: store the weights in that memory format (inputs then run in it from the first conv
    on); None: `channels_last_default`.
    """
    if isinstance(model, InferenceModel):
        raise UserError("this model is already an inference build; make a new one from the eager model")
    if not isinstance(model, CompiledModel):
        raise UserError(f"inference_model takes a model compiled by archc, got {type(model).__name__}")
    graph = model.graph
    plan = fold_plan(graph)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    standalone = {bn for bn, _ in plan.values()} - set(plan)  # folded BatchNorm nodes of their own
    built: dict[str, Lowered] = {}
    for node_id, node in graph.nodes.items():
        bn_node, args = plan.get(node_id, (None, node.args))
        # Only the call templates, and for a folded node the module its weights go into (built where the
        # model is, its initial weights drawn without touching the caller's random state, then replaced).
        with torch.random.fork_rng(devices=[]), torch.device(device if bn_node is not None else "meta"):
            low = lowered(OPS[node.op], args, graph.input_shapes(node_id))
        if low.parameter:
            module: Any = copy.deepcopy(model.get_parameter(node_id))
        elif low.module is None:
            module = None
        elif bn_node is None:
            module = copy.deepcopy(model.get_submodule(node_id))
        else:
            module = low.module
            if bn_node == node_id:
                weighted_path, bn_path = (f"{node_id}.{part}" for part in OPS[node.op].fold.parts)
            else:
                weighted_path, bn_path = node_id, bn_node
            weighted = model.get_submodule(weighted_path)
            weight, bias = _folded_weights(weighted, model.get_submodule(bn_path))
            module.to(weighted.weight.dtype).load_state_dict({"weight": weight, "bias": bias})
        if node_id in standalone:  # runs as its input, which took its weights in
            module, low = None, Lowered(None, "{0}")
        built[node_id] = Lowered(module, low.call, low.parameter, low.inplace_call, low.overwrite)
    result = assemble(graph, built, base=InferenceModel)
    result.folded = {bn: node for node, (bn, _) in plan.items()}
    result.channels_last = (len(graph.input_shape) == 3
                            and (channels_last_default(model) if channels_last is None else bool(channels_last)))
    result.eval()
    if result.channels_last:
        result.to(memory_format=torch.channels_last)
        if device.type == "cpu" and prepacking_available():
            for low in built.values():  # a node that is one conv, by the module it lowered to
                PrepackedConv2d.convert(low.module)
        result.__class__ = type(type(result).__name__, (_ChannelsLastInput, type(result)),
                                {"__module__": type(result).__module__, "__doc__": type(result).__doc__})
    for p in result.parameters():
        p.requires_grad_(False)
    return result


__all__ = ["INFERENCE", "OPTIMIZE_LEVELS", "InferenceModel", "PrepackedConv2d", "check_optimize", "fold_plan",
           "inference_model", "channels_last_default", "prepacking_available"]
