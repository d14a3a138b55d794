#!/usr/bin/env python3
"""Benchmark: drawing every layer of a network, against Graphviz alone on the same picture.

For each spec (default: Inception-ResNet-v2, the largest in the zoo) and
each format, this measures in one process:

  archc     `archc draw SPEC --depth full --unroll ... -o X.FMT` (every repeat unrolled) in-process: parse, expand,
            infer shapes, build the graphviz source, run `dot`.
  baseline  `dot -TFMT` on the same source, alone: the layout and rendering
            that any graphviz-based drawing pays.

Each side runs once as a warm-up, then --repeat times; medians are reported
with their ratio (archc's overhead over plain dot).  The target (issue 4) is
that the full layer-level Inception-ResNet-v2 draws in under 10 seconds; a
miss is reported and exits 1.

Exit codes: 0 target met, 1 target missed, 2 Graphviz's dot is missing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import archcompiler  # noqa: E402
from archcompiler.draw import diagram, render, repeat_runs  # noqa: E402

TARGET_SECONDS = 10.0


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def every_repeat(graph) -> list[str]:
    """Names that unroll every repeat (repeats fold into one box even at `--depth full`)."""
    return [members[0] for members in repeat_runs(graph).values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", default=["specs/inception_resnet_v2.yaml"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="svg,png")
    args = parser.parse_args(argv)
    if shutil.which("dot") is None:
        print("bench_draw: Graphviz's dot is not installed", file=sys.stderr)
        return 2
    print(f"{'spec':<24} {'fmt':<4} {'layers':>6} {'archc s':>8} {'dot s':>8} {'ratio':>6}  target < {TARGET_SECONDS:g} s")
    missed = False
    for spec in args.specs:
        for fmt in args.formats.split(","):
            def archc_draw() -> bytes:  # every layer: `--depth full` with every repeat unrolled, the worst case
                graph = archcompiler.compile_graph(ROOT / spec)
                return render(graph, fmt, None, unroll=every_repeat(graph))

            graph = archcompiler.compile_graph(ROOT / spec)
            source = diagram(graph, None, unroll=every_repeat(graph)).source.encode()

            def dot_alone() -> bytes:
                return subprocess.run(["dot", f"-T{fmt}"], input=source, capture_output=True, check=True).stdout

            ours = statistics.median(timed(archc_draw, args.repeat))
            base = statistics.median(timed(dot_alone, args.repeat))
            layers = len(archcompiler.compile_graph(ROOT / spec).nodes)
            verdict = "met" if ours < TARGET_SECONDS else "MISSED"
            missed |= ours >= TARGET_SECONDS
            print(f"{Path(spec).stem:<24} {fmt:<4} {layers:>6} {ours:>8.2f} {base:>8.2f} {ours / base:>6.2f}  {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
