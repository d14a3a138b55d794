"""Compiled model -> deployable files: ONNX, TorchScript, torch.export programs.

In: a compiled model (from `lower`) and the formats wanted.  Out: bytes per
format, each written by the caller (`archc build --emit ...`).  Everything
exports the eval-mode network (training-only heads are not part of it) on
an example batch of one at the spec's input size; ONNX and the exported
program take any batch size.

- `onnx`: `torch.onnx.export`, opset 17, input `input`, outputs named as in
  the spec; onnxruntime runs it (tests/test_export.py checks 1e-4 agreement).
- `torchscript`: `torch.jit.trace` of the eval model.  The generated forward
  is straight-line code without data-dependent branches, so a trace records
  all of it.
- `exported`: a `torch.export.ExportedProgram` saved with `torch.export.save`
  (a `.pt2` archive), with a dynamic batch dimension.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch

OPSET = 17


def example_input(model: Any, batch: int = 1) -> torch.Tensor:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, *model.graph.input_shape), generator=generator).to(device)


def eval_output_names(model: Any) -> list[str]:
    return [o.name for o in model.graph.eval_outputs()]


def to_onnx(model: Any) -> bytes:
    model.eval()
    names = eval_output_names(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            model, (example_input(model),), buffer, opset_version=OPSET, dynamo=False,
            input_names=["input"], output_names=names,
            dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        )
    return buffer.getvalue()


def to_torchscript(model: Any) -> bytes:
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # Constant tensors the forward builds (LeNet-5's connection table) are constants indeed.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example_input(model), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def exported_program(model: Any) -> torch.export.ExportedProgram:
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(model, (example_input(model, 2),), dynamic_shapes=({0: batch},))


def to_exported(model: Any) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(exported_program(model), buffer)
    return buffer.getvalue()


def export(model: Any, fmt: str) -> bytes:
    """The model in `fmt` (onnx, torchscript or exported) as bytes."""
    return {"onnx": to_onnx, "torchscript": to_torchscript, "exported": to_exported}[fmt](model)
