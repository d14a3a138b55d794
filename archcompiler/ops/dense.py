"""Dense layers and reshaping: linear, flatten, dropout, identity, softmax, scale; the reshaping of modern
CNNs (permute, reshape, chunk, channel_shuffle), stochastic depth and ConvNeXt's layer scale."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, StrictBool, StrictInt

from .registry import (
    PASSES_INPUT,
    POINTWISE,
    READS_INPUTS,
    ActName,
    Arg,
    Args,
    Autograd,
    Const,
    Construct,
    Costs,
    Fold,
    InChannels,
    Kw,
    Lowering,
    NoArgs,
    OpDef,
    PaperRole,
    RunsAs,
    Saved,
    Saves,
    Shape,
    ShapeError,
    Window,
    act_call,
    act_call_inplace,
    act_costs,
    act_saves,
    fmt_shape,
    need_map,
    need_vector,
    out_channels,
    register,
    whole_map_window,
)


class LinearArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"out_features": "out"}
    out: StrictInt = Field(gt=0)
    bias: StrictBool = True
    act: ActName = None
    # None: the input must be flat, (features,).  An axis of the sample (0 the channels, -1 the last):
    # the layer acts along that axis of an input of any rank, as nn.Linear does along the last.
    axis: Optional[StrictInt] = None


class DropoutArgs(Args):
    p: float = Field(0.5, ge=0, le=1)


class SoftmaxArgs(Args):
    dim: StrictInt = 1


class ScaleArgs(Args):
    factor: float


def sample_axis(axis: int, shape: Shape, what: str) -> int:
    """`axis` of one sample's `shape` (negative from the end) as an index from 0, or a ShapeError."""
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(f"{what} {axis} is not an axis of {fmt_shape(shape)} (axes count from 0, "
                         f"the channels, to {len(shape) - 1}; the batch is not one)")
    return axis % len(shape)


def torch_dim(axis: int) -> int:
    """A sample's axis as torch's dimension of the batched tensor (the batch is dimension 0)."""
    return axis + 1 if axis >= 0 else axis


def _linear_axis(a: LinearArgs, shapes: list[Shape]) -> int:
    if a.axis is None:
        need_vector(shapes, "linear")
        return 0
    return sample_axis(a.axis, shapes[0], "linear axis")


def _linear_infer(a: LinearArgs, shapes: list[Shape]) -> Shape:
    k, shape = _linear_axis(a, shapes), shapes[0]
    return (*shape[:k], a.out, *shape[k + 1:])


def _linear_lowering(a: LinearArgs, shapes: list[Shape]) -> Lowering:
    k, shape = _linear_axis(a, shapes), shapes[0]
    features = InChannels(shape[0]) if k == 0 else shape[k]  # only the channels flow symbolically in blocks
    linear = Construct("nn.Linear", (features, Arg(a.out, ("out",))), (Kw("bias", Arg(a.bias, ("bias",)), True),))
    if k == len(shape) - 1:
        call = "{m}({0})"
    else:  # that axis moved last and back, by explicit permutations (ONNX takes no negative axis there)
        there = [d for d in range(len(shape) + 1) if d != k + 1] + [k + 1]
        back = [there.index(d) for d in range(len(shape) + 1)]
        call = "{m}({0}.permute(%s)).permute(%s)" % (", ".join(map(str, there)), ", ".join(map(str, back)))
    return Lowering(linear, act_call(a.act, call), inplace_call=act_call_inplace(a.act, call))


def _linear_costs(a: LinearArgs, shapes: list[Shape], out: Shape, runs: Any) -> Costs:
    n = math.prod(out)
    macs = math.prod(shapes[0]) * a.out
    bias = n if a.bias else 0
    act, act_ptflops = act_costs(a.act, n, as_module=False)
    # torchinfo: a non-"Conv" module's parameters once per sample, at however many positions it runs (`axis`)
    return Costs({"bias": bias, **act}, {"torchinfo": _linear_in(a, shapes) * a.out + (a.out if a.bias else 0),
                                        "ptflops": macs + bias + act_ptflops})


def _linear_in(a: LinearArgs, shapes: list[Shape]) -> int:
    return shapes[0][_linear_axis(a, shapes)]


def _linear_channels(a: LinearArgs, ins: list[str], shapes: list[Shape], src: Any) -> str:
    return out_channels(a, ins, shapes, src) if _linear_axis(a, shapes) == 0 else ins[0]


def _linear_taking_norm(a: LinearArgs) -> Optional[LinearArgs]:
    # a BatchNorm right after it normalises its output features only when they are the channels (axis 0)
    return a.model_copy(update={"bias": True}) if a.act is None and a.axis in (None, 0) else None


def _linear_saves(a: LinearArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # the matrix product keeps its input (for the weight's gradient): along the last axis a view of the
    # input; along another the permuted input, which the product's reshape copies
    last = _linear_axis(a, shapes) == len(shapes[0]) - 1
    kept = (Saved(0, what="input"),) if last else (Saved(None, shapes[0], what="permuted input copy"),)
    return Saves(kept + act_saves(a.act, runs.inplace, Saved(None, out, what="linear output"), out))


def _keeps_nothing(a: Any, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    return Saves()


def _is_a_view(a: Any, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # the output is a view of the input (or the input itself): nothing kept, no memory of its own
    return Saves(view=0)


def _dropout_saves(a: DropoutArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # training mode: input * mask, the scaled mask (at the input's dtype) kept; p = 0 returns the input
    # itself, p = 1 multiplies by a zero scalar
    if a.p == 0:
        return Saves(view=0)
    if a.p == 1:
        return Saves((Saved(None, (), per_sample=False, what="zero"),))
    return Saves((Saved(None, out, what="dropout mask"),))


def _stochastic_depth_saves(a: Any, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # training mode: input * noise, the noise (one value per sample, or one in all) kept
    if a.p == 0:
        return Saves(view=0)
    ones = (1,) * len(out)
    return Saves((Saved(None, ones, per_sample=a.mode == "row", what="drop noise"),))


register(OpDef(
    "linear", LinearArgs, "dense", _linear_infer, lambda a: f"linear {a.out}" + (f" +{a.act}" if a.act else ""),
    _linear_lowering, fold=Fold(absorb=_linear_taking_norm), saves=_linear_saves,
    params=lambda a, s: (_linear_in(a, s) * a.out + (a.out if a.bias else 0), 0),
    macs=lambda a, s, o: math.prod(s[0]) * a.out, costs=_linear_costs, channels=_linear_channels,
    autograd=READS_INPUTS,
    paper=PaperRole("linear", weighted=True, family="linear"),
    doc="Fully connected layer on a flat (features,) input, or with `axis` along that axis of any input "
        "(`axis: -1`: the last, as nn.Linear), optionally followed by an activation (`act`).",
))


class FlattenArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"start_dim": "start", "end_dim": "end"}
    start: StrictInt = 0  # axes of the sample: 0 is the channels (torch's dim 1), -1 the last
    end: StrictInt = -1


def _flatten_range(a: FlattenArgs, shape: Shape) -> tuple[int, int]:
    s, e = sample_axis(a.start, shape, "flatten start"), sample_axis(a.end, shape, "flatten end")
    if s > e:
        raise ShapeError(f"flatten start {a.start} comes after end {a.end} in {fmt_shape(shape)}")
    return s, e


def _flatten_infer(a: FlattenArgs, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    s, e = _flatten_range(a, shape)
    return (*shape[:s], math.prod(shape[s:e + 1]), *shape[e + 1:])


def _flatten_lowering(a: FlattenArgs, shapes: list[Shape]) -> Lowering:
    return Lowering(Construct("nn.Flatten", (torch_dim(a.start),), (Kw("end_dim", torch_dim(a.end), -1),)))


def _flatten_channels(a: FlattenArgs, ins: list[str], shapes: list[Shape], src: Any) -> str:
    s, e = _flatten_range(a, shapes[0])
    area = math.prod(shapes[0][1:e + 1])
    c = ins[0]
    return c if s > 0 or area == 1 else (f"({c}) * {area}" if " " in c else f"{c} * {area}")


def _flatten_window(a: FlattenArgs, shapes: list[Shape]) -> Window:
    s, e = _flatten_range(a, shapes[0])
    return whole_map_window(a, shapes) if s < e else POINTWISE  # merging axes: the layer after reads all


register(OpDef("flatten", FlattenArgs, "shape", _flatten_infer,
               lambda a: "flatten" if (a.start, a.end) == (0, -1) else f"flatten {a.start}..{a.end}",
               _flatten_lowering, window=_flatten_window, channels=_flatten_channels, paper=PaperRole(skipped=True),
               saves=_is_a_view,  # of a contiguous input; one after a permute would copy, keeping nothing
               doc="Flatten everything but the batch dimension; or the sample's axes `start` to `end` only."))

register(OpDef("dropout", DropoutArgs, "regularize", lambda a, s: s[0], lambda a: f"dropout {a.p:g}",
               lambda a, s: Lowering(Construct("nn.Dropout", (Arg(a.p, ("p",)),))),
               paper=PaperRole(lambda a: f"dropout ({a.p:.0%})"),
               autograd=PASSES_INPUT, saves=_dropout_saves,
               doc="Dropout with probability `p` (training mode only)."))

register(OpDef("identity", NoArgs, "shape", lambda a, s: s[0], lowering=lambda a, s: Lowering(None, "{0}"),
               paper=PaperRole(skipped=True), saves=_is_a_view, autograd=PASSES_INPUT,
               doc="Passes its input on unchanged (a shortcut, or a named tap for `from:`)."))


def _softmax_infer(a: SoftmaxArgs, shapes: list[Shape]) -> Shape:
    if not 1 <= a.dim <= len(shapes[0]):
        raise ShapeError(f"softmax dim {a.dim} is not a dimension of {fmt_shape(shapes[0])} (dim 0 is the batch)")
    return shapes[0]


register(OpDef("softmax", SoftmaxArgs, "act", _softmax_infer,
               lowering=lambda a, s: Lowering(None, "torch.softmax({0}, %d)" % a.dim),
               # ptflops patches F.softmax, not the torch.softmax this runs as
               costs=lambda a, s, o, r: Costs({"act": math.prod(o)}, {"ptflops": 0}),
               autograd=Autograd(reads_inputs=False, reads_output=lambda a: True, fresh=True),
               saves=lambda a, s, o, r: Saves((Saved("output"),)),
               doc="Softmax along `dim` (1, the channels or classes, by default)."))

register(OpDef("scale", ScaleArgs, "shape", lambda a, s: s[0], lambda a: f"x {a.factor:g}",
               lambda a, s: Lowering(None, "{0} * {factor}", {"factor": Const(a.factor, "factor")}),
               autograd=Autograd(reads_inputs=False, reads_output=lambda a: False, fresh=True),
               saves=_keeps_nothing,  # a product with a number keeps nothing
               doc="Multiplies its input by a constant `factor`."))


# ---------------------------------------------------------------------------
# the reshaping, regularisation and scaling of modern CNNs (ConvNeXt, ShuffleNetV2, EfficientNet)


class PermuteArgs(Args):
    dims: tuple[StrictInt, ...] = Field(min_length=1)  # a permutation of the sample's axes, batch excluded


class ReshapeArgs(Args):
    shape: tuple[StrictInt, ...] = Field(min_length=1)  # the sample's new shape; one size may be -1


class ChunkArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"chunks": "n"}
    n: StrictInt = Field(gt=0)  # equal parts
    index: StrictInt  # which part, from 0 (negative: from the end)
    dim: StrictInt = 0  # the sample's axis that is split: 0, the channels, by default


class ChannelShuffleArgs(Args):
    groups: StrictInt = Field(gt=0)


class StochasticDepthArgs(Args):
    p: float = Field(ge=0, le=1)
    mode: Literal["row", "batch"] = "row"


class LayerScaleArgs(Args):
    init: float = 1e-6  # every channel's scale at initialisation (ConvNeXt's `layer_scale`)


def _permute_infer(a: PermuteArgs, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    if sorted(a.dims) != list(range(len(shape))):
        raise ShapeError(f"permute dims {list(a.dims)} must list each axis of {fmt_shape(shape)} once, "
                         f"from 0 to {len(shape) - 1} (the batch is not one)")
    return tuple(shape[d] for d in a.dims)


def _permute_channels(a: PermuteArgs, ins: list[str], shapes: list[Shape], src: Any) -> str:
    return ins[0] if a.dims[0] == 0 else repr(shapes[0][a.dims[0]])


register(OpDef(
    "permute", PermuteArgs, "shape", _permute_infer, lambda a: "permute " + ",".join(map(str, a.dims)),
    lambda a, s: Lowering(Construct("Permute", ([0, *(d + 1 for d in a.dims)],))),
    channels=_permute_channels, paper=PaperRole(skipped=True), saves=_is_a_view,
    doc="Reorders the sample's axes: `dims: [1, 2, 0]` turns (C, H, W) into (H, W, C); the batch stays first.",
))


def _reshape_infer(a: ReshapeArgs, shapes: list[Shape]) -> Shape:
    shape, total = shapes[0], math.prod(shapes[0])
    if a.shape.count(-1) > 1 or any(d == 0 or d < -1 for d in a.shape):
        raise ShapeError(f"reshape shape {list(a.shape)} needs positive sizes and at most one -1")
    known = math.prod(d for d in a.shape if d != -1)
    if (total % known if -1 in a.shape else total != known):
        raise ShapeError(f"reshape cannot make {total} values ({fmt_shape(shape)}) into shape {list(a.shape)}")
    return tuple(total // known if d == -1 else d for d in a.shape)


def _reshape_channels(a: ReshapeArgs, ins: list[str], shapes: list[Shape], src: Any) -> str:
    return src.arg(("shape", 0), a.shape[0]) if a.shape[0] != -1 else repr(_reshape_infer(a, shapes)[0])


register(OpDef(
    "reshape", ReshapeArgs, "shape", _reshape_infer, lambda a: "reshape " + fmt_shape(a.shape),
    lambda a, s: Lowering(Construct("Reshape", (Arg(a.shape, ("shape",)),))),
    channels=_reshape_channels, paper=PaperRole(skipped=True), saves=_is_a_view,  # of a contiguous input
    doc="Reshapes each sample to `shape` (one size may be -1, inferred); the batch stays first.",
))


def _chunk_axis(a: ChunkArgs, shapes: list[Shape]) -> int:
    k = sample_axis(a.dim, shapes[0], "chunk dim")
    if shapes[0][k] % a.n:
        raise ShapeError(f"chunk n={a.n} must divide the size {shapes[0][k]} of axis {a.dim}")
    if not -a.n <= a.index < a.n:
        raise ShapeError(f"chunk index {a.index} is not one of the {a.n} parts (0 to {a.n - 1})")
    return k


def _chunk_infer(a: ChunkArgs, shapes: list[Shape]) -> Shape:
    k, shape = _chunk_axis(a, shapes), shapes[0]
    return (*shape[:k], shape[k] // a.n, *shape[k + 1:])


def _chunk_channels(a: ChunkArgs, ins: list[str], shapes: list[Shape], src: Any) -> str:
    if _chunk_axis(a, shapes) != 0:
        return ins[0]
    c, n = ins[0], src.arg("n", a.n)
    return f"({c}) // {n}" if " " in c else f"{c} // {n}"


register(OpDef(
    "chunk", ChunkArgs, "shape", _chunk_infer,
    lambda a: f"chunk {a.index} of {a.n}" + (f" on axis {a.dim}" if a.dim else ""),
    lambda a, s: Lowering(None, "{0}.chunk({n}, %d)[{index}]" % torch_dim(a.dim),
                          {"n": Const(a.n, "n"), "index": Const(a.index, "index")}),
    channels=_chunk_channels, paper=PaperRole(skipped=True), saves=_is_a_view,
    doc="Part `index` of `n` equal parts along axis `dim` (the channels by default), as `x.chunk(n, 1)[index]`; "
        "one node per part.",
))


def _shuffle_infer(a: ChannelShuffleArgs, shapes: list[Shape]) -> Shape:
    c, _, _ = need_map(shapes, "channel_shuffle")
    if c % a.groups:
        raise ShapeError(f"channel_shuffle groups={a.groups} must divide the {c} channels")
    return shapes[0]


register(OpDef(
    "channel_shuffle", ChannelShuffleArgs, "shape", _shuffle_infer, lambda a: f"channel shuffle {a.groups}",
    lambda a, s: Lowering(Construct("ChannelShuffle", (Arg(a.groups, ("groups",)),))),
    paper=PaperRole(skipped=True), saves=_keeps_nothing,  # views and a contiguous copy
    doc="ShuffleNet's channel shuffle: the channels seen as (groups, C / groups) and transposed.",
))

register(OpDef(
    "stochastic_depth", StochasticDepthArgs, "regularize", lambda a, s: s[0],
    lambda a: f"stochastic depth {a.p:g}" + (" (batch)" if a.mode == "batch" else ""),
    lambda a, s: Lowering(Construct("StochasticDepth", (Arg(a.p, ("p",)), Arg(a.mode, ("mode",))))),
    paper=PaperRole(lambda a: f"stochastic depth ({a.p:.0%})"), saves=_stochastic_depth_saves,
    autograd=PASSES_INPUT,
    doc="torchvision's stochastic depth: in training mode each sample (`mode: row`) or the whole batch "
        "(`batch`) is zeroed with probability `p` and the rest scaled by 1 / (1 - p); the identity in eval mode.",
))


def _layer_scale_lowering(a: LayerScaleArgs, shapes: list[Shape]) -> Lowering:
    size = (InChannels(shapes[0][0]), *(1,) * (len(shapes[0]) - 1))  # (C, 1, 1) for a map
    return Lowering(None, "{m} * {0}", parameter=Construct("torch.full", (size, Arg(a.init, ("init",)))))


register(OpDef(
    "layer_scale", LayerScaleArgs, "shape", lambda a, s: s[0], lambda a: f"layer scale {a.init:g}",
    _layer_scale_lowering, params=lambda a, s: (s[0][0], 0), paper=PaperRole("layer scale"),
    saves=lambda a, s, o, r: Saves((Saved(0, what="input"),)),  # scale * x keeps x for the scale's gradient
    autograd=READS_INPUTS,  # a new tensor; the product's backward reads its factors, not its result
    doc="A learnable scale per channel, from `init`: a parameter of shape (C, 1, 1) named by the layer itself "
        "(ConvNeXt's `layer_scale`), not a module.",
))
