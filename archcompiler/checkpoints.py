"""Checkpoints: read, check, load and save the weights of a compiled model.

In: a checkpoint file, or a state_dict in memory, and a `torch.nn.Module`
(usually from `build`).  Out: a plain state_dict (`read_checkpoint`), a
`WeightsReport` of the keys that do not fit (`check_weights`), the model's
weights replaced (`load_weights`), or a file (`save_weights`).

A spec that names its layers like torchvision or timm has their state_dict
keys, so their checkpoints load as they are.  Formats:

- a state_dict saved with `torch.save` (.pt, .pth, .bin, any other name),
  read with `weights_only=True`: a checkpoint never runs code;
- a dict holding the state_dict under "state_dict", "model_state_dict" or
  "model" (training checkpoints, next to "epoch", "optimizer", ...);
- a safetensors file (.safetensors, or any name whose bytes are one).

If every key starts with "module." (left by DataParallel and
DistributedDataParallel), the prefix is stripped.  Loading is strict: a
mismatch raises `WeightsError` with a short report instead of torch's list of
every key.  A user's mistake (no such file, not a checkpoint) is a
`UserError`.  torch and safetensors are imported when a function needs them,
not when this module is imported.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .artifacts import write_file
from .errors import UserError

if TYPE_CHECKING:
    import torch

__all__ = ["WeightsError", "WeightsReport", "read_checkpoint", "normalize_state", "check_weights", "load_weights",
           "save_weights"]

Shape = tuple[int, ...]
PathLike = Union[str, os.PathLike]

# Keys under which training checkpoints keep the model's state_dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
DDP_PREFIX = "module."
# How many keys of each kind a mismatch report lists before "... and N more".
REPORT_LIMIT = 5

_STATE_HINT = ("expected torch.save(model.state_dict(), PATH), "
               "or a dict holding a state_dict under 'state_dict' or 'model'")


class WeightsError(UserError):
    """A checkpoint that does not fit the model; `report` says how.

    Its text is several lines: the counts, then a few keys of each kind.
    """

    def __init__(self, message: str, report: "WeightsReport", hint: str | None = None):
        self.report = report
        super().__init__(message, hint)

    def __str__(self) -> str:
        return f"error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")


@dataclass(frozen=True)
class WeightsReport:
    """How a state_dict differs from a model's, key by key.

    missing: the model's keys the state_dict lacks (model order); unexpected:
    the state_dict's keys the model lacks (state_dict order); misshaped:
    (key, checkpoint shape, model shape) for shared keys whose shapes differ.
    Dtypes are not compared: loading casts, as `load_state_dict` does.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[tuple[str, Shape, Shape]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)

    def headline(self) -> str:
        return f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.misshaped)} mis-shaped keys"

    def render(self, source: str, target: str, *, limit: int = REPORT_LIMIT) -> str:
        """The report: "SOURCE does not fit TARGET: COUNTS", then up to `limit` keys of each kind."""
        lines = [f"{source} does not fit {target}: {self.headline()}"]
        width = min(max((len(k) for k, _, _ in self.misshaped[:limit]), default=0), 60)
        for title, rows in (
            ("missing (in the model, not in the checkpoint)", list(self.missing)),
            ("unexpected (in the checkpoint, not in the model)", list(self.unexpected)),
            ("mis-shaped (checkpoint vs model)",
             [f"{k:<{width}}  {_fmt(a)} vs {_fmt(b)}" for k, a, b in self.misshaped]),
        ):
            if not rows:
                continue
            lines.append(f"  {title}:")
            lines += [f"    {row}" for row in rows[:limit]]
            if len(rows) > limit:
                lines.append(f"    ... and {len(rows) - limit} more")
        return "\n".join(lines)


def read_checkpoint(path: PathLike) -> dict[str, "torch.Tensor"]:
    """The state_dict in the checkpoint at `path`, on the CPU, keys without a DDP "module." prefix.

    Keys come in the file's order: a state_dict's for torch.save files, sorted for safetensors files.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint file",
                        hint="check the path; a relative one is from the current directory")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a checkpoint file", hint="name the .pt or .safetensors file in it")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return normalize_state(_read_safetensors(path), str(path))
    return normalize_state(_read_torch(path), str(path))


def normalize_state(obj: Any, source: str = "the state_dict") -> dict[str, "torch.Tensor"]:
    """`obj` as a plain state_dict: unwrapped from a training checkpoint, DDP prefix stripped.

    Raises UserError, naming `source`, if it is not a dict of tensors.
    """
    import torch

    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise UserError(f"{source} holds {_a(obj)}, not a state_dict", hint=_STATE_HINT)
    if not obj:
        raise UserError(f"{source} holds an empty state_dict", hint=_STATE_HINT)
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        names = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
        raise UserError(f"{source} holds no tensors (its keys: {names})", hint=_STATE_HINT)
    for k, v in obj.items():
        if not isinstance(k, str):
            raise UserError(f"{source}: key {k!r} is {_a(k)}, not a string", hint=_STATE_HINT)
        if not isinstance(v, torch.Tensor):
            raise UserError(f"{source}: entry {k!r} is {_a(v)}, not a tensor", hint=_STATE_HINT)
        if v.layout != torch.strided:  # else copying it into a (dense) parameter fails deep inside torch
            raise UserError(f"{source}: entry {k!r} is a {str(v.layout).removeprefix('torch.')} tensor, "
                            "not a dense one", hint="a state_dict holds dense tensors: save tensor.to_dense()")
    if all(k.startswith(DDP_PREFIX) for k in obj):
        return {k[len(DDP_PREFIX):]: v for k, v in obj.items()}
    return dict(obj)


def check_weights(model: "torch.nn.Module", state: Mapping[str, "torch.Tensor"]) -> WeightsReport:
    """Compare `state`'s keys and shapes with `model.state_dict()`'s, buffers included.

    A missing BatchNorm `num_batches_tracked` counter is not a mismatch: checkpoints
    saved before BatchNorm had it (older torchvision weights) lack it, and torch's
    own loading starts it at zero; `load_weights` does the same.
    """
    expected = model.state_dict()
    return WeightsReport(
        missing=[k for k in expected if k not in state and not k.endswith(".num_batches_tracked")],
        unexpected=[k for k in state if k not in expected],
        misshaped=[(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
                   if k in state and tuple(state[k].shape) != tuple(v.shape)],
    )


def load_weights(model: "torch.nn.Module", path_or_state: Union[PathLike, Mapping[str, Any]]) -> None:
    """Replace `model`'s weights by a checkpoint's (a path, or a state_dict in memory), strictly.

    Raises WeightsError, with a short report, unless the keys and shapes are exactly the model's.
    """
    if isinstance(path_or_state, Mapping):
        source, state = "the state_dict", normalize_state(path_or_state)
    else:
        source, state = str(path_or_state), read_checkpoint(path_or_state)
    report = check_weights(model, state)
    if not report.ok:
        raise WeightsError(report.render(source, _model_name(model)), report, _mismatch_hint(report, state, model))
    counters = {k: v.new_zeros(()) for k, v in model.state_dict().items()
                if k.endswith(".num_batches_tracked") and k not in state}
    model.load_state_dict({**state, **counters}, strict=True)


def save_weights(model: "torch.nn.Module", path: PathLike) -> None:
    """Write `model`'s state_dict to `path`: safetensors for .safetensors, else torch.save; atomically."""
    import torch

    path = Path(path)
    state = model.state_dict()
    if any(v.is_meta for v in state.values()):
        raise UserError(f"cannot save {path}: the model has no weights (it was built on the meta device)")
    if path.suffix == ".safetensors":
        safetensors_torch = _safetensors()
        plain, seen = {}, set()
        for k, v in state.items():
            v = v.detach().cpu().contiguous()
            if v.numel():
                if v.untyped_storage().data_ptr() in seen:  # safetensors refuses tensors that share memory
                    v = v.clone()
                seen.add(v.untyped_storage().data_ptr())
            plain[k] = v
        # Bytes, not save_file: that writes a temporary of its own (mode 0600, unknown to archc's sweep).
        contents = safetensors_torch.save(plain, metadata={"format": "pt"})
    else:
        if any(v.device.type != "cpu" for v in state.values()):
            state = type(state)((k, v.cpu()) for k, v in state.items())

        def contents(tmp: str) -> None:
            torch.save(state, tmp)

    write_file(path, contents)


# ---------------------------------------------------------------------------- helpers


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _all_tensors(obj: Mapping) -> bool:
    import torch

    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _a(obj: Any) -> str:
    """'an int', 'a list': the type of `obj` with its article, for messages."""
    name = type(obj).__name__
    return ("an " if name[0].lower() in "aeiou" else "a ") + name


def _model_name(model: Any) -> str:
    graph = getattr(model, "graph", None)
    return getattr(graph, "name", None) or type(model).__name__


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian), then '{'."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise UserError("reading and writing .safetensors files needs the safetensors package",
                        hint="pip install safetensors") from None
    return safetensors.torch


def _read_safetensors(path: Path) -> dict[str, "torch.Tensor"]:
    safetensors_torch = _safetensors()
    try:
        return safetensors_torch.load_file(str(path), device="cpu")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # SafetensorError and friends: a damaged or foreign file
        reason = " ".join(str(e).split())[:120]
        raise UserError(f"{path} is not a valid safetensors file ({reason})",
                        hint="a .safetensors file must be written by safetensors; "
                             "rename a torch.save file to .pt") from None


def _read_torch(path: Path) -> Any:
    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise UserError(f"{path} holds Python objects other than tensors, which archc will not unpickle",
                            hint="save model.state_dict(), not the model: a checkpoint is loaded with "
                                 "weights_only=True and never runs code") from None
        raise UserError(f"{path} is not a PyTorch checkpoint", hint=_STATE_HINT) from None
    except Exception:  # torch.load raises KeyError, EOFError, RuntimeError, ... on a file of another kind
        raise UserError(f"{path} is not a PyTorch checkpoint (nor a safetensors file)", hint=_STATE_HINT) from None


def _mismatch_hint(report: WeightsReport, state: Mapping[str, Any], model: Any) -> str | None:
    expected = model.state_dict()
    if report.misshaped and not report.missing and not report.unexpected:
        return "the same layers with other sizes: was it saved from this spec with other params (e.g. num_classes)?"
    if len(report.unexpected) == len(state):
        heads = {k.split(".", 1)[0] for k in state}
        if len(heads) == 1 and all("." in k for k in state):
            prefix = next(iter(heads)) + "."
            if any(k[len(prefix):] in expected for k in state):
                return (f"every key of the checkpoint starts with '{prefix}': "
                        "strip it, or save the inner model's state_dict")
        return "no key of the checkpoint is the model's: is it a checkpoint of another network?"
    shared = len(state) - len(report.unexpected)
    if shared * 2 < len(expected):
        return (f"only {shared} of the model's {len(expected)} keys are in the checkpoint: "
                "is it a checkpoint of another network?")
    return None
