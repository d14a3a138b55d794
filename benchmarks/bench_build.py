#!/usr/bin/env python3
"""Benchmark: build time, spec -> initialised module, against the reference constructor.

For each network it times, interleaved in one process (archc, reference,
archc, reference, ...):

  archc      `archcompiler.build(NAME)` from the zoo model's name: read the
             spec, expand, infer shapes, check memory, make and initialise
             every module (by its constructor, or as a copy of an equal
             layer's, `lower.stamped`), generate the forward.
  reference  the hand-written constructor the spec reproduces, with its own
             weight initialisation: torchvision's `googlenet(init_weights=True)`,
             `inception_v3(init_weights=True)` and `resnet50()`, timm's
             `create_model("inception_v4")` and `create_model("inception_resnet_v2")`.

Both run on the CPU (allocating and initialising the weights) and, with
`--meta`, also under `device="meta"` (archc) / `with torch.device("meta")`
(reference), where nothing is allocated and the time is all Python.  The
ratio archc / reference of the medians is printed per network, and beside
it the ratio of the fastest runs (min/min); the target, on the medians, is
at most 1.05.  A reference that is not importable (no torchvision or
timm) is reported as skipped; the archc side is still timed.  Run it where
torchvision and timm are installed, with this checkout on PYTHONPATH:

    PYTHONPATH=. /work/tvenv/bin/python benchmarks/bench_build.py

Exit codes: 0 ok (target met or not), 2 a build failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import archcompiler  # noqa: E402  (after the sys.path fix-up)

TARGET = 1.05
DEFAULT_REPEAT = 5


def _reference(name: str) -> Optional[Callable[[], Any]]:
    """The reference constructor of zoo model `name`, or None where its library is missing."""
    try:
        if name in ("inception_v4", "inception_resnet_v2"):
            import timm

            return lambda: timm.create_model(name, pretrained=False)
        import torchvision.models as tv
    except ImportError:
        return None
    return {
        "googlenet": lambda: tv.googlenet(init_weights=True),
        "inception_v3": lambda: tv.inception_v3(init_weights=True),
        "resnet50": lambda: tv.resnet50(),
    }[name]


def _on(device: Optional[str], make: Callable[[], Any]) -> Callable[[], Any]:
    if device is None:
        return make

    def made() -> Any:
        with torch.device(device):
            return make()

    return made


def measure(name: str, repeat: int, device: Optional[str]) -> dict[str, Any]:
    """Medians (ms) of archc's and the reference's build of `name`, timed alternately."""
    reference = _reference(name)
    sides: dict[str, Callable[[], Any]] = {"archc": lambda: archcompiler.build(name, device=device)}
    if reference is not None:
        sides["reference"] = _on(device, reference)
    runs: dict[str, list[float]] = {side: [] for side in sides}
    for make in sides.values():  # warm-up: imports, pydantic validators, caches
        torch.manual_seed(0)
        make()
    for _ in range(repeat):
        for side, make in sides.items():
            gc.collect()  # outside the timed region
            torch.manual_seed(0)
            t0 = time.perf_counter()
            model = make()
            runs[side].append((time.perf_counter() - t0) * 1e3)
            del model
    entry: dict[str, Any] = {"model": name, "device": device or "cpu"}
    for side, times in runs.items():
        entry[side] = {"ms_median": statistics.median(times), "runs_ms": times}
    if reference is None:
        entry["reference"] = None
        entry["skipped"] = "torchvision / timm not importable"
    else:
        entry["ratio"] = entry["archc"]["ms_median"] / entry["reference"]["ms_median"]
        # The fastest runs' ratio: on a machine whose speed changes from one run to the next, the medians
        # mix fast and slow runs, and the fastest of each side are the least disturbed.
        entry["ratio_min"] = min(runs["archc"]) / min(runs["reference"])
        entry["meets_target"] = entry["ratio"] <= TARGET
    return entry


def run(names: list[str], repeat: int, meta: bool, threads: Optional[int]) -> dict[str, Any]:
    if threads is not None:
        torch.set_num_threads(threads)
    results, errors = [], []
    for device in (None, "meta") if meta else (None,):
        for name in names:
            try:
                results.append(measure(name, repeat, device))
            except Exception as exc:  # noqa: BLE001 - reported per model
                errors.append(f"{name} ({device or 'cpu'}): {type(exc).__name__}: {exc}")
    versions = {"torch": torch.__version__, "archc": archcompiler.__version__, "python": sys.version.split()[0]}
    for lib in ("torchvision", "timm"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            versions[lib] = None
    return {"benchmark": "bench_build", "target": f"archc build <= {TARGET:g} x the reference constructor",
            "repeat": repeat, "threads": torch.get_num_threads(), "versions": versions, "results": results,
            "errors": errors}


def print_table(data: dict[str, Any]) -> None:
    v = data["versions"]
    print(f"build time, spec -> initialised module (median of {data['repeat']} interleaved runs after 1 warm-up; "
          f"torch {v['torch']}, torchvision {v['torchvision']}, timm {v['timm']}, {data['threads']} threads)")
    rows = [["model", "device", "archc ms", "reference ms", "ratio", "min/min", "target"]]
    for r in data["results"]:
        ref = r["reference"]
        rows.append([r["model"], r["device"], f"{r['archc']['ms_median']:.1f}",
                     f"{ref['ms_median']:.1f}" if ref else "-", f"{r['ratio']:.2f}" if ref else "-",
                     f"{r['ratio_min']:.2f}" if ref else "-",
                     ("met" if r["meets_target"] else "MISSED") if ref else "skipped"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print(f"target: {data['target']}, by the ratio of the medians (min/min: of the fastest runs of each side)")
    for e in data["errors"]:
        print(f"!!! ERROR {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_build.py",
        description="Time archcompiler.build (spec -> initialised module) against the reference constructor "
                    "(torchvision / timm), interleaved in one process, and print archc / reference.",
        epilog="Exit status: 0 ok (also when the target is missed), 2 a build failed.",
    )
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        default=["googlenet", "inception_v3", "resnet50", "inception_v4", "inception_resnet_v2"],
                        help="zoo models (default: googlenet inception_v3 resnet50 inception_v4 inception_resnet_v2)")
    parser.add_argument("--repeat", "-n", type=int, default=DEFAULT_REPEAT, metavar="N",
                        help=f"timed runs per side after one warm-up (default {DEFAULT_REPEAT})")
    parser.add_argument("--meta", action="store_true", help="also time both on the meta device")
    parser.add_argument("--threads", type=int, default=None, metavar="T", help="torch.set_num_threads(T)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    known = {"googlenet", "inception_v3", "resnet50", "inception_v4", "inception_resnet_v2"}
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"no reference constructor for {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    data = run(args.models, args.repeat, args.meta, args.threads)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_table(data)
    return 2 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
