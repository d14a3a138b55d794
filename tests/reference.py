"""The reference facts (tests/fixtures/reference/) and the deterministic fill.

The fill makes every tensor a pure function of its state_dict key and shape
(see tests/fixtures/reference/README.md), so a compiled spec with the
reference's keys gets the reference's weights without the reference library.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

REFERENCE = Path(__file__).parent / "fixtures" / "reference"


def facts(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def keys(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = (REFERENCE / f"{name}.keys.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        key, shape, dtype = row.split("\t")
        out.append((key, tuple(int(d) for d in shape.split(",")) if shape else (), dtype))
    return out


def hash_uniform(n: int, seed: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    r = torch.sin(i * 12.9898 + seed * 78.233) * 43758.5453
    return 2 * (r - torch.floor(r)) - 1


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
        v = s * math.sqrt(3 * 2 / math.prod(shape[1:]))
    return v.to(dtype)


@functools.lru_cache(maxsize=None)
def reference_state(name: str) -> "OrderedDict[str, torch.Tensor]":
    """The reference's whole state_dict under the fill, in its order (computed once per session; do not modify)."""
    return OrderedDict((k, fill_tensor(k, shape, getattr(torch, dtype))) for k, shape, dtype in keys(name))


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
