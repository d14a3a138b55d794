"""Training helpers: one loss over a model's main and auxiliary heads.

In: whatever a model returns in training mode -- a plain tensor (one head),
or a named tuple whose FIRST field is the main head and whose other fields
are auxiliary heads (the compiled models return e.g.
``GooglenetOutputs(logits, aux2, aux1)`` or
``InceptionV3Outputs(logits, aux_logits)``; torchvision's
``GoogLeNetOutputs`` and ``InceptionOutputs`` have the same layout); a
target; per-head weights; a criterion.  Out: the total loss
``criterion(main, target) + sum_k w_k * criterion(aux_k, target)`` as a
scalar tensor (`aux_loss`), or that total together with every head's
unweighted loss and weight (`losses`, for logging).

The default auxiliary weight is 0.3, the discount the GoogLeNet paper
(Szegedy et al. 2014, section 5) gives the losses of its two auxiliary
classifiers.  For Inception-v3's single auxiliary head torchvision's
reference recipe uses 0.4 (``aux_weight=0.4``).  A head whose
weight is 0 still takes part in the graph (its loss is multiplied by 0), so
its parameters get zero gradients instead of none, which keeps
DistributedDataParallel from reporting unused parameters.

LeNet-5 (``specs/lenet5.yaml``) ends in RBF units whose outputs are
*penalties*: squared distances to fixed class prototypes, smaller is
better.  Their negation is a vector of logits: ``penalty_logits(p) == -p``,
so ``F.cross_entropy(-penalties, target)`` is ``penalty_i +
log(sum_j exp(-penalty_j))``, the paper's maximum-a-posteriori criterion
(section II.C, eq. 9) without its constant "rubbish class" term
``exp(-j)``; ``argmax(-penalties) == argmin(penalties)`` is the prediction.
`aux_loss(penalty_logits(model(x)), y)` trains it.

For FSDP, `layer_groups` lists the units to shard: the modules a compiled
model's generated forward actually calls, grouped by spec name.  A block
instance's `Container` is never called (the forward calls its layers
directly), so hooks on it, FSDP's included, never fire.

Only torch is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DEFAULT_AUX_WEIGHT",
    "Losses",
    "aux_loss",
    "head_weights",
    "heads",
    "layer_groups",
    "losses",
    "main_output",
    "penalty_logits",
]

#: The GoogLeNet paper's discount weight for the losses of auxiliary classifiers.
DEFAULT_AUX_WEIGHT = 0.3

#: A loss function ``criterion(prediction, target) -> scalar tensor``.
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: One weight for every auxiliary head, or weights by head name (any head, the main one included).
AuxWeight = Union[float, Mapping[str, float]]

#: The name `heads` gives a model output that is a plain tensor.
MAIN = "main"


@dataclass(frozen=True)
class Losses:
    """The result of `losses`.

    ``total``: the weighted sum, the tensor to call ``backward()`` on.
    ``parts``: every head's unweighted loss, by head name, main head first.
    ``weights``: every head's weight (the main head's is 1.0 unless set).
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    weights: dict[str, float]

    def as_floats(self) -> dict[str, float]:
        """``{"total": ..., head: ...}`` as Python floats, for logging (detached)."""
        out = {"total": float(self.total.detach())}
        out.update((name, float(value.detach())) for name, value in self.parts.items())
        return out


def heads(outputs: Any) -> dict[str, torch.Tensor]:
    """The heads of a model's output by name, the main head first.

    A tensor is one head, named ``"main"``; a named tuple gives its fields; a
    mapping its items in order; a plain tuple or list is named by position
    (``"0"``, ``"1"``, ...).
    """
    if isinstance(outputs, torch.Tensor):
        return {MAIN: outputs}
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        items = list(zip(outputs._fields, outputs))
    elif isinstance(outputs, Mapping):
        items = [(str(k), v) for k, v in outputs.items()]
    elif isinstance(outputs, Sequence) and not isinstance(outputs, (str, bytes)):
        items = [(str(i), v) for i, v in enumerate(outputs)]
    else:
        raise TypeError(f"model outputs must be a tensor, a named tuple, a mapping or a sequence of tensors, "
                        f"not {type(outputs).__name__}")
    if not items:
        raise ValueError("model outputs are empty: there is no main head")
    for name, value in items:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"head {name!r} is a {type(value).__name__}, not a tensor")
    return dict(items)


def main_output(outputs: Any) -> torch.Tensor:
    """The main head: the tensor itself, or the first field (e.g. ``logits``) of a named tuple."""
    return next(iter(heads(outputs).values()))


def head_weights(outputs: Any, aux_weight: AuxWeight = DEFAULT_AUX_WEIGHT) -> dict[str, float]:
    """Each head's weight: 1.0 for the main head, `aux_weight` for the others.

    `aux_weight` is one float for every auxiliary head, or a mapping by head
    name; heads it leaves out keep their default (1.0 main, 0.3 auxiliary),
    and a name that is not a head is an error.
    """
    names = list(heads(outputs))
    if isinstance(aux_weight, Mapping):
        unknown = [k for k in aux_weight if k not in names]
        if unknown:
            raise ValueError(f"aux_weight names {', '.join(map(repr, unknown))}, which "
                             f"{'is not a head' if len(unknown) == 1 else 'are not heads'} of these outputs "
                             f"(heads: {', '.join(names)})")
        weights = {n: 1.0 if i == 0 else DEFAULT_AUX_WEIGHT for i, n in enumerate(names)}
        weights.update((k, float(v)) for k, v in aux_weight.items())
        return weights
    return {n: 1.0 if i == 0 else float(aux_weight) for i, n in enumerate(names)}


def _is_cross_entropy(criterion: Criterion) -> bool:
    return criterion is F.cross_entropy or isinstance(criterion, nn.CrossEntropyLoss)


def _check_target(name: str, head: torch.Tensor, target: torch.Tensor, criterion: Criterion) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a tensor, not {type(target).__name__}")
    if head.dim() == 0 or target.dim() == 0 or head.shape[0] != target.shape[0]:
        raise ValueError(f"target of shape {tuple(target.shape)} does not match head {name!r} of shape "
                         f"{tuple(head.shape)}: their batch sizes differ")
    if not _is_cross_entropy(criterion):
        return  # a custom criterion checks its own shapes
    indices = (head.shape[0], *head.shape[2:])
    if target.shape == indices and not target.is_floating_point():
        return
    if target.shape == head.shape and target.is_floating_point():
        return
    if target.shape == indices:
        hint = f"class indices must be integers (got {target.dtype}; use target.long())"
    elif target.shape == head.shape:
        hint = f"class probabilities must be floating point (got {target.dtype})"
    else:
        hint = (f"cross-entropy needs class indices of shape {tuple(indices)} "
                f"or class probabilities of shape {tuple(head.shape)}")
    raise ValueError(f"target of shape {tuple(target.shape)} ({target.dtype}) does not fit head {name!r} "
                     f"of shape {tuple(head.shape)}: {hint}")


def losses(outputs: Any, target: torch.Tensor, aux_weight: AuxWeight = DEFAULT_AUX_WEIGHT,
           criterion: Criterion = F.cross_entropy) -> Losses:
    """Every head's loss against `target`, their weights and the weighted total.

    `outputs`: what the model returned (see `heads`).  `target`: for the
    default cross-entropy, class indices (N,) or class probabilities (N, C).
    `aux_weight`: see `head_weights`.  `criterion(prediction, target)`: any
    loss returning a scalar, applied to every head with the same target.
    """
    named = heads(outputs)
    weights = head_weights(outputs, aux_weight)
    parts = {}
    for name, head in named.items():
        _check_target(name, head, target, criterion)
        parts[name] = criterion(head, target)
    main, *aux = parts
    total = weights[main] * parts[main]
    for name in aux:
        total = total + weights[name] * parts[name]
    return Losses(total, parts, weights)


def aux_loss(outputs: Any, target: torch.Tensor, aux_weight: AuxWeight = DEFAULT_AUX_WEIGHT,
             criterion: Criterion = F.cross_entropy) -> torch.Tensor:
    """The total loss: ``criterion(main, target) + sum_k aux_weight_k * criterion(aux_k, target)``.

    With a plain tensor this is just ``criterion(outputs, target)``.  See `losses`.
    """
    return losses(outputs, target, aux_weight, criterion).total


def penalty_logits(penalties: Any) -> Any:
    """Logits from RBF penalties (LeNet-5's output): their negation.

    Accepts what `heads` accepts and negates every head, keeping the type
    (a named tuple stays a named tuple), so ``aux_loss(penalty_logits(out), y)``
    works for any RBF-headed model.
    """
    if isinstance(penalties, torch.Tensor):
        return -penalties
    if isinstance(penalties, tuple) and hasattr(penalties, "_fields"):
        return type(penalties)(*(-p for p in penalties))
    if isinstance(penalties, Mapping):
        return {k: -v for k, v in penalties.items()}
    return type(penalties)(-p for p in penalties)


def layer_groups(model: nn.Module, depth: int = 1) -> dict[str, list[nn.Module]]:
    """The modules that a compiled model's forward calls and that hold parameters,
    grouped by the first `depth` dotted parts of their spec names, in declaration order.

    For GoogLeNet at depth 1: ``{"conv1": [ConvNormAct], ..., "inception3a": [its six
    convs], ..., "aux1": [conv, fc1, fc2], ..., "fc": [Linear]}``.  Hand each group to
    FSDP2 as one unit, ``fully_shard(group)``, then ``fully_shard(model)``: one all-gather
    per group.  Sharding a block's `Container` instead does not work, because the
    generated forward never calls it, so FSDP's pre-forward hook never runs.
    """
    graph = getattr(model, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        raise TypeError(f"layer_groups needs a model compiled by archcompiler.build (with .graph), not "
                        f"{type(model).__name__}; pass a DDP/FSDP-wrapped model's .module")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    groups: dict[str, list[nn.Module]] = {}
    taken: set[str] = set()
    for node_id in graph.nodes:
        try:
            module = model.get_submodule(node_id)
        except AttributeError:  # a node without a module of its own (concat, add, a functional op)
            continue
        parts = node_id.split(".")
        if next(module.parameters(), None) is None or any(".".join(parts[:i]) in taken for i in range(1, len(parts))):
            continue  # nothing to shard, or inside a module already listed
        taken.add(node_id)
        groups.setdefault(".".join(parts[:depth]), []).append(module)
    return groups
