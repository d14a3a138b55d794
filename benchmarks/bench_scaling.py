#!/usr/bin/env python3
"""Benchmark: how `archc check` grows with the number of layers of a spec written out in full.

For each size N (default 1,000, 10,000 and 30,000) it writes, in a temporary
directory, a spec whose body is a list of N layers without `repeat` (conv 3x3,
BatchNorm, ReLU, over and over, on a 16x8x8 input), then times `archc check`
on it two ways:

  in-process  `archc check SPEC` through the command line's own entry
              (`archcompiler.cli.app`), in this process, its output captured;
              archcompiler's import is paid once before, outside the timing.
  subprocess  `python -c 'from archcompiler.cli import main; main()' check SPEC`
              as a fresh process, interpreter start-up and imports included.

Each is run once as a warm-up, then N times, with `gc.collect()` before
each run, outside the timed region; the median is reported, with
the time per layer, both as wall-clock time and as CPU time (this process's,
or the child's), which other jobs on a busy machine disturb much less.
Linearity is measured as the growth ratio of the two largest sizes,
time(large) / (large/small x time(small)): 1.0 is linear growth, and the
target is at most 1.25 (in-process), with the 10,000-layer check in under
1 s (in-process).  Verdicts are given on both clocks.  A miss is reported
and does not change the exit code.

Exit codes: 0 ok (target met or not), 2 a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archcompiler.cli import app  # noqa: E402  (after the sys.path fix-up)

DEFAULT_SIZES = (1_000, 10_000, 30_000)
DEFAULT_REPEAT = 3
TARGET_SECONDS = 1.0  # the 10,000-layer check, in-process
TARGET_SIZE = 10_000
TARGET_GROWTH = 1.25  # time(largest) / (size ratio x time(next largest)), in-process
CYCLE = ("- conv: {out: 16, k: 3, pad: 1}", "- batchnorm", "- relu")


def write_spec(directory: Path, layers: int) -> Path:
    """A spec of `layers` layers written out one by one (no `repeat`), in `directory`."""
    lines = ["archc: 1", f"name: flat{layers}", "input: [16, 8, 8]", "body:"]
    lines += ["  " + CYCLE[i % len(CYCLE)] for i in range(layers)]
    path = directory / f"flat{layers}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check_in_process(path: Path) -> str:
    """`archc check PATH` in this process; its output line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        app(["check", str(path)], standalone_mode=False)
    return out.getvalue()


def check_subprocess(path: Path) -> str:
    """`archc check PATH` as a fresh Python process; its output line."""
    proc = subprocess.run([sys.executable, "-c", "from archcompiler.cli import main; main()", "check", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn: Callable[[], str], repeat: int) -> tuple[list[float], list[float], str]:
    """One warm-up, then `repeat` timed runs: wall seconds, CPU seconds, the last output."""
    output = fn()
    wall, cpu = [], []
    for _ in range(repeat):
        gc.collect()  # the previous run's garbage, outside the timed region
        c0, t0 = _cpu(), time.perf_counter()
        output = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(_cpu() - c0)
    return wall, cpu, output


def run(sizes: list[int], repeat: int, subprocesses: bool) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="archc-scaling-") as tmp:
        for size in sizes:
            path = write_spec(Path(tmp), size)
            entry: dict[str, Any] = {"layers": size}
            ways = [("in_process", check_in_process)] + ([("subprocess", check_subprocess)] if subprocesses else [])
            for way, fn in ways:
                try:
                    runs, cpu, output = _timed(lambda: fn(path), repeat)
                except Exception as exc:  # noqa: BLE001 - reported per size
                    errors.append(f"{size} layers, {way}: {type(exc).__name__}: {exc}")
                    continue
                if f"{size:,} layers" not in output:
                    errors.append(f"{size} layers, {way}: unexpected output {output.strip()!r}")
                    continue
                median, cpu_median = statistics.median(runs), statistics.median(cpu)
                entry[way] = {"s_median": median, "s_runs": runs, "us_per_layer": median / size * 1e6,
                              "cpu_s_median": cpu_median, "cpu_s_runs": cpu, "cpu_us_per_layer": cpu_median / size * 1e6}
            results.append(entry)
    growth: dict[str, float] = {}  # "in_process" (wall), "in_process_cpu", "subprocess", "subprocess_cpu"
    untimed: list[str] = []  # the same keys, where the smaller size took less than the clock can tell
    if len(sizes) >= 2:
        small, large = sorted(results, key=lambda r: r["layers"])[-2:]
        for way in ("in_process", "subprocess"):
            if way in small and way in large:
                for clock, suffix in (("s_median", ""), ("cpu_s_median", "_cpu")):
                    if small[way][clock] > 0:
                        growth[way + suffix] = (large[way][clock]
                                                / (large["layers"] / small["layers"] * small[way][clock]))
                    else:  # CPU time counts in ticks: a small spec on a fast machine can take none
                        untimed.append(way + suffix)
    at_target = next((r for r in results if r["layers"] == TARGET_SIZE and "in_process" in r), None)
    fast = at_target["in_process"]["s_median"] < TARGET_SECONDS if at_target else None
    fast_cpu = at_target["in_process"]["cpu_s_median"] < TARGET_SECONDS if at_target else None
    linear = growth["in_process"] <= TARGET_GROWTH if "in_process" in growth else None
    linear_cpu = growth["in_process_cpu"] <= TARGET_GROWTH if "in_process_cpu" in growth else None
    return {
        "benchmark": "bench_scaling",
        "target": f"archc check of {TARGET_SIZE:,} layers < {TARGET_SECONDS:g} s in-process, growth ratio <= "
                  f"{TARGET_GROWTH:g}",
        "repeat": repeat, "results": results, "growth": growth, "growth_untimed": untimed,
        "fast_enough": fast, "linear": linear, "fast_enough_cpu": fast_cpu, "linear_cpu": linear_cpu,
        "errors": errors,
    }


def print_table(data: dict[str, Any]) -> None:
    ways = [w for w in ("in_process", "subprocess") if any(w in r for r in data["results"])]
    header = ["layers"] + [f"{w.replace('_', '-')} {unit}" for w in ways
                           for unit in ("wall s", "cpu s", "cpu us/layer")]
    rows = [header]
    for r in data["results"]:
        row = [f"{r['layers']:,}"]
        for w in ways:
            row += ([f"{r[w]['s_median']:.3f}", f"{r[w]['cpu_s_median']:.3f}", f"{r[w]['cpu_us_per_layer']:.1f}"]
                    if w in r else ["-", "-", "-"])
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(f"archc check on specs written out in full (median of {data['repeat']} runs after 1 warm-up)")
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    sizes = sorted(r["layers"] for r in data["results"])
    def what(way: str) -> str:
        return way.replace("_cpu", ", cpu").replace("_process", "-process")

    for way, ratio in data["growth"].items():
        print(f"growth ratio ({what(way)}): time({sizes[-1]:,}) / ({sizes[-1] / sizes[-2]:g} x "
              f"time({sizes[-2]:,})) = {ratio:.2f} (1.00 is linear)")
    for way in data["growth_untimed"]:
        print(f"growth ratio ({what(way)}): not measured, {sizes[-2]:,} layers took less than the clock's tick")
    print(f"target: {data['target']}")
    verdict = {True: "MET", False: "MISSED", None: "not measured"}
    if data["fast_enough"] is not None:
        print(f"  {TARGET_SIZE:,} layers under {TARGET_SECONDS:g} s: wall {verdict[data['fast_enough']]}, "
              f"cpu {verdict[data['fast_enough_cpu']]}")
    if data["linear"] is not None:
        print(f"  linear growth: wall {verdict[data['linear']]}, cpu {verdict[data['linear_cpu']]}")
    for e in data["errors"]:
        print(f"!!! ERROR {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_scaling.py",
        description="Time `archc check` on specs of 1,000 / 10,000 / 30,000 layers written out in full (no "
                    "'repeat'), in-process and as a subprocess; print the time per layer and the growth ratio "
                    "time(largest) / (size ratio x time(next largest)) as the measure of linearity.",
        epilog="Exit status: 0 ok (also when the target is missed), 2 a check failed.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), metavar="N",
                        help="numbers of layers (default: 1000 10000 30000)")
    parser.add_argument("--repeat", "-n", type=int, default=DEFAULT_REPEAT, metavar="R",
                        help=f"timed runs per size and way after one warm-up (default {DEFAULT_REPEAT})")
    parser.add_argument("--no-subprocess", action="store_true", help="time the in-process check only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if any(n < len(CYCLE) for n in args.sizes):
        parser.error(f"--sizes must be at least {len(CYCLE)}")
    data = run(sorted(set(args.sizes)), args.repeat, not args.no_subprocess)
    if args.json:
        print(json.dumps(data, indent=2))
        for e in data["errors"]:
            print(f"!!! ERROR {e}", file=sys.stderr)
    else:
        print_table(data)
    return 2 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
