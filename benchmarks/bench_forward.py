#!/usr/bin/env python3
"""Benchmark: archc's compiled models against the reference implementations, run for run.

For each network, in one process, with the reference's weights loaded into archc's model (so both
compute the same function; the largest relative difference of the eval outputs is printed):

  eager      forward of a batch of 8 in eval mode under torch.no_grad();
  train      one training step: forward in training mode (dropout on, BatchNorm on batch
             statistics, auxiliary heads too), the mean of every output summed as the loss,
             backward, an SGD step;
  compile    torch.compile (default inductor): the first call (compile time) and the median of
             the calls after it (steady state), eval mode, no_grad; skipped with --skip-compile;
  inference  archc's inference build (archcompiler.optimize.inference_model: BatchNorm folded,
             activations in place, channels_last on CPU) against the reference's eager forward.

Each cell is archc's median over the reference's median (below 1: archc is faster); the two sides
alternate within every repetition, so a busy machine slows both alike.  "min/min" is the same ratio
of the fastest runs.  A cell whose runs on either side spread by more than NOISY (max/min) is marked
"~".  Target (issue 14): the inference build at least 1.2x the reference's eager throughput (a ratio
of at most 1/1.2) on CPU for every network with BatchNorm; the verdict is printed per row.

The reference is torchvision's or timm's constructor named in the network's facts
(tests/fixtures/reference/, tests/fixtures/reference/modern/) when those libraries are importable
(run with /work/tvenv/bin/python and PYTHONPATH=. from the repository root); otherwise, and for a spec
without facts, the standalone source archc emits for the spec (`archc build --emit python`), and the
output says so.

Each network runs in a fresh Python process of its own (this script, `--worker`), so that one
network's timings do not depend on which networks ran before it: in one process, resnext101_32x8d's
inference build measured 1.15x after resnext101_64x4d and 1.41x alone (benchmarks/README.md; the
state the first network leaves in the memory allocator is the likely cause, not a measured one).
`--in-process` runs them all in this process, as before.

The allocator's settings are part of the result: with glibc's defaults, memory freed during a
forward goes back to the system and page-faults in again, and a network whose generated forward
frees its activations sooner than the reference does pays for it (efficientnet_b7: archc 1.17 to
1.58 of torchvision's eager time by default, 1.00 with the memory kept; benchmarks/README.md).
`--keep-freed-memory` runs the children with glibc told to keep it (`machine.KEEP_FREED_MEMORY`);
the environment line names the settings either way.

Exit status: 0 ok (whether or not the target is met), 2 a network failed to build or run, or its
outputs differ from the reference's by more than 1e-3 (timings of different functions are worthless):
the eager model's, or the inference build's where its float64 build also differs from the float64
eager model by more than 1e-3 (`fold_difference`; float32 rounding alone can move a deep network's
output past 1e-3 under the deterministic fill).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import machine  # noqa: E402  (benchmarks/machine.py)
import torch  # noqa: E402

import archcompiler  # noqa: E402  (after the sys.path fix-up)
from archcompiler.emit import emit_python  # noqa: E402
from archcompiler.graph import class_name  # noqa: E402
from archcompiler.optimize import inference_model  # noqa: E402

SEEDS = ["googlenet", "inception_v3", "alexnet", "resnet50", "vgg16", "inception_v4", "inception_resnet_v2"]
TARGET = 1 / 1.2  # inference build time / reference eager time
NOISY = 1.5
BATCH = 8
AGREE = 1e-3  # largest relative difference of eval outputs tolerated before timing


def reference_names() -> list[str]:
    import reference

    return SEEDS + [n for n in reference.modern_names() if n not in SEEDS]


# --------------------------------------------------------------------------- the two models


def _libraries() -> dict[str, Any]:
    found = {}
    for name in ("torchvision", "timm"):
        try:
            found[name] = __import__(name)
        except ImportError:
            pass
    return found


def _emitted(model: torch.nn.Module) -> torch.nn.Module:
    """The standalone source archc emits for `model`'s spec, executed, with `model`'s weights."""
    graph = model.graph
    name = f"archc_emitted_{graph.name}"
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module  # torch.compile looks a function's module up
    exec(compile(emit_python(graph), module.__file__, "exec"), module.__dict__)
    standalone = getattr(module, class_name(graph.name))()
    standalone.load_state_dict(model.state_dict(), strict=True)
    return standalone


def pair(name: str, libraries: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module, str, tuple[int, ...]]:
    """(archc's model, the reference, what the reference is, the input of one sample)."""
    import reference

    try:
        facts = reference.facts(name)
    except FileNotFoundError:
        facts = None
    constructor = facts["reference"].split("#")[0].strip() if facts else None
    library = constructor.split(".")[0] if constructor else None
    if facts is not None:
        sample = tuple(facts["input_shape"][1:])
        model = archcompiler.build(name, input_shape=sample)
    else:
        model = archcompiler.build(name)
        sample = model.graph.input_shape
    if library in libraries:
        ref = eval(constructor, dict(libraries))  # the facts' own constructor text (a fixture of this repository)
        reference.fill(ref)
        model.load_state_dict(ref.state_dict(), strict=True)
        return model, ref, constructor, sample
    return model, _emitted(model), "archc's emitted standalone source", sample


# --------------------------------------------------------------------------- timing


def _interleaved(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
    """Milliseconds of `a` and `b`, alternating (which goes first alternates too), after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for k in range(repeat):
        for fn, out in ((a, ta), (b, tb)) if k % 2 == 0 else ((b, tb), (a, ta)):
            gc.collect()
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
    return ta, tb


def _cell(ta: list[float], tb: list[float]) -> dict[str, Any]:
    noisy = any(max(t) / min(t) > NOISY for t in (ta, tb) if len(t) > 1 and min(t) > 0)
    return {"archc_ms": statistics.median(ta), "reference_ms": statistics.median(tb),
            "ratio": statistics.median(ta) / statistics.median(tb), "ratio_min": min(ta) / min(tb),
            "noisy": noisy, "archc_runs_ms": ta, "reference_runs_ms": tb}


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    return [t for v in out for t in _tensors(v)]


def _relative(a: Any, b: Any) -> float:
    return max(float((x.double() - y.double()).abs().max() / y.double().abs().max())
               for x, y in zip(_tensors(a), _tensors(b)))


def fold_difference(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The largest relative difference between the inference build of a float64 copy of `model` and that
    copy's eager eval output on `x` (in float64, so rounding cannot hide a wrong fold, nor fake one)."""
    exact = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return _relative(inference_model(exact)(x.double()), exact(x.double()))


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(t.float().mean() for t in _tensors(model(x)))
        loss.backward()
        optimizer.step()

    return step


def measure(name: str, libraries: dict[str, Any], repeat: int, skip_compile: bool) -> dict[str, Any]:
    model, ref, baseline, sample = pair(name, libraries)
    model.eval(), ref.eval()
    x = torch.randn((BATCH, *sample), generator=torch.Generator().manual_seed(0))
    row: dict[str, Any] = {"name": name, "baseline": baseline, "input": list(sample),
                           "batchnorm": any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in ref.modules())}
    fast = inference_model(model)
    with torch.no_grad():
        expected = ref(x)
        row["eager_difference"] = _relative(model(x), expected)
        row["inference_difference"] = _relative(fast(x), expected)
        # The inference build rounds differently (folded weights, channels_last), and under the deterministic
        # fill a deep network can magnify that past AGREE: efficientnet_v2_l's last stage carries activations
        # near 1e12 into squeeze-excitation sigmoids, where a float32 rounding error (about 1e5 there) flips a
        # gate whose argument is near zero; its inference build differs by 2.3e-2, its float64 one by 4e-15.
        # A 1e-6 change of the input, the check this replaces, moved it by 2.3e-2 on one machine and 3e-6 on
        # another, so it could not tell rounding from a wrong fold.  Where float32 differs, float64 decides,
        # to the same AGREE: even there efficientnet_b7 magnifies rounding (a 1e-15 change of its input moves
        # its output by 1.1e-4, and its inference build differs by 5.1e-5), while a wrong fold moves it by
        # far more (eps 1 % off in the first or a middle BatchNorm of efficientnet_v2_s: 0.8 and 0.6).  The
        # fold, in-place and layout logic are the same in float64; only PrepackedConv2d's oneDNN path is
        # float32-only, and tests/test_optimize.py checks that against nn.Conv2d.
        row["fold_difference_float64"] = (fold_difference(model, x) if row["inference_difference"] > AGREE
                                          else None)
        exact = row["fold_difference_float64"]
        if row["eager_difference"] > AGREE or (exact is not None and exact > AGREE):
            raise RuntimeError(f"outputs differ from the reference's: eager {row['eager_difference']:.2e}, "
                               f"inference build {row['inference_difference']:.2e}"
                               + (f" (in float64 {exact:.2e})" if exact is not None else ""))
        row["eager"] = _cell(*_interleaved(lambda: model(x), lambda: ref(x), repeat))
        row["inference"] = _cell(*_interleaved(lambda: fast(x), lambda: ref(x), repeat))
    fast = None  # its weights freed before the training step
    if not skip_compile:
        row["compile"] = _compile_cells(model, ref, x, repeat)
    model.train(), ref.train()
    row["train"] = _cell(*_interleaved(_train_step(model, x), _train_step(ref, x), repeat))
    row["meets_target"] = row["inference"]["ratio"] <= TARGET if row["batchnorm"] else None
    return row


def _compile_cells(model: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, repeat: int) -> dict[str, Any]:
    """Compile time (first call; one run per side, archc first) and the steady state after it.

    A small conv net is compiled first, so that neither side pays Inductor's one-time start (its
    imports, its C++ toolchain check and headers).  Without it, archc's resnet18, compiled first in the
    process, took 8.6 times as long as torchvision's (benchmarks/README.md).  Inductor's caches are off
    while both compile: the two sides lower to the same kernels, so with them on the side compiled second
    reuses the first's compiled kernels (resnet18: 7.3x with the caches on, 1.08x off, in one run each)."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    times = {}
    compiled = {}
    with torch.no_grad(), inductor_config.patch(force_disable_caches=True):
        warm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
        torch.compile(warm)(torch.randn(2, 3, 8, 8))
        for side, m in (("archc", model), ("reference", ref)):
            torch._dynamo.reset()
            c = torch.compile(m)
            t = time.perf_counter()
            c(x)
            times[side] = (time.perf_counter() - t) * 1e3
            compiled[side] = c
        steady = _cell(*_interleaved(lambda: compiled["archc"](x), lambda: compiled["reference"](x), repeat))
    return {"compile_archc_ms": times["archc"], "compile_reference_ms": times["reference"],
            "compile_ratio": times["archc"] / times["reference"], "steady": steady}


# --------------------------------------------------------------------------- output


def _r(cell: Optional[dict[str, Any]]) -> str:
    if not cell:
        return "-"
    return f"{cell['ratio']:.2f}{'~' if cell['noisy'] else ''}"


def print_table(data: dict[str, Any]) -> None:
    headers = ["network", "eager", "train", "compile time", "compiled", "inference", "(min/min)", "speed-up",
               "target", "difference (eager / inference)"]
    rows = []
    for r in data["results"]:
        if "error" in r:
            rows.append([r["name"], "ERROR", *["-"] * (len(headers) - 2)])
            continue
        c = r.get("compile")
        inf = r["inference"]
        verdict = "n/a (no BN)" if r["meets_target"] is None else "met" if r["meets_target"] else "MISSED"
        sensitive = r.get("fold_difference_float64") is not None
        rows.append([r["name"], _r(r["eager"]), _r(r["train"]), f"{c['compile_ratio']:.2f}" if c else "-",
                     _r(c["steady"]) if c else "-", _r(inf), f"{inf['ratio_min']:.2f}",
                     f"{1 / inf['ratio']:.2f}x", verdict,
                     f"{r['eager_difference']:.1e} / {r['inference_difference']:.1e}{'*' if sensitive else ''}"])
    print(f"archc / reference, median time ratios (below 1: archc faster); batch {BATCH}, "
          f"{data['repeat']} interleaved runs after a warm-up; ~: a side's runs spread over {NOISY}x")
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    for row in [headers, *rows]:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    env = data["environment"]
    print(f"torch {env['torch']} ({env['threads']} thread(s), {env['cpus']} cpus: {env.get('cpu', '?')}), "
          f"allocator: {env.get('allocator', '?')}, python {env['python']}, "
          f"{env.get('torchvision') or 'no torchvision'}, {env.get('timm') or 'no timm'}")
    baselines = sorted({r["baseline"] for r in data["results"] if "baseline" in r})
    print("reference: " + "; ".join(baselines))
    if any("emitted" in b for b in baselines):
        print("note: torchvision/timm were not importable (or the network has no reference facts): the "
              "reference is archc's own emitted standalone source, so these ratios are not against the "
              "libraries")
    print("inference: archc's inference build against the reference's eager forward; "
          f"target: at most {TARGET:.3f} (1.2x the throughput) for every network with BatchNorm")
    print("difference: the largest relative difference of the eval outputs from the reference's")
    for r in data["results"]:
        if "error" not in r and r.get("fold_difference_float64") is not None:
            print(f"*: {r['name']}'s inference build differs from the reference by more than {AGREE:.0e} in "
                  "float32 under the deterministic fill, which magnifies float rounding; in float64 it equals the "
                  f"eager model to {r['fold_difference_float64']:.1e}, so the difference is rounding, not the fold; "
                  "tests/test_optimize.py also checks every zoo network's inference build against its eager model "
                  "with random BatchNorm statistics (the variants beyond each spec file's first with ARCHC_HEAVY=1)")
    for e in data["errors"]:
        print(f"!!! ERROR {e}", file=sys.stderr)


def _measured(name: str, libraries: dict[str, Any], repeat: int, skip_compile: bool) -> dict[str, Any]:
    """`measure`'s row, or {"name", "error"} when the network failed (the others still run); with the id of
    the process that measured it and the allocator settings it ran with."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep --json's stdout clean of libraries' prints
            row = measure(name, libraries, repeat, skip_compile)
    except Exception as e:
        row = {"name": name, "error": f"{type(e).__name__}: {e}"}
    return {**row, "pid": os.getpid(), "allocator": machine.allocator(dict(os.environ))}


def _child_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment each network's process runs with: this one's, plus glibc's keep-freed-memory settings
    under --keep-freed-memory."""
    return {**os.environ, **(machine.KEEP_FREED_MEMORY if args.keep_freed_memory else {})}


def _in_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """`name`'s row, measured by this script in a fresh process (`--worker`), with the same options."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--only", name, "--repeat", str(args.repeat)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.skip_compile:
        command.append("--skip-compile")
    # its stderr (warnings) passes through
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=_child_environment(args))
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"name": name, "error": f"its process exited {proc.returncode} without a result "
                                       f"(output: {proc.stdout.strip()[-200:]!r})"}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_forward.py",
        description="Time archc's compiled models against torchvision's and timm's (or, without them, against "
                    "archc's emitted standalone source), the two sides interleaved with the same weights, each network in a "
                    "fresh process: "
                    "eager forward, a training step, torch.compile (compile time and steady state) and archc's "
                    "inference build. Prints one table of archc / reference median time ratios.",
        epilog="Run it as: PYTHONPATH=. /work/tvenv/bin/python benchmarks/bench_forward.py. Exit status: 0 ok "
               "(also when the target is missed), 2 a network failed or its outputs differ from the reference's.")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these networks (zoo names, or spec paths: "
                        "compared against the emitted source); default: every reference-layout network")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side and measurement (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out torch.compile (minutes per network)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--in-process", action="store_true", help="run every network in this process "
                        "(default: a fresh process per network, so that none is timed in the state an earlier "
                        "one left)")
    parser.add_argument("--keep-freed-memory", action="store_true", help="run each network's process with glibc's "
                        "malloc keeping freed memory for reuse instead of returning it to the system (" +
                        ", ".join(f"{k}={v}" for k, v in machine.KEEP_FREED_MEMORY.items()) + "); glibc reads "
                        "these at start, so not with --in-process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one network, its row as JSON
    args = parser.parse_args(argv)
    if args.worker and (not args.only or len(args.only) != 1):
        parser.error("--worker takes exactly one network (--only NAME)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.keep_freed_memory and args.in_process:
        parser.error("--keep-freed-memory needs a fresh process per network: leave out --in-process, or set "
                     + " and ".join(machine.KEEP_FREED_MEMORY) + " in this process's environment")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    libraries = _libraries()
    names = args.only or reference_names()
    if args.worker:
        print(json.dumps(_measured(names[0], libraries, args.repeat, args.skip_compile)))
        return 0
    results, errors = [], []
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name} ...", end="", file=sys.stderr, flush=True)  # minutes per network
        start = time.perf_counter()
        if args.in_process:
            row = _measured(name, libraries, args.repeat, args.skip_compile)
            gc.collect()
        else:
            row = _in_child(name, args)
        results.append(row)
        if "error" in row:
            errors.append(f"{name}: {row['error']}")
        print(f" {time.perf_counter() - start:.0f} s{' (failed)' if 'error' in row else ''}",
              file=sys.stderr, flush=True)
    data = {"results": results, "errors": errors, "repeat": args.repeat, "batch": BATCH, "target": TARGET,
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                            "cpu": machine.cpu(),
                            "allocator": machine.allocator(_child_environment(args)),
                            "python": platform.python_version(),
                            **{k: f"{k} {v.__version__}" for k, v in libraries.items()}}}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_table(data)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
