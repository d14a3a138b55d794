"""The reference facts (tests/fixtures/reference/) and the deterministic fill.

The fill makes every tensor a pure function of its state_dict key and shape
(see tests/fixtures/reference/README.md), so a compiled spec with the
reference's keys gets the reference's weights without the reference library.

A name is looked up in tests/fixtures/reference/ first, then in its
`modern/` folder (torchvision's later CNN families, read off torchvision
0.29.1 under the same fill: see modern/README.md); `modern_names()` lists
the latter.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch

REFERENCE = Path(__file__).parent / "fixtures" / "reference"
MODERN = REFERENCE / "modern"
KEYS_SUFFIX = ".keys.tsv"
REUSED_NUMEL = 1 << 20  # fresh_reference_state keeps entries this big for the next network


def _fixture(name: str, suffix: str) -> Path:
    for folder in (REFERENCE, MODERN):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no reference facts {name}{suffix} in {REFERENCE} or {MODERN}")


def modern_names() -> list[str]:
    """Every network with facts in modern/ (each has NAME.json and NAME.keys.tsv), sorted."""
    return sorted(p.name.removesuffix(KEYS_SUFFIX) for p in MODERN.glob(f"*{KEYS_SUFFIX}"))


def facts(name: str) -> dict:
    return json.loads(_fixture(name, ".json").read_text())


def keys(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = _fixture(name, KEYS_SUFFIX).read_text().splitlines()[1:]
    out = []
    for row in rows:
        key, shape, dtype = row.split("\t")
        out.append((key, tuple(int(d) for d in shape.split(",")) if shape else (), dtype))
    return out


def hash_uniform(n: int, seed: int) -> torch.Tensor:
    # In place, the same operations in the same order as the README's formula (so the same values),
    # holding two float64 copies at most: VGG's first linear layer has 103M entries.
    r = torch.arange(n, dtype=torch.float64).mul_(12.9898).add_(seed * 78.233).sin_().mul_(43758.5453)
    return r.sub_(torch.floor(r)).mul_(2).sub_(1)


def fill_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=dtype)
    s = hash_uniform(math.prod(shape), zlib.crc32(key.encode("utf-8")) % 100003).reshape(shape)
    if leaf == "running_var":
        v = 1 + 0.25 * s
    elif leaf == "running_mean":
        v = 0.1 * s
    elif leaf == "bias":
        v = 0.05 * s
    elif len(shape) == 1:
        v = 1 + 0.1 * s
    else:
        v = s.mul_(math.sqrt(3 * 2 / math.prod(shape[1:])))  # in place: the same values, one copy fewer
    return v.to(dtype)


def fresh_reference_state(name: str, reuse: Optional[dict] = None) -> "OrderedDict[str, torch.Tensor]":
    """The reference's whole state_dict under the fill, in its order, computed anew (for big networks used once).

    The fill depends on nothing but an entry's key, shape and dtype, so networks that share entries can
    share their fill: `reuse` maps (key, shape, dtype) to a filled tensor, is looked up first, and is
    left holding this network's big entries (a million elements or more) for the next network (all
    of torchvision's VGGs have the same 124M-parameter classifier).  Do not modify the tensors.
    """
    state = OrderedDict()
    for key, shape, dtype in keys(name):
        tensor = reuse.get((key, shape, dtype)) if reuse is not None else None
        state[key] = tensor if tensor is not None else fill_tensor(key, shape, getattr(torch, dtype))
    if reuse is not None:
        reuse.clear()
        reuse.update({(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")): v
                      for k, v in state.items() if v.numel() >= REUSED_NUMEL})
    return state


@functools.lru_cache(maxsize=None)
def reference_state(name: str) -> "OrderedDict[str, torch.Tensor]":
    """The reference's whole state_dict under the fill, in its order (computed once per session; do not modify)."""
    return fresh_reference_state(name)


def fill(model: torch.nn.Module) -> None:
    """Overwrite every state_dict entry of `model` by the deterministic rule."""
    state = {k: fill_tensor(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)


def reference_input(name: str) -> torch.Tensor:
    f = facts(name)
    shape = f["input_shape"]
    return hash_uniform(math.prod(shape), f["input_seed"]).reshape(shape).to(torch.float32)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())
