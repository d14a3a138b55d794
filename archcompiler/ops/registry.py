"""The registry itself: `OpDef`, what it is made of, `OPS` and `register`.

An `OpDef` is everything every stage needs to know about one op: the model of
its arguments, its shape rule, its parameter and multiply-add counts (and what
it costs beyond them, as other tools count it: `costs`), a label,
its drawing category, its channel rule for emitted source, its role in the
papers' table form, and one description of the module it lowers to
(`lowering`), which both the compiled model (`lower`) and the standalone
source (`emit`) are made from (`codegen`).  No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, Hashable, Iterable, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, StrictInt

Shape = tuple[int, ...]  # one sample's shape: (C, H, W) for maps, (F,) for vectors
Window = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # kernel, stride, dilation
POINTWISE: Window = ((1, 1), (1, 1), (1, 1))
Pair = Union[StrictInt, tuple[StrictInt, StrictInt]]


class ShapeError(ValueError):
    """An op cannot take the shapes it is given; the shapes stage adds where."""


class Args(BaseModel):
    """Base of every op's arguments: unknown keys are errors, values are frozen and finite.

    A nan or inf argument (`factor: .nan`) would reach the generated code as a
    bare `nan`; no layer means it, so validation refuses it with a location.
    """

    # defer_build: a model's validator is built when it first validates, so that importing
    # archc does not build one for each of the registry's ops, of which a spec uses a few.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)
    # torch's names for this op's arguments, for the hint on an unknown key: {"kernel_size": "k"}.
    torch_names: ClassVar[dict[str, str]] = {}


class NoArgs(Args):
    pass


ACTIVATIONS: dict[str, tuple[str, str]] = {
    # name: (module class: torch.nn's, or archc's own in archcompiler.modules; functional template on "{}")
    "relu": ("nn.ReLU", "torch.relu({})"),
    "relu6": ("nn.ReLU6", "F.relu6({})"),
    "leaky_relu": ("nn.LeakyReLU", "F.leaky_relu({})"),
    "elu": ("nn.ELU", "F.elu({})"),
    "gelu": ("nn.GELU", "F.gelu({})"),
    "silu": ("nn.SiLU", "F.silu({})"),
    "sigmoid": ("nn.Sigmoid", "torch.sigmoid({})"),
    "tanh": ("nn.Tanh", "torch.tanh({})"),
    # MobileNetV3's piecewise-linear activations
    "hardswish": ("nn.Hardswish", "F.hardswish({})"),
    "hardsigmoid": ("nn.Hardsigmoid", "F.hardsigmoid({})"),
    # LeCun's squashing function (LeNet-5)
    "scaled_tanh": ("ScaledTanh", "1.7159 * torch.tanh({} * (2.0 / 3.0))"),
}
ActName = Optional[Literal[tuple(ACTIVATIONS)]]  # type: ignore[valid-type]

# The activations torch can run in place with gradients equal to the out-of-place form's: name -> in-place
# functional template on "{}".  relu, sigmoid and tanh read only their result in backward; relu6, silu and
# hardswish read their input, and torch's autograd keeps a copy of it when they run in place (a fresh tensor:
# ACTIVATION_SAVES), so overwriting the input still loses nothing.  gelu and hardsigmoid have no in-place
# functional form, LeCun's scaled tanh is a formula; they never run in place.  Nor does elu: in place, its
# backward computes the slope below zero from the result (result + alpha) instead of from the input
# (alpha * exp(input)), which rounds differently (gradients 1 ulp apart, tests/test_inplace.py's random wirings).
INPLACE_ACTIVATIONS: dict[str, str] = {
    "relu": "torch.relu_({})",
    "relu6": "F.relu6({}, inplace=True)",
    "leaky_relu": "F.leaky_relu({}, inplace=True)",
    "sigmoid": "torch.sigmoid_({})",
    "tanh": "torch.tanh_({})",
    "silu": "F.silu({}, inplace=True)",
    "hardswish": "F.hardswish({}, inplace=True)",
}
# Of those, the ones whose torch.nn module takes `inplace=True`.
INPLACE_MODULES = frozenset({"relu", "relu6", "leaky_relu", "silu", "hardswish"})


# ---------------------------------------------------------------------------
# the lowering description: one per op, read by `codegen` for both consumers

_SAME: Any = object()  # "the same as `value`"
REQUIRED: Any = object()  # a keyword argument that is always written


@dataclass(frozen=True)
class Arg:
    """A value that comes from the spec: `value` in the compiled model; in emitted source, the
    spec's expression when `field` (a path into the op's arguments) was written as one inside a
    block, else the literal `shown`.

    `written` is the argument as the spec holds it, for the expression case (a conv's `pad`, whose
    computed padding differs from what was written); it defaults to `shown`, which defaults to `value`.
    """

    value: Any
    field: Optional[tuple[Any, ...]] = None
    shown: Any = _SAME
    written: Any = _SAME

    @property
    def literal(self) -> Any:
        return self.value if self.shown is _SAME else self.shown

    @property
    def spec_value(self) -> Any:
        return self.literal if self.written is _SAME else self.written


@dataclass(frozen=True)
class InChannels:
    """The input's channel count: a number in the compiled model, `in_channels`-based code in a block class."""

    value: int


@dataclass(frozen=True)
class Ref:
    """A name that is not called: `torch.float32`."""

    name: str


@dataclass(frozen=True)
class Kw:
    """A keyword argument; emitted source leaves it out when it is a literal equal to `default`."""

    name: str
    value: Any
    default: Any = REQUIRED


@dataclass(frozen=True)
class Construct:
    """A call that builds a module (or a value one needs): `callee(*args, **kwargs)`, nested freely.

    `callee` is "nn.X" (torch.nn), "torch.x", a bare name of archc's own support code (a module of
    `archcompiler.modules`, or `rbf_prototypes`; emitted source copies its definition), or the
    dotted path of any importable object (a plugin's module).  Arguments are literals, `Arg`,
    `InChannels`, `Ref`, `Construct` or None, each a positional argument or the value of a `Kw`.
    """

    callee: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[Kw, ...] = ()


@dataclass(frozen=True)
class Const:
    """A number in a call template, `{name}` there: a literal, or in a block class an attribute set in
    `__init__` from the spec's expression.  With `unless`, a literal equal to it writes nothing;
    otherwise `fmt` (on "{}") is written."""

    value: Any
    field: str
    unless: Any = REQUIRED
    fmt: str = "{}"


@dataclass(frozen=True)
class Lowering:
    """How one node runs: the module it becomes (or None) and its call in the forward.

    `call` is a template: `{m}` is the module, `{0}`, `{1}` ... the inputs, `{args}` all of them
    comma-separated, and `{NAME}` the `consts` of that name.

    `parameter`, instead of a module: a `Construct` that makes a tensor, which becomes a trainable
    `nn.Parameter` attached at the node's own path, an attribute of the enclosing module rather
    than a submodule (torchvision's ConvNeXt `layer_scale`: state_dict key `features.1.0.layer_scale`);
    `{m}` in the call is then that parameter.
    """

    module: Optional[Construct]
    call: str = "{m}({0})"
    consts: dict[str, Const] = field(default_factory=dict)
    parameter: Optional[Construct] = None
    # In-place forms, for the forward writer (codegen.inplace_plan); None / empty: none.
    # `inplace_call`: the call with the op's own trailing activation run in place on the intermediate
    # it made itself (always safe: nothing else holds that tensor).  `overwrite`: for input k, a call
    # that writes the result into input k; used only where codegen proves input k dead and unneeded
    # by autograd.  Both compute bit-identical results to `call`.
    inplace_call: Optional[str] = None
    overwrite: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.module is not None and self.parameter is not None:
            raise TypeError("a lowering is a module or a parameter, not both")


@dataclass(frozen=True)
class Lowered:
    """A built node: its torch module (or None) and its call template (see `Lowering`, without consts).

    What the compiled model holds per node; an op written without a `lowering` (an older plugin)
    returns one from its `lower` function.
    """

    module: Any
    call: str
    parameter: bool = False  # `module` is an nn.Parameter, attached at the node's path (see `Lowering.parameter`)
    inplace_call: Optional[str] = None  # see `Lowering`, consts filled in
    overwrite: dict[int, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# the other parts of an OpDef


@dataclass(frozen=True)
class Category:
    """A drawing category: the fill colour of its boxes and its line in a diagram's legend."""

    colour: str
    legend: str


# One colour per op category, shared by every diagram; in the legend's order.
CATEGORIES: dict[str, Category] = {
    "convolution": Category("#cfe2f3", "convolution"),
    "pool": Category("#d9ead3", "pooling"),
    "norm": Category("#fff2cc", "normalisation"),
    "act": Category("#fce5cd", "activation"),
    "dense": Category("#d9d2e9", "linear"),
    "join": Category("#eeeeee", "concat / add"),
    "shape": Category("#f3f3f3", "reshape, scale"),
    "regularize": Category("#f4cccc", "dropout"),
}


def _yes(a: Any) -> bool:
    return True


def _no(a: Any) -> bool:
    return False


@dataclass(frozen=True)
class Autograd:
    """What an op's backward reads, so that the forward writer knows when a tensor may be overwritten
    in place (`codegen.inplace_plan`).  The defaults assume the worst: an op registered without one
    (a plugin's) never has its input or output overwritten.

    - `reads_inputs`: its backward needs the values of its inputs (conv: for the weight's gradient);
    - `reads_output`: (args) -> whether its backward needs its own output (relu, sigmoid; a conv or
      join with an `act`);
    - `fresh`: its output is a new tensor, never a view of an input nor an input itself (flatten,
      identity and dropout in eval mode are not);
    - `passes_input`: its output is its first input itself, or (in training mode) a fresh tensor
      (identity; dropout and stochastic depth, which pass their input on in eval mode).  Writing into
      its output may then write into that input, which the in-place plan checks in its stead.
    """

    reads_inputs: bool = True
    reads_output: Callable[[Any], bool] = _yes
    fresh: bool = False
    passes_input: bool = False


# what most ops' backwards read: their inputs (conv, norm, pool), not their output unless an `act` follows
READS_INPUTS = Autograd(reads_inputs=True, reads_output=lambda a: getattr(a, "act", None) is not None, fresh=True)
READS_NOTHING = Autograd(reads_inputs=False, reads_output=lambda a: getattr(a, "act", None) is not None, fresh=True)
# the identity, and what is one in eval mode: a backward that keeps at most its own mask
PASSES_INPUT = Autograd(reads_inputs=False, reads_output=lambda a: False, passes_input=True)


def _cannot(a: Any) -> None:
    return None


@dataclass(frozen=True)
class Fold:
    """How the inference build (`optimize.inference_model`) folds an eval-mode BatchNorm, which is an affine
    map per channel, into the weights before it.  The default: the op neither holds nor takes one.

    - `own`: (args) -> this op's args without its own BatchNorm and with a bias (the lowering the folded
      weights go into), or None when it has none; the eager module holds the weighted module and the
      BatchNorm at the paths `parts` (a conv with `norm`: `ConvNormAct.conv`, `.bn`);
    - `absorb`: (args) -> the args, with a bias, of this op taking in a standalone BatchNorm applied to its
      output (output channels on axis 0 of its weight), or None where one cannot be (an `act` in between);
    - `norm`: the op is such a BatchNorm; folded, it runs as its input.
    """

    own: Callable[[Any], Optional[Any]] = _cannot
    absorb: Callable[[Any], Optional[Any]] = _cannot
    parts: tuple[str, str] = ("conv", "bn")
    norm: bool = False


@dataclass(frozen=True)
class Saved:
    """One tensor an op's autograd keeps for backward in training mode (what `memory` counts).

    `source`: input k (an int), "output" (the op's own result), or None: a tensor of the op's own making
    (a pre-activation, max-pool indices, BatchNorm's batch mean), `shape` elements per sample (or in
    all, when not `per_sample`).  `itemsize`: bytes per element, None for the dtype the network runs
    at (int64 indices are 8 whatever it is).  `needs_grad`: kept only when one of those inputs requires
    grad (a product keeps each factor for the other's gradient).  Parameters an op keeps (a conv's
    weight) are not listed: they are counted as parameters.
    """

    source: Union[int, Literal["output"], None]
    shape: Shape = ()
    per_sample: bool = True
    itemsize: Optional[int] = None
    needs_grad: Optional[tuple[int, ...]] = None
    what: str = ""


@dataclass(frozen=True)
class Saves:
    """What one node keeps for backward (`tensors`), and `view`: the input whose storage its output
    shares (a view, the input itself, or a result written into it in place), or None: fresh memory."""

    tensors: tuple[Saved, ...] = ()
    view: Optional[int] = None


@dataclass(frozen=True)
class RunsAs:
    """How a node runs in the compiled forward, for its `saves` rule: `inplace`, its own trailing
    activation in place (`lower(inplace=True)`, the default); `into`, the input it writes its result
    into (`codegen.inplace_plan`), or None."""

    inplace: bool = True
    into: Optional[int] = None


# What each activation's backward keeps, out of place and in place: its input, its "output", or None, a
# tensor of its own (relu6_ keeps a copy; LeCun's scaled tanh keeps its inner tanh's result).  Read off
# torch's autograd formulas (tools/autograd/derivatives.yaml) and checked against saved_tensors_hooks.
ACTIVATION_SAVES: dict[str, tuple[Optional[str], Optional[str]]] = {
    "relu": ("output", "output"), "relu6": ("input", None), "leaky_relu": ("input", "output"),
    "elu": ("input", "output"), "gelu": ("input", "input"), "silu": ("input", None),
    "sigmoid": ("output", "output"), "tanh": ("output", "output"), "hardswish": ("input", None),
    "hardsigmoid": ("input", "input"), "scaled_tanh": (None, None),
}


def act_saves(act: Optional[str], inplace: bool, pre: Saved, out: Shape) -> tuple[Saved, ...]:
    """What a trailing activation `act` keeps, after an op whose in-place form ran (`inplace`) or not:
    `pre` is the tensor it runs on when that is not the op's output (out of place: a pre-activation of
    the op's own, or an input written into); run in place, that tensor is the output.  `out`: its shape."""
    if act is None:
        return ()
    in_place = inplace and act in INPLACE_ACTIVATIONS
    pre = Saved("output") if in_place else pre
    kept = ACTIVATION_SAVES[act][in_place]
    if kept == "input":
        return (pre,)
    if kept == "output":
        return (Saved("output"),)
    return (Saved(None, out, what=f"{act}'s own result"),)


@dataclass(frozen=True)
class PaperRole:
    """How an op appears in the papers' table form (`paper`).

    - `type`: the "type" column, a text or a function of the arguments; None: the op's name.
    - `weighted`: a layer with weights as the papers count depth ("conv and linear layers in a row").
    - `family`: the kind of layer the table's note names it by ("conv", "linear").
    - `skipped`: reshaping, never a row of its own.
    - `patch`: the "patch size / stride" column from (args, input shapes), e.g. "7x7/2".
    - `filters`: (kh, kw, width) of a layer that an Inception branch is named by (a conv).
    - `pool`: the pool kind ("max", "avg") a branch starting with this op is named by.
    - `branches`: joins parallel branches along the channels: a module's branch columns
      are read off its outermost such join; inside a branch it is a split (1xn and nx1 in parallel).
    """

    type: Union[str, Callable[[Any], str], None] = None
    weighted: bool = False
    family: Optional[str] = None
    skipped: bool = False
    patch: Optional[Callable[[Any, list[Shape]], str]] = None
    filters: Optional[Callable[[Any], tuple[int, int, int]]] = None
    pool: Optional[str] = None
    branches: bool = False


# ---------------------------------------------------------------------------
# what an op costs beyond its MACs: `summary --include` and `--like` (analysis.Counting)

# The kinds of work other tools add to the MACs, each counted per sample by the ops' `costs` rules.
COST_KINDS: dict[str, str] = {
    "bias": "bias additions: one per output element of a conv, linear or subsample with a bias",
    "norm": "normalisation per element: BatchNorm (eval) 2 with an affine weight and bias, 1 without; "
            "layernorm and layernorm2d 5, 4 without (fvcore's rules); LRN size + 5",
    "act": "activation functions (an op of its own or an `act`), and softmax: one per output element",
    "pool": "pooling, the window sums of subsample included: one per input element",
    "add": "elementwise joins: add and mul, (inputs - 1) per output element; a residual add 1, 2 with a scale",
}


@dataclass(frozen=True)
class Counter:
    """Another tool's count of multiply-adds, reproduced by `summary --like NAME`: the MACs plus `kinds`,
    except for the ops whose `costs` give this tool's count of them (where its rule is its own)."""

    name: str
    kinds: tuple[str, ...]
    doc: str  # the tool, its version and the call whose total is reproduced


COUNTERS: dict[str, Counter] = {c.name: c for c in (
    Counter("fvcore", ("norm", "pool"),
            "fvcore 0.1.5: FlopCountAnalysis(model, x).total() in eval mode (its 'flops', one per multiply-add)"),
    Counter("torchinfo", ("bias",), "torchinfo 1.8.0: summary(model, input_size, mode='eval').total_mult_adds"),
    Counter("ptflops", ("bias", "norm", "act", "pool"),
            "ptflops 0.7.5: get_model_complexity_info(model, input, backend='pytorch'), its default backend"),
)}

# How many times ptflops' pytorch backend counts an activation's output elements: (as the op's torch.nn module,
# as the functional call of a fused `act`).  A module of a class in its MODULES_MAPPING counts once by its hook,
# and once more where that module's forward calls a torch.nn.functional function ptflops patches (F.relu, F.elu,
# F.gelu, F.silu); the functional forms count once if patched (F.relu6, F.elu, F.gelu, F.silu) and never
# otherwise (torch.relu, torch.sigmoid, torch.tanh, F.leaky_relu, F.hardswish, F.hardsigmoid).
PTFLOPS_ACTIVATION_COUNTS: dict[str, tuple[int, int]] = {
    "relu": (2, 0), "relu6": (1, 1), "leaky_relu": (1, 0), "elu": (2, 1), "gelu": (2, 1), "silu": (1, 1),
    "sigmoid": (0, 0), "tanh": (0, 0), "hardswish": (0, 0), "hardsigmoid": (0, 0), "scaled_tanh": (0, 0),
}


@dataclass(frozen=True)
class Costs:
    """What one node costs beyond its MACs, per sample.

    - `kinds`: a COST_KINDS name -> its count (a kind not given counts 0);
    - `tools`: a COUNTERS name -> that tool's count of the whole node, MACs included, where its rule for
      this op is not "the MACs plus its kinds" (torchinfo's 2 x C for a BatchNorm, ptflops' double hooks).
    """

    kinds: dict[str, int] = field(default_factory=dict)
    tools: dict[str, int] = field(default_factory=dict)


NO_COSTS = Costs()


def act_costs(act: Optional[str], elements: int, as_module: bool) -> tuple[dict[str, int], int]:
    """An activation `act` (or None) on `elements` values: its kinds, and ptflops' count of it."""
    if act is None:
        return {}, 0
    return {"act": elements}, PTFLOPS_ACTIVATION_COUNTS[act][0 if as_module else 1] * elements


def _no_costs(a: Any, s: list[Shape], o: Shape, r: Any) -> Costs:
    return NO_COSTS


def _no_macs(a: Any, s: list[Shape], o: Shape) -> int:
    return 0


def _no_params(a: Any, s: list[Shape]) -> tuple[int, int]:
    return 0, 0


def _pointwise(a: Any, s: list[Shape]) -> Window:
    return POINTWISE


@dataclass(frozen=True)
class OpDef:
    name: str
    args: type[Args]
    category: str  # drawing category (a key of CATEGORIES): palette, legend and table grouping
    infer: Callable[[Any, list[Shape]], Shape]
    label: Optional[Callable[[Any], str]] = None  # one line for diagrams and tables; None: the op's name
    # The module it lowers to, once, as data: (args, input shapes) -> Lowering; see `codegen`.
    lowering: Optional[Callable[[Any, list[Shape]], Lowering]] = None  # required
    params: Callable[[Any, list[Shape]], tuple[int, int]] = _no_params  # (trainable, buffer elements)
    macs: Callable[[Any, list[Shape], Shape], int] = _no_macs  # an op given a rule counts toward MACs
    arity: Optional[int] = 1  # number of inputs; None for any number >= 1
    # The spatial window each output reads, for receptive fields: ((kh, kw), (sh, sw), (dh, dw)).
    window: Callable[[Any, list[Shape]], Window] = _pointwise
    doc: str = ""
    internal: bool = False  # made by containers, not written as an op in a spec
    # Emitted source: the output's channel count as code, from (args, the inputs' channel codes,
    # input shapes, the emitter's `src`); None: the first input's channels.
    channels: Optional[Callable[[Any, list[str], list[Shape], Any], str]] = None
    paper: PaperRole = PaperRole()  # its role in the papers' table form
    channel_ranges: bool = False  # drawing: each edge in says which channels it fills (a concat)
    container: Optional[str] = None  # the spec container keyword that makes this join
    join_name: Optional[str] = None  # the join node's name inside its container
    origin: Optional[str] = None  # the importable module that registered the op; None for built-ins
    autograd: Autograd = Autograd()  # what its backward reads: when codegen may run things in place
    # What it costs beyond its MACs, per sample (bias adds, norm, activation, pooling, joins; other tools'
    # counts of it): (args, input shapes, output shape, RunsAs) -> Costs; see COST_KINDS and COUNTERS.
    costs: Callable[[Any, list[Shape], Shape, "RunsAs"], Costs] = _no_costs
    fold: Fold = Fold()  # BatchNorm folding in the inference build (optimize.py)
    # What it keeps for backward in training mode: (args, input shapes, output shape, RunsAs) -> Saves;
    # None (a plugin's op written without one): `memory` assumes it keeps its inputs, and says so.
    saves: Optional[Callable[[Any, list[Shape], Shape, "RunsAs"], Saves]] = None

    def __post_init__(self) -> None:
        if self.lowering is None:  # a keyword with a default only so that it can follow `label`
            raise TypeError(f"op '{self.name}' needs a lowering: the module it becomes, see codegen")
        if self.label is None:
            name = self.name
            object.__setattr__(self, "label", lambda a: name)

    @property
    def counted(self) -> bool:
        """Whether the op counts toward MACs (it has a MACs rule)."""
        return self.macs is not _no_macs


OPS: dict[str, OpDef] = {}


T = TypeVar("T")


class RuleMemo(Generic[T]):
    """What one pass over a graph found with an op's rules, kept per (op, arguments, shapes).

    Every rule is a function of its op's arguments and its shapes (plus, for some, how the node runs).  The
    layers of equal block instances share one frozen arguments object (`expand` replays them), so the
    object's identity stands for its value and the pass finds each rule's result once per distinct layer,
    without hashing the arguments.  The memo keeps each arguments object alive beside its result, so an id
    it holds is never reused for another object.  `infer_shapes`, `check_memory`, `analyze`, `runs_as` and
    `lower` each make one per pass.
    """

    __slots__ = ("_found", "_alive")

    def __init__(self) -> None:
        self._found: dict[tuple, T] = {}
        self._alive: list[Any] = []  # every arguments object keyed on, so that its id stays its own

    def __call__(self, op: str, args: Any, key: Iterable[Hashable], make: Callable[..., T], *inputs: Any) -> T:
        """The result for `op` with `args` on `key` (the shapes, and anything else the rule reads);
        `make(*inputs)` computes it the first time."""
        full = (op, id(args), *key)
        try:
            return self._found[full]
        except KeyError:
            self._alive.append(args)
            value = self._found[full] = make(*inputs)
            return value


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    OPS[op.name] = op
    return op


def spec_ops() -> list[str]:
    """The op names a spec may use."""
    return sorted(name for name, op in OPS.items() if not op.internal)


def join_op(container: str) -> OpDef:
    """The join op that spec container `container` makes."""
    return next(op for op in OPS.values() if op.container == container)


def counted_ops() -> list[str]:
    """The ops whose multiply-accumulates are counted, in registration order."""
    return [name for name, op in OPS.items() if op.counted]


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def counting_convention(by_family: bool = False) -> str:
    """The ops MACs count, as text: "conv, linear and rbf"; `by_family`: the papers' families, "conv and linear"."""
    if not by_family:
        return _and(counted_ops())
    return _and(list(dict.fromkeys(OPS[n].paper.family or n for n in counted_ops())))


def weighted_families() -> str:
    """The layer families the papers' depth counts, as text: "conv and linear"."""
    return _and(list(dict.fromkeys(op.paper.family or op.name for op in OPS.values() if op.paper.weighted)))


# ---------------------------------------------------------------------------
# helpers the definitions share


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def need_map(shapes: list[Shape], what: str) -> tuple[int, int, int]:
    (shape,) = shapes
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a (C, H, W) feature map, got shape {fmt_shape(shape)}")
    return shape  # type: ignore[return-value]


def need_vector(shapes: list[Shape], what: str) -> int:
    (shape,) = shapes
    if len(shape) != 1:
        raise ShapeError(f"{what} needs a flat (features,) input, got shape {fmt_shape(shape)}; add a 'flatten' before it")
    return shape[0]


def window_out(size: int, k: int, s: int, lo: int, hi: int, d: int, ceil: bool) -> int:
    """Output length of a sliding window, with PyTorch's rounding rules."""
    span = size + lo + hi - d * (k - 1) - 1
    if not ceil:
        return max(span // s + 1, 0)
    out = -(-span // s) + 1  # ceil(span / s) + 1, also for a window longer than the input
    # PyTorch drops a last window that would start inside the right padding.
    if out > 0 and (out - 1) * s >= size + lo:
        out -= 1
    return max(out, 0)


def positive(shape: Shape, what: str, inputs: Shape) -> Shape:
    if any(d <= 0 for d in shape):
        raise ShapeError(f"{what} turns input {fmt_shape(inputs)} into {fmt_shape(shape)}; every size must stay positive")
    return shape


def act_call(act: Optional[str], inner: str) -> str:
    """A call template followed by activation `act` (its functional form), or as it is."""
    return ACTIVATIONS[act][1].format(inner) if act else inner


def act_call_inplace(act: Optional[str], inner: str) -> Optional[str]:
    """`act_call` with the activation run in place on `inner`'s result, or None where it cannot be."""
    return INPLACE_ACTIVATIONS[act].format(inner) if act in INPLACE_ACTIVATIONS else None


def act_module(name: str, inplace: bool = False) -> Construct:
    """The activation's module; `inplace`: with `inplace=True` where its class takes it."""
    if inplace and name in INPLACE_MODULES:
        return Construct(ACTIVATIONS[name][0], (), (Kw("inplace", True, False),))
    return Construct(ACTIVATIONS[name][0])


def window_patch(a: Any, shapes: list[Shape]) -> str:
    """A sliding window's "kxk/s" for the papers' tables (the stride defaults to the kernel)."""
    (kh, kw), stride = pair(a.k), pair(a.s if a.s is not None else a.k)
    return f"{kh}x{kw}/{stride[0]}" if stride[0] == stride[1] else f"{kh}x{kw}/{stride[0]}x{stride[1]}"


def whole_map_window(a: Any, shapes: list[Shape]) -> Window:
    # Every output reads the whole input map (global pooling; flatten, for the layer after it).
    if len(shapes[0]) != 3:
        return POINTWISE
    hw = (shapes[0][1], shapes[0][2])
    return hw, hw, (1, 1)


def out_channels(a: Any, ins: list[str], shapes: list[Shape], src: Any) -> str:
    """Emitted channels of a layer that sets them with `out`."""
    return src.arg("out", a.out)


def simple(module: Construct) -> Callable[[Any, list[Shape]], Lowering]:
    """The lowering of an op that is always the same module, called on its input."""
    return lambda a, s: Lowering(module)
