#!/usr/bin/env python3
"""Benchmark: archc's static summary vs. torchinfo, and vs. a bare hooked forward pass.

For each spec this measures, in one process:

  static    archcompiler.summary(path), end to end: read and parse the YAML,
            expand blocks and parameters, infer every shape, count parameters
            and MACs.  No torch: the static side is measured before torch is
            imported, and the script checks that it stays so.

  baseline  what torchinfo does: archcompiler.build(path) instantiates the
            model, forward hooks on every leaf module record output shapes,
            one forward pass on a batch of 1 in eval mode under
            torch.no_grad(), then conv/linear multiply-adds are computed from
            the recorded shapes and summed together with the parameters.
            Parameters are every module's own trainable parameters, including
            the leaves that do not run in eval mode (aux heads), as archc's
            report (and a state_dict) counts them; MACs come only from the
            leaves that ran, i.e. eval mode, as archc's total_macs.
            torch's import time is excluded (it is paid once, before the
            baseline's warm-up, and reported separately).

  torchinfo (when torchinfo is installed) torchinfo itself: archcompiler.build(path),
            then torchinfo.summary(model, input_size=(1, C, H, W), mode="eval").
            Its totals are compared with the static summary counting as
            torchinfo does (Counting(like="torchinfo"): MACs plus biases),
            which is timed as a second static side.  This is what the
            issue's target names; the hooked forward is the least any
            forward-based tool can cost, and is shown beside it.

Each side is run once as a warm-up (its time is kept as "cold"), then N times;
the median is reported.  Each pair of sides must agree on total params and
MACs: a mismatch is printed loudly and the script exits 1.  The target is that
the static summary is >= 50x faster than torchinfo (than the hooked forward
when torchinfo is not installed); a miss is reported but does not change the
exit code.

Exit codes: 0 ok (target met or not), 1 params/MACs mismatch,
2 a spec failed to compile/build/run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import machine  # noqa: E402  (benchmarks/machine.py)

import archcompiler  # noqa: E402  (after the sys.path fix-up)

TARGET = 50.0  # the static summary is to be at least this many times faster (issue 14)
DEFAULT_REPEAT = 5
NOISY = 1.5  # max/min of a side's runs above which the table warns of noise
STATIC_FACTOR = 5  # the static side is repeated STATIC_FACTOR x --repeat times by default


# --------------------------------------------------------------------------- timing


def _time_runs(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """Warm up once (timed: the "cold" run), then `repeat` timed runs. Times in ms."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    cold = (time.perf_counter() - t0) * 1e3
    runs = []
    for _ in range(repeat):
        gc.collect()  # collect outside the timed region, not during it
        t0 = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return cold, runs, result


# --------------------------------------------------------------------------- static side


def static_summary(path: str) -> dict[str, int]:
    """(a): archc's static summary, end to end from the spec path."""
    report = archcompiler.summary(path)
    return {"params": report.total_params, "macs": report.total_macs, "name": report.name}


def static_summary_like_torchinfo(path: str) -> dict[str, int]:
    """(a) again, counting as torchinfo does (`Counting(like="torchinfo")`: MACs plus biases), so that its
    totals are torchinfo's own."""
    report = archcompiler.summary(path, counting=archcompiler.Counting(like="torchinfo"))
    return {"params": report.total_params, "macs": report.total_macs}


# --------------------------------------------------------------------------- baseline


def hooked_forward(path: str) -> dict[str, Any]:
    """(b): build the model, hook every leaf, run one eval forward, sum (torchinfo's way)."""
    import torch  # already imported (and its import time excluded) by the caller
    import torch.nn as nn

    t0 = time.perf_counter()
    model = archcompiler.build(path)
    t_build = time.perf_counter()

    records: list[tuple[nn.Module, tuple[int, ...]]] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor):
            records.append((module, tuple(out.shape)))

    params = 0
    leaves = 0
    handles = []
    for module in model.modules():
        params += sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        if next(iter(module.children()), None) is None:  # a leaf
            leaves += 1
            handles.append(module.register_forward_hook(hook))

    x = torch.randn((1, *model.graph.input_shape), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    t_forward = time.perf_counter()

    macs = 0
    ran = set()
    for module, shape in records:
        ran.add(id(module))
        batch, per_sample = shape[0], 1
        for d in shape[1:]:
            per_sample *= d
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += per_sample * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs += per_sample * module.in_features
        assert batch == 1, shape
    return {
        "params": params, "macs": macs, "leaves": leaves, "leaves_run": len(ran),
        "build_ms": (t_build - t0) * 1e3, "forward_ms": (t_forward - t_build) * 1e3,
    }


def torchinfo_summary(path: str) -> dict[str, Any]:
    """(c): torchinfo itself: build the model, then `torchinfo.summary` on a batch of 1 in eval mode."""
    import torchinfo

    t0 = time.perf_counter()
    model = archcompiler.build(path)
    t_build = time.perf_counter()
    stats = torchinfo.summary(model, input_size=(1, *model.graph.input_shape), mode="eval", verbose=0)
    t_summary = time.perf_counter()
    return {"params": int(stats.total_params), "macs": int(stats.total_mult_adds),
            "build_ms": (t_build - t0) * 1e3, "summary_ms": (t_summary - t_build) * 1e3}


def _torchinfo_version() -> str:
    from importlib.metadata import version

    return version("torchinfo")


# --------------------------------------------------------------------------- driver


def _default_specs() -> list[str]:
    specs = ROOT / "specs"
    found = sorted(specs.glob("*.yaml")) + sorted(specs.glob("*.yml"))
    google = specs / "googlenet.yaml"
    if google in found:  # googlenet first: it is the benchmark's reference spec
        found.remove(google)
        found.insert(0, google)
    cwd = Path.cwd()
    return [str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p) for p in found]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _ratios(baseline: dict[str, Any], static: dict[str, Any]) -> tuple[float, float]:
    """baseline / static, of the medians and of the fastest runs (min/min: the least disturbed run of each
    side, steadier than the medians on a busy machine)."""
    def ratio(b: float, s: float) -> float:
        return b / s if s > 0 else float("inf")

    return (ratio(baseline["ms_median"], static["ms_median"]),
            ratio(min(baseline["runs_ms"]), min(static["runs_ms"])))


def run(paths: list[str], repeat: int, static_repeat: int, threads: int | None = None,
        torchinfo: bool = True) -> dict[str, Any]:
    torch_before = "torch" in sys.modules
    # Looked up without importing it: torchinfo imports torch, which the static side must not see.
    torchinfo = torchinfo and importlib.util.find_spec("torchinfo") is not None
    results: list[dict[str, Any]] = []

    # (a) all static measurements first, while torch is not imported.
    for path in paths:
        entry: dict[str, Any] = {"spec": path}
        try:
            cold, runs, counts = _time_runs(lambda: static_summary(path), static_repeat)
        except Exception as e:  # noqa: BLE001 - reported per spec
            entry["error"] = f"static summary failed: {type(e).__name__}: {e}"
            results.append(entry)
            continue
        entry["name"] = counts.pop("name")
        entry["static"] = {**counts, "ms_median": _median(runs), "ms_cold": cold, "runs_ms": runs}
        if torchinfo:
            cold, runs, counts = _time_runs(lambda: static_summary_like_torchinfo(path), static_repeat)
            entry["static_torchinfo"] = {**counts, "ms_median": _median(runs), "ms_cold": cold, "runs_ms": runs}
        results.append(entry)
    torch_after_static = "torch" in sys.modules

    # torch import, timed on its own and excluded from the baseline.
    t0 = time.perf_counter()
    import torch

    torch_import_ms = (time.perf_counter() - t0) * 1e3
    if threads is not None:
        torch.set_num_threads(threads)

    # (b) the hooked-forward baseline.
    for entry in results:
        if "error" in entry:
            continue
        path = entry["spec"]
        try:
            breakdown: list[tuple[float, float]] = []

            def once() -> dict[str, Any]:
                counts = hooked_forward(path)
                breakdown.append((counts["build_ms"], counts["forward_ms"]))
                return counts

            cold, runs, counts = _time_runs(once, repeat)
            breakdown = breakdown[1:]  # drop the warm-up
        except Exception as e:  # noqa: BLE001
            entry["error"] = f"baseline failed: {type(e).__name__}: {e}"
            continue
        entry["baseline"] = {
            "params": counts["params"], "macs": counts["macs"],
            "leaves": counts["leaves"], "leaves_run": counts["leaves_run"],
            "ms_median": _median(runs), "ms_cold": cold, "runs_ms": runs,
            "build_ms_median": _median([b for b, _ in breakdown]),
            "forward_ms_median": _median([f for _, f in breakdown]),
        }
        s, b = entry["static"], entry["baseline"]
        entry["mismatches"] = [
            f"{k}: static {s[k]:,} != baseline {b[k]:,}" for k in ("params", "macs") if s[k] != b[k]
        ]
        entry["ratio"], entry["ratio_min"] = _ratios(b, s)
        sides = [s, b]
        if torchinfo:  # (c) torchinfo itself, against the static summary counting as it does
            breakdown = []

            def once_torchinfo() -> dict[str, Any]:
                counts = torchinfo_summary(path)
                breakdown.append((counts["build_ms"], counts["summary_ms"]))
                return counts

            try:
                cold, runs, counts = _time_runs(once_torchinfo, repeat)
            except Exception as e:  # noqa: BLE001
                entry["error"] = f"torchinfo failed: {type(e).__name__}: {e}"
                continue
            breakdown = breakdown[1:]
            st = entry["static_torchinfo"]
            t = entry["torchinfo"] = {
                "params": counts["params"], "macs": counts["macs"],
                "ms_median": _median(runs), "ms_cold": cold, "runs_ms": runs,
                "build_ms_median": _median([b for b, _ in breakdown]),
                "summary_ms_median": _median([f for _, f in breakdown]),
            }
            entry["mismatches"] += [
                f"{k}: static (like torchinfo) {st[k]:,} != torchinfo {t[k]:,}"
                for k in ("params", "macs") if st[k] != t[k]
            ]
            entry["ratio_torchinfo"], entry["ratio_torchinfo_min"] = _ratios(t, st)
            sides += [st, t]
        entry["counts_match"] = not entry["mismatches"]
        # The target is against torchinfo; without it, against the hooked forward (a lower bound).
        entry["meets_target"] = entry.get("ratio_torchinfo", entry["ratio"]) >= TARGET
        entry["noisy"] = any(
            len(r) > 1 and min(r) > 0 and max(r) / min(r) > NOISY for r in (side["runs_ms"] for side in sides)
        )

    done = [r for r in results if "error" not in r]
    return {
        "benchmark": "bench_summary",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": f"static summary >= {TARGET:g}x faster than "
                  + ("torchinfo" if torchinfo else "the hooked forward (torchinfo left out, or not installed)"),
        "torchinfo": _torchinfo_version() if torchinfo else None,
        "target_ratio": TARGET,
        "repeat": {"baseline": repeat, "static": static_repeat, "warmup": 1, "statistic": "median"},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "cpu": machine.cpu(),
            "platform": platform.platform(),
            "archc": getattr(archcompiler, "__version__", "?"),
        },
        "torch_import_ms": torch_import_ms,
        "torch_imported_before_static": torch_before,
        "torch_imported_by_static": torch_after_static and not torch_before,
        "results": results,
        "counts_match": all(r["counts_match"] for r in done),
        "all_meet_target": bool(done) and all(r["meets_target"] for r in done),
        "errors": [f"{r['spec']}: {r['error']}" for r in results if "error" in r],
    }


# --------------------------------------------------------------------------- output


def _fmt_ms(ms: float) -> str:
    return f"{ms:,.1f}" if ms >= 10 else f"{ms:,.2f}"


def print_table(data: dict[str, Any]) -> None:
    with_torchinfo = data["torchinfo"] is not None
    headers = ["spec", "params", "MACs", "static ms", "hooked ms", "(build / fwd)", "ratio", "(min/min)"]
    if with_torchinfo:  # the static side again, counting as torchinfo does, against torchinfo
        headers += ["static ms (ti)", "torchinfo ms", "(build / summary)", "ratio (ti)", "(min/min)"]
    headers += ["counts", "target"]
    rows = []
    for r in data["results"]:
        if "error" in r:
            rows.append([r["spec"], *["-"] * (len(headers) - 3), "ERROR", "-"])
            continue
        s, b = r["static"], r["baseline"]
        row = [
            r["spec"], f"{s['params']:,}", f"{s['macs']:,}", _fmt_ms(s["ms_median"]), _fmt_ms(b["ms_median"]),
            f"{_fmt_ms(b['build_ms_median'])} / {_fmt_ms(b['forward_ms_median'])}",
            f"{r['ratio']:.1f}x", f"{r['ratio_min']:.1f}x",
        ]
        if with_torchinfo:
            st, t = r["static_torchinfo"], r["torchinfo"]
            row += [_fmt_ms(st["ms_median"]), _fmt_ms(t["ms_median"]),
                    f"{_fmt_ms(t['build_ms_median'])} / {_fmt_ms(t['summary_ms_median'])}",
                    f"{r['ratio_torchinfo']:.1f}x", f"{r['ratio_torchinfo_min']:.1f}x"]
        row += ["match" if r["counts_match"] else "MISMATCH",
                ("met" if r["meets_target"] else "MISSED") + (" (noisy)" if r["noisy"] else "")]
        rows.append(row)
    rep = data["repeat"]
    title = (f"archc static summary vs a hooked forward{' and torchinfo ' + data['torchinfo'] if with_torchinfo else ''}"
             f" (median of {rep['static']} static / {rep['baseline']} baseline runs after 1 warm-up each)")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
        for row in [headers, *rows]:
            print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    else:
        table = Table(title=title)
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        Console(width=max(280, Console().width)).print(table)
        if with_torchinfo:
            print("(ti): the static summary counting as torchinfo does (MACs plus biases), against "
                  "torchinfo.summary on the built model")

    env = data["environment"]
    print(f"torch {env['torch']} ({env['torch_threads']} thread(s), {env['cpus']} cpus: {env.get('cpu', '?')}), "
          f"python {env['python']}; "
          f"torch import {data['torch_import_ms']:,.0f} ms, excluded from the baseline")
    if data["torch_imported_before_static"]:
        print("note: torch was already imported before the static side ran")
    if data["torch_imported_by_static"]:
        print("WARNING: the static summary imported torch")
    for r in data["results"]:
        for side in ("static", "baseline", "static_torchinfo", "torchinfo"):
            runs = r.get(side, {}).get("runs_ms", [])
            if len(runs) > 1 and min(runs) > 0 and max(runs) / min(runs) > NOISY:
                print(f"note: noisy {side} timings for {r['spec']}: runs ranged "
                      f"{_fmt_ms(min(runs))}-{_fmt_ms(max(runs))} ms (the machine is busy?)")
    print(f"target: {data['target']}")
    for r in data["results"]:
        if "error" in r:
            continue
        verdict = "MET" if r["meets_target"] else "MISSED"
        ratio, ratio_min = ((r["ratio_torchinfo"], r["ratio_torchinfo_min"]) if with_torchinfo
                            else (r["ratio"], r["ratio_min"]))
        caveat = (f" (timings noisy: min/min ratio {ratio_min:.1f}x; rerun on a quiet machine)"
                  if r["noisy"] else "")
        print(f"  {r['spec']}: {ratio:.1f}x (median/median) -> {verdict}{caveat}")
    for r in data["results"]:
        for m in r.get("mismatches", []):
            print(f"!!! COUNT MISMATCH in {r['spec']}: {m} -- the two methods disagree, timings are meaningless",
                  file=sys.stderr)
    for e in data["errors"]:
        print(f"!!! ERROR {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_summary.py",
        description=(
            "Time archc's static summary (archcompiler.summary: YAML -> expand -> shapes -> counts, no torch) "
            "against the torchinfo way of getting the same numbers (archcompiler.build, forward hooks on every "
            "leaf module, one eval-mode forward on a batch of 1 under torch.no_grad(), sum params and conv/linear "
            "MACs from the recorded shapes), and against torchinfo.summary itself when torchinfo is installed "
            "(with the static summary counting as torchinfo does). All run in this process: one warm-up each, "
            "then the median of N runs. torch's import time is excluded from the baselines. Checks that each pair "
            f"gives the same total params and MACs, and whether the static summary is >= {TARGET:g}x faster than "
            "torchinfo (than the hooked forward without torchinfo)."
        ),
        epilog="Exit status: 0 ok (also when the speed target is missed), 1 params/MACs mismatch, "
               "2 a spec failed to compile or run.",
    )
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="spec files to benchmark (default: every *.yaml in specs/, googlenet first)")
    parser.add_argument("--repeat", "-n", type=int, default=DEFAULT_REPEAT, metavar="N",
                        help=f"timed runs of the baseline after its warm-up (default {DEFAULT_REPEAT})")
    parser.add_argument("--static-repeat", type=int, default=None, metavar="M",
                        help=f"timed runs of the static summary after its warm-up "
                             f"(default {STATIC_FACTOR} x N, so {STATIC_FACTOR * DEFAULT_REPEAT})")
    parser.add_argument("--threads", type=int, default=None, metavar="T",
                        help="torch.set_num_threads(T) for the baseline (default: torch's own default)")
    parser.add_argument("--no-torchinfo", action="store_true",
                        help="leave out the torchinfo side (timed only when torchinfo is installed)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout instead of the table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    static_repeat = args.static_repeat if args.static_repeat is not None else STATIC_FACTOR * args.repeat
    if static_repeat < 1:
        parser.error("--static-repeat must be >= 1")
    paths = args.specs or _default_specs()
    if not paths:
        parser.error("no specs given and none found in specs/")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        parser.error("spec file(s) not found: " + ", ".join(missing))

    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    data = run(paths, args.repeat, static_repeat, args.threads, torchinfo=not args.no_torchinfo)
    if args.json:
        print(json.dumps(data, indent=2))
        for r in data["results"]:
            for m in r.get("mismatches", []):
                print(f"!!! COUNT MISMATCH in {r['spec']}: {m}", file=sys.stderr)
        for e in data["errors"]:
            print(f"!!! ERROR {e}", file=sys.stderr)
    else:
        print_table(data)
    if not data["counts_match"]:
        return 1
    if data["errors"]:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
