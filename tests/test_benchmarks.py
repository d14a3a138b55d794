"""benchmarks/bench_summary.py runs and its two methods agree on the counts.

Timings are not asserted: they depend on the machine and its load.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_summary.py"
TINY_SPEC = "archc: 1\nname: good\ninput: [3, 8, 8]\nbody:\n  - conv: {out: 4, k: 3, pad: 1}\n"  # builds and runs in milliseconds
BATCHNORM_SPEC = ("archc: 1\nname: tiny\ninput: [3, 16, 16]\nbody:\n"
                  "  - conv: {out: 8, k: 3, pad: 1, norm: true, act: relu}\n"
                  "  - global_avgpool: null\n  - flatten: null\n  - linear: {out: 4}\n")  # a BatchNorm to fold


def _benchmark_module(name: str):
    """benchmarks/<name>.py loaded as a module, its folder on sys.path while it loads (for `import machine`)."""
    import importlib.util

    folder = str(ROOT / "benchmarks")
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def test_bench_summary_googlenet_counts_agree():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "specs/googlenet.yaml", "--repeat", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert data["errors"] == []
    assert data["counts_match"] is True
    assert data["torch_imported_by_static"] is False
    [result] = data["results"]
    assert result["spec"].endswith("googlenet.yaml")
    static, baseline = result["static"], result["baseline"]
    assert static["params"] == baseline["params"]
    assert static["macs"] == baseline["macs"]
    assert static["params"] > 0 and static["macs"] > 0
    assert result["mismatches"] == [] and result["counts_match"] is True
    # torchinfo (a dev dependency) against the static summary counting as torchinfo does: MACs plus biases
    assert data["torchinfo"] is not None and "torchinfo" in data["target"]
    like, torchinfo = result["static_torchinfo"], result["torchinfo"]
    assert (like["params"], like["macs"]) == (torchinfo["params"], torchinfo["macs"])
    assert like["params"] == static["params"] and like["macs"] > static["macs"]
    # the verdict is reported either way (its value is a timing, so not asserted)
    assert isinstance(result["meets_target"], bool)
    assert isinstance(result["ratio"], float) and isinstance(result["ratio_torchinfo"], float)


def test_bench_summary_without_torchinfo():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "specs/googlenet.yaml", "--repeat", "1", "--static-repeat", "1", "--json",
         "--no-torchinfo"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["torchinfo"] is None and "hooked forward" in data["target"]
    [result] = data["results"]
    assert "torchinfo" not in result and "ratio_torchinfo" not in result


def test_bench_summary_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    for word in ("--repeat", "--json", "torch", "hook"):
        assert word in proc.stdout


def test_bench_scaling_small_sizes():
    """bench_scaling.py checks generated flat specs in-process and as a subprocess, and reports the growth ratio."""
    script = ROOT / "benchmarks" / "bench_scaling.py"
    proc = subprocess.run([sys.executable, str(script), "--sizes", "30", "90", "--repeat", "1", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert data["errors"] == []
    assert [r["layers"] for r in data["results"]] == [30, 90]
    for r in data["results"]:
        for way in ("in_process", "subprocess"):
            assert r[way]["s_median"] > 0
            assert r[way]["us_per_layer"] == r[way]["s_median"] / r["layers"] * 1e6
    small, large = data["results"]
    assert data["growth"]["in_process"] == large["in_process"]["s_median"] / (3 * small["in_process"]["s_median"])
    # CPU time counts in ticks: 30 layers on a fast machine can take none, and that ratio is then left out
    for key in ("in_process_cpu", "subprocess_cpu"):
        way = key.removesuffix("_cpu")
        assert (key in data["growth"]) == (small[way]["cpu_s_median"] > 0)
        assert (key in data["growth_untimed"]) == (small[way]["cpu_s_median"] == 0)
    assert isinstance(data["linear"], bool)
    assert data["fast_enough"] is None  # no 10,000-layer run, so no verdict on it


def test_bench_build_archc_side_without_references():
    """bench_build.py times archc's build; without torchvision/timm (the project's venv) the reference is skipped."""
    script = ROOT / "benchmarks" / "bench_build.py"
    proc = subprocess.run([sys.executable, str(script), "googlenet", "--repeat", "1", "--meta", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert data["errors"] == []
    assert [(r["model"], r["device"]) for r in data["results"]] == [("googlenet", "cpu"), ("googlenet", "meta")]
    for r in data["results"]:
        assert r["archc"]["ms_median"] > 0
        if data["versions"]["torchvision"] is None:
            assert r["reference"] is None and "skipped" in r
        else:
            assert r["ratio"] == r["archc"]["ms_median"] / r["reference"]["ms_median"]
            assert r["ratio_min"] == min(r["archc"]["runs_ms"]) / min(r["reference"]["runs_ms"])


def test_bench_forward_against_the_emitted_source(tmp_path):
    """bench_forward.py on a tiny spec without reference facts: the baseline is archc's emitted standalone
    source (which computes the same function), every cell a ratio of the medians, a verdict for BatchNorm."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(BATCHNORM_SPEC)
    script = ROOT / "benchmarks" / "bench_forward.py"
    proc = subprocess.run([sys.executable, str(script), "--only", str(spec), "--repeat", "1", "--skip-compile",
                           "--threads", "1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert data["errors"] == [] and data["environment"]["threads"] == 1
    [row] = data["results"]
    assert row["baseline"] == "archc's emitted standalone source"
    assert row["eager_difference"] == 0.0 and row["inference_difference"] < 1e-5
    assert row["fold_difference_float64"] is None  # float32 agreed, so the float64 check was not needed
    for kind in ("eager", "train", "inference"):
        cell = row[kind]
        assert cell["ratio"] == cell["archc_ms"] / cell["reference_ms"]
        assert len(cell["archc_runs_ms"]) == len(cell["reference_runs_ms"]) == 1
    assert "compile" not in row
    assert row["batchnorm"] is True and row["meets_target"] == (row["inference"]["ratio"] <= data["target"])


def test_bench_forward_runs_each_network_in_its_own_process(tmp_path):
    """Each network is measured by a child process of its own; one that fails is an error row and exit 2,
    and the others are still measured."""
    good = tmp_path / "good.yaml"
    good.write_text(TINY_SPEC)
    bad = tmp_path / "bad.yaml"
    bad.write_text("archc: 1\nname: bad\ninput: [3, 8, 8]\nbody:\n  - conv: {out: 4, k: 30}\n")  # kernel > input
    script = ROOT / "benchmarks" / "bench_forward.py"
    proc = subprocess.run([sys.executable, str(script), "--only", str(bad), str(good), "--repeat", "1",
                           "--skip-compile", "--threads", "1", "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert [row["name"] for row in data["results"]] == [str(bad), str(good)]
    assert "error" in data["results"][0] and len(data["errors"]) == 1 and data["errors"][0].startswith(str(bad))
    assert data["results"][1]["eager"]["archc_runs_ms"] and "error" not in data["results"][1]
    assert "[1/2]" in proc.stderr and "[2/2]" in proc.stderr
    assert data["results"][0]["pid"] != data["results"][1]["pid"]


def test_bench_forward_keeps_freed_memory_in_its_children_only(tmp_path):
    """--keep-freed-memory reaches each network's process (its row names the settings it ran with); with
    --in-process, where glibc has already read its settings, it is a usage error."""
    good = tmp_path / "good.yaml"
    good.write_text(TINY_SPEC)
    script = ROOT / "benchmarks" / "bench_forward.py"
    command = [sys.executable, str(script), "--only", str(good), "--repeat", "1", "--skip-compile", "--threads", "1",
               "--json", "--keep-freed-memory"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    row = data["results"][0]
    assert "MALLOC_TRIM_THRESHOLD_=" in row["allocator"] and "MALLOC_MMAP_THRESHOLD_=" in row["allocator"]
    assert data["environment"]["allocator"] == row["allocator"]
    plain = subprocess.run(command[:-1], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert json.loads(plain.stdout)["results"][0]["allocator"].count("MALLOC_") == 0
    misuse = subprocess.run([*command, "--in-process"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert misuse.returncode == 2 and "--keep-freed-memory needs a fresh process" in misuse.stderr


def test_bench_scaling_when_the_cpu_clock_sees_nothing(monkeypatch, capsys):
    """A size too small for the CPU clock's tick: its CPU growth ratio is left out, not divided by zero."""
    bench = _benchmark_module("bench_scaling")
    monkeypatch.setattr(bench, "_cpu", lambda: 0.0)
    data = bench.run([30, 90], 1, False)
    assert data["growth_untimed"] == ["in_process_cpu"] and "in_process" in data["growth"]
    assert data["linear_cpu"] is None
    bench.print_table(data)
    assert "cpu not measured" in capsys.readouterr().out


def test_fold_difference_tells_a_wrong_fold_from_rounding(monkeypatch, tmp_path):
    """bench_forward's float64 check of the inference build: zero but for rounding on a right fold, and far
    above its bound when the fold is wrong (here: BatchNorm's eps left out)."""
    bench_forward = _benchmark_module("bench_forward")
    import torch

    import archcompiler
    from archcompiler import optimize

    spec = tmp_path / "tiny.yaml"
    spec.write_text(BATCHNORM_SPEC)
    model = archcompiler.build(spec)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_var.fill_(1e-4)  # ten times eps, so that leaving eps out moves the output by 5 %
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert bench_forward.fold_difference(model, x) < 1e-12
    right = optimize._folded_weights

    def without_eps(weighted, bn):
        bn = copy.deepcopy(bn)
        bn.eps = 0.0
        return right(weighted, bn)

    monkeypatch.setattr(optimize, "_folded_weights", without_eps)
    assert bench_forward.fold_difference(model, x) > bench_forward.AGREE
