"""The op registry: everything every stage needs to know about one op.

`registry` defines `OpDef` and `OPS`; each other module here is one family of
ops, registered on import, in this order: conv, pooling, normalisation,
activations, dense layers and reshaping, LeNet-5's layers, joins.  Adding a
built-in op is one `register(OpDef(...))` call in its family's module.

Nothing here imports torch: an op's `lowering` is a description (a class name
and its arguments) that `codegen` instantiates for `lower` and prints for
`emit`, so `check`, `summary` and `draw` stay torch-free.
"""

# ruff: noqa: I001  (the order of the family imports is the order ops are registered in)
from __future__ import annotations

from .registry import (ACTIVATIONS, CATEGORIES, INPLACE_ACTIVATIONS, Autograd,  # noqa: E501
                       POINTWISE, REQUIRED, ActName, Arg, Args, Category, Const, Construct,
                       InChannels, Kw, Lowered, Lowering, NoArgs, OpDef, OPS, Pair, PaperRole, Ref, RuleMemo, Shape,
                       ShapeError,
                       Window, act_call, counted_ops, counting_convention, fmt_shape, join_op, pair, register,
                       spec_ops, weighted_families)
from .conv import ConvArgs, NormArgs, conv_padding  # noqa: E402  (each family registers its ops on import)
from .pool import AdaptivePoolArgs, AvgPoolArgs, PoolArgs  # noqa: E402
from .norm import BatchNormArgs, LayerNormArgs, LRNArgs  # noqa: E402
from . import act as _act  # noqa: E402,F401
from .dense import (ChannelShuffleArgs, ChunkArgs, DropoutArgs, FlattenArgs, LayerScaleArgs, LinearArgs,  # noqa: E402
                    PermuteArgs, ReshapeArgs, ScaleArgs, SoftmaxArgs, StochasticDepthArgs)
from .lenet import RBFArgs, SubsampleArgs, rbf_prototypes  # noqa: E402
from .join import JoinArgs  # noqa: E402

__all__ = [
    "ACTIVATIONS", "CATEGORIES", "INPLACE_ACTIVATIONS", "Autograd",
    "POINTWISE", "REQUIRED", "ActName", "Arg", "Args", "Category", "Const", "Construct",
    "InChannels", "Kw", "Lowered", "Lowering", "NoArgs", "OpDef", "OPS", "Pair", "PaperRole", "Ref", "RuleMemo", "Shape",
    "ShapeError", "Window", "act_call", "counted_ops", "counting_convention", "fmt_shape", "join_op", "pair",
    "register", "spec_ops", "weighted_families", "ConvArgs", "NormArgs", "conv_padding", "AdaptivePoolArgs",
    "AvgPoolArgs", "PoolArgs", "BatchNormArgs", "LayerNormArgs", "LRNArgs", "ChannelShuffleArgs", "ChunkArgs",
    "DropoutArgs", "FlattenArgs", "LayerScaleArgs", "LinearArgs", "PermuteArgs", "ReshapeArgs", "ScaleArgs",
    "SoftmaxArgs", "StochasticDepthArgs", "RBFArgs", "SubsampleArgs", "rbf_prototypes", "JoinArgs",
]
