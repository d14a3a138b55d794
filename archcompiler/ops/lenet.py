"""LeNet-5's own layers: trainable subsampling and Euclidean RBF output units."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

from pydantic import Field, StrictInt

from .registry import (
    ActName,
    Arg,
    Args,
    Construct,
    Costs,
    InChannels,
    Kw,
    Lowering,
    OpDef,
    Pair,
    PaperRole,
    Ref,
    RunsAs,
    Saved,
    Saves,
    Shape,
    ShapeError,
    act_call,
    act_costs,
    act_saves,
    need_map,
    need_vector,
    out_channels,
    pair,
    positive,
    register,
    window_out,
    window_patch,
)


class SubsampleArgs(Args):
    torch_names: ClassVar[dict[str, str]] = {"kernel_size": "k", "stride": "s"}
    k: Pair = 2
    s: Optional[Pair] = None  # default: the kernel size
    act: ActName = None


class RBFArgs(Args):
    out: StrictInt = Field(gt=0)
    code: Literal["paley", "random"] = "paley"
    seed: StrictInt = 0


def _subsample_geometry(a: SubsampleArgs) -> tuple[tuple[int, int], tuple[int, int]]:
    k = pair(a.k)
    return k, pair(a.s) if a.s is not None else k


def _subsample_infer(a: SubsampleArgs, shapes: list[Shape]) -> Shape:
    c, h, w = need_map(shapes, "subsample")
    (kh, kw), (sh, sw) = _subsample_geometry(a)
    if min(kh, kw, sh, sw) <= 0:
        raise ShapeError("subsample kernel and stride must be positive")
    out = (c, window_out(h, kh, sh, 0, 0, 1, False), window_out(w, kw, sw, 0, 0, 1, False))
    return positive(out, f"subsample {kh}x{kw}/{sh}", (c, h, w))


def _subsample_lowering(a: SubsampleArgs, shapes: list[Shape]) -> Lowering:
    k, s = _subsample_geometry(a)
    stride = Arg(s, ("s",), shown=a.s) if a.s is not None else Arg(s, ("k",), shown=a.k)
    module = Construct("Subsample2d", (InChannels(shapes[0][0]), Arg(k, ("k",), shown=a.k), stride))
    return Lowering(module, act_call(a.act, "{m}({0})"))


def _subsample_costs(a: SubsampleArgs, shapes: list[Shape], out: Shape, runs: object) -> Costs:
    n = math.prod(out)
    act, act_ptflops = act_costs(a.act, n, as_module=False)
    # torchinfo: its coefficients and biases once per sample (2 x C); fvcore counts none of avg_pool2d, mul
    # and add; ptflops, the F.avg_pool2d Subsample2d calls (one per input element), not the module.
    return Costs({"pool": math.prod(shapes[0]), "bias": n, **act},
                 {"torchinfo": 2 * out[0], "fvcore": 0, "ptflops": math.prod(shapes[0]) + act_ptflops})


def _subsample_saves(a: SubsampleArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # avg_pool2d keeps its input; (window sums) * coefficient keeps the sums for the coefficient's gradient;
    # the activation runs out of place on (...) + bias
    kept = (Saved(0, what="input"), Saved(None, out, what="window sums"))
    return Saves(kept + act_saves(a.act, False, Saved(None, out, what="pre-activation"), out))


def _rbf_saves(a: RBFArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
    # (x - prototypes) ** 2 keeps the differences, one per unit and input feature
    return Saves((Saved(None, (a.out, shapes[0][0]), what="differences"),))


register(OpDef(
    "subsample", SubsampleArgs, "pool", _subsample_infer,
    lambda a: "subsample %s" % "x".join(map(str, pair(a.k))) + (f" +{a.act}" if a.act else ""),
    _subsample_lowering,
    params=lambda a, s: (2 * s[0][0], 0), costs=_subsample_costs,
    window=lambda a, s: (*_subsample_geometry(a), (1, 1)), paper=PaperRole("subsampling", patch=window_patch),
    saves=_subsample_saves,
    doc="Trainable subsampling (LeNet-5's S layers): each window's sum times a per-map coefficient, "
        "plus a per-map bias, then `act`.",
))


def rbf_prototypes(out: int, features: int, code: str = "paley", seed: int = 0) -> list[list[int]]:
    """The fixed +-1 prototype of each RBF unit.

    `paley`: rows 1..out of the Hadamard matrix of order `features` built by
    Paley's construction (needs features - 1 a prime = 3 mod 4; 84 - 1 = 83
    is): every two prototypes differ in exactly half their entries, the error
    correcting code LeCun et al. mention as an alternative to their bitmaps.
    `random`: each entry +-1 with equal probability, from `seed`.
    """
    if code == "random":
        import random

        rng = random.Random(seed)
        return [[rng.choice((-1, 1)) for _ in range(features)] for _ in range(out)]
    q = features - 1
    if q < 3 or q % 4 != 3 or any(q % d == 0 for d in range(2, math.isqrt(q) + 1)):
        raise ShapeError(f"rbf code 'paley' needs an input size one more than a prime = 3 mod 4 "
                         f"(such as 84), got {features}; use code: random")
    if out > q:
        raise ShapeError(f"rbf code 'paley' gives at most {q} prototypes of size {features}, asked for {out}")
    squares = {(i * i) % q for i in range(1, q)}

    def chi(x: int) -> int:  # the Legendre symbol of x modulo q
        return 0 if x % q == 0 else (1 if x % q in squares else -1)

    # H = I + S with S = [[0, 1...], [-1..., Q]], Q[i][j] = chi(j - i): a skew Hadamard matrix.
    return [[-1] + [chi(j - i) + (1 if i == j else 0) for j in range(q)] for i in range(out)]


def _rbf_infer(a: RBFArgs, shapes: list[Shape]) -> Shape:
    rbf_prototypes(a.out, need_vector(shapes, "rbf"), a.code, a.seed)
    return (a.out,)


def _rbf_lowering(a: RBFArgs, shapes: list[Shape]) -> Lowering:
    # The prototypes are computed where the module is built: emitted source carries `rbf_prototypes`.
    prototypes = Construct("rbf_prototypes", (Arg(a.out, ("out",)), InChannels(shapes[0][0]), a.code, a.seed))
    return Lowering(Construct("RBF", (Construct("torch.tensor", (prototypes,), (Kw("dtype", Ref("torch.float32")),)),)))


register(OpDef(
    "rbf", RBFArgs, "dense", _rbf_infer, lambda a: f"RBF {a.out}", _rbf_lowering,
    params=lambda a, s: (0, a.out * s[0][0]),
    macs=lambda a, s, o: a.out * s[0][0], channels=out_channels,
    # its subtractions, squares and sums are elementwise tensor ops none of the three tools counts
    costs=lambda a, s, o, r: Costs(tools={"fvcore": 0, "torchinfo": 0, "ptflops": 0}),
    paper=PaperRole("RBF", weighted=True, family="linear"), saves=_rbf_saves,
    doc="Euclidean radial basis units (LeNet-5's output): unit j gives the squared distance between "
        "the input and its fixed +-1 prototype (a buffer, not trained); `code` chooses the prototypes.",
))
