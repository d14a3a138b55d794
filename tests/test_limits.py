"""limits: sizes no machine can build are refused statically, before anything is allocated."""

from __future__ import annotations

from pathlib import Path

import pytest

import archcompiler
from archcompiler import SpecError, UserError
from archcompiler.limits import DEFAULT_MAX_MEMORY, check_memory, fmt_bytes, parse_size

from conftest import Ran, make_spec, run_archc

ROOT = Path(__file__).parents[1]
BAD = ROOT / "tests" / "fixtures" / "bad_specs"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def archc(*args: str) -> Ran:
    """The command line, in this process (conftest.run_archc)."""
    return run_archc(*args, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("text, size", [("1000", 1000), ("8GiB", 8 * 2**30), ("8G", 8 * 2**30), ("512MB", 512 * 10**6),
                                        ("1.5 KiB", 1536), ("2tb", 2 * 10**12), ("3B", 3)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "3x", "-1GB", "0", "1e9", "8 GiBs", "9" * 400])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(UserError, match="--max-memory"):
        parse_size(text)


def test_fmt_bytes():
    assert fmt_bytes(512) == "512 bytes"
    assert fmt_bytes(3 * 2**30) == "3.00 GiB"
    assert fmt_bytes(1536) == "1.50 KiB"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_zoo_spec_fits_the_default_at_the_build_batch(path):
    check_memory(archcompiler.compile_graph(path), DEFAULT_MAX_MEMORY, batch=2)


def test_the_bound_counts_weights_activations_and_the_batch():
    graph = archcompiler.compile_graph(make_spec("a: {conv: {out: 8, k: 1, bias: false}}", input=(4, 10, 10)))
    # weights 8*4 values, input 4*10*10 and output 8*10*10 values per sample, at 4 bytes each
    exact = (32 + 400 * 2 + 800 * 2) * 4
    check_memory(graph, exact, batch=2)
    with pytest.raises(SpecError, match="the network needs"):
        check_memory(graph, exact - 1, batch=2)


def test_max_memory_raises_and_lowers_the_bound():
    big = str(BAD / "conv_output_too_large.yaml")
    assert archc("check", big, "--max-memory", "400GiB").returncode == 0
    r = archc("check", "specs/lenet5.yaml", "--max-memory", "1KB")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("specs/lenet5.yaml:") and "over the 1000 bytes limit" in r.stderr
    r = archc("summary", "specs/lenet5.yaml", "--max-memory", "lots")
    assert r.returncode == 2 and r.stderr.startswith("archc: error: --max-memory expects a size") and "Traceback" not in r.stderr


def test_build_counts_its_self_check_batch_before_allocating(tmp_path):
    # 1024 x 256 x 256 fp32 per sample is 256 MiB: fine for `check`, 16 GiB at build's --batch 64.
    spec = tmp_path / "wide.yaml"
    spec.write_text("archc: 1\nname: wide\ninput: [3, 256, 256]\nbody:\n  a: {conv: {out: 1024, k: 1}}\n")
    assert archc("check", str(spec)).returncode == 0
    r = archc("build", str(spec), "--batch", "64", "-o", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"{spec}:5:7: error: the output of 'a' (conv), 1024x256x256, needs 16.00 GiB at batch 64")
    assert not (tmp_path / "out").exists()


def test_api_bound_is_an_argument_and_the_meta_device_needs_none():
    big = BAD / "conv_output_too_large.yaml"
    with pytest.raises(SpecError, match="over the 8.00 GiB limit"):
        archcompiler.build(big)
    assert archcompiler.compile_graph(big, max_memory=None).nodes["a"].shape == (10_000_000, 62, 62)
    model = archcompiler.build(big, device="meta")  # nothing is allocated on the meta device
    assert next(model.parameters()).shape == (10_000_000, 3, 3, 3)
    with pytest.raises(SpecError, match="over the 1.00 KiB limit"):
        archcompiler.summary(ROOT / "specs" / "lenet5.yaml", max_memory=1024)


@pytest.mark.parametrize("seed", [-1, 2**64, 10**23])
def test_seed_outside_torchs_range_is_a_user_error(seed):
    with pytest.raises(UserError, match="the seed must be a whole number"):
        archcompiler.build(ROOT / "specs" / "lenet5.yaml", seed=seed)


def test_cli_seed_outside_torchs_range_exits_2(tmp_path):
    r = archc("build", "specs/lenet5.yaml", "--seed", str(10**23), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "the seed must be a whole number from 0 to 2**64 - 1" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_meta_build_refuses_only_what_torch_cannot_size(tmp_path):
    import archcompiler

    spec = tmp_path / "big.yaml"
    spec.write_text("archc: 1\nname: big\ninput: [3, 8, 8]\n"
                    "body: {a: {conv: {out: 4294967296, k: 3}}, b: {conv: {out: 4294967296, k: 3}}}\n")
    with pytest.raises(archcompiler.SpecError, match="'b' \\(conv\\) has .* weights"):
        archcompiler.build(spec, device="meta")
    wide = tmp_path / "wide.yaml"  # 36 GiB of weights: over the default bound, fine on meta
    wide.write_text("archc: 1\nname: wide\ninput: [3, 8, 8]\nbody: {a: {conv: {out: 100000, k: 1}}, "
                    "b: {conv: {out: 100000, k: 1}}}\n")
    assert sum(p.numel() for p in archcompiler.build(wide, device="meta").parameters()) > 9 * 10**9
