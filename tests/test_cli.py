"""The `archc` command line, run as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SPEC = str(ROOT / "specs" / "googlenet.yaml")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


def archc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archcompiler.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_check_reports_layers_and_outputs():
    r = archc("check", SPEC)
    assert r.returncode == 0, r.stderr
    assert "ok: googlenet, 97 layers" in r.stdout and "logits 1000" in r.stdout


def test_summary_json_has_the_documented_fields_and_a_row_per_layer_and_block():
    r = archc("summary", SPEC, "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "googlenet" and data["input"] == [3, 224, 224]
    assert data["total_params"] == 13_004_888 and data["total_macs"] == 1_498_376_192
    rows = {n["name"]: n for n in data["nodes"]}
    for row in data["nodes"]:
        assert {"name", "op", "output_shape", "params", "macs"} <= row.keys()
    assert rows["inception3a"]["kind"] == "block" and rows["inception3a"]["op"] == "inception"
    assert rows["inception3a"]["output_shape"] == [256, 28, 28]
    assert rows["inception3a.branch2.1"] == {**rows["inception3a.branch2.1"], "kind": "layer", "op": "conv",
                                             "output_shape": [128, 28, 28], "params": 110_848}
    layers = [n for n in data["nodes"] if n["kind"] == "layer"]
    assert sum(n["params"] for n in layers) == data["total_params"]
    assert sum(n["macs"] for n in layers if not n["train_only"]) == data["total_macs"]
    assert sum(1 for n in data["nodes"] if n["kind"] == "block") == 9 + 2  # inception modules and aux heads


def test_summary_depth_folds_rows_into_blocks():
    data = json.loads(archc("summary", SPEC, "--format", "json", "--depth", "1").stdout)
    names = [n["name"] for n in data["nodes"]]
    assert "inception3a" in names and not any(n.startswith("inception3a.") for n in names)
    assert sum(n["params"] for n in data["nodes"]) == data["total_params"]


def test_summary_csv_and_markdown_carry_the_same_totals():
    rows = list(csv.DictReader(io.StringIO(archc("summary", SPEC, "--format", "csv", "--depth", "1").stdout)))
    assert sum(int(r["params"]) for r in rows) == 13_004_888
    md = archc("summary", SPEC, "--format", "markdown").stdout
    assert "| name | op | output | params | buffers | MACs |" in md and "**13,004,888**" in md


def test_summary_table_shows_totals():
    r = archc("summary", SPEC, "--depth", "1")
    assert r.returncode == 0 and "13,004,888" in r.stdout and "inception5b" in r.stdout


def test_set_overrides_params_and_rejects_unknown_ones():
    data = json.loads(archc("summary", SPEC, "-f", "json", "--set", "aux_logits=false").stdout)
    assert data["total_params"] == 6_624_904
    r = archc("summary", SPEC, "--set", "num_clases=10")
    assert r.returncode == 2 and "unknown parameter 'num_clases'" in r.stderr and "num_classes" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = archc("summary", SPEC, "--set", "num_classes")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    r = archc("check", SPEC, "--set", "aux_logits=3")
    assert r.returncode == 2 and "aux_logits" in r.stderr


def test_bad_options_exit_2_with_one_line():
    for args in (["summary", SPEC, "--format", "xml"], ["summary", SPEC, "--depth", "0"],
                 ["summary", SPEC, "--units", "metric"], ["summary", SPEC, "--input", "3,224"],
                 ["summary", SPEC, "--batch", "0"], ["summary", SPEC, "--input", "3,0,224"],
                 ["draw", SPEC, "-o", "/tmp/x.gif"], ["check", "no/such/spec.yaml"]):
        r = archc(*args)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr


def test_summary_input_batch_and_units_overrides():
    base = json.loads(archc("summary", SPEC, "--format", "json").stdout)
    big = json.loads(archc("summary", SPEC, "--format", "json", "--input", "3,448,448", "--batch", "2").stdout)
    assert big["input"] == [3, 448, 448] and big["batch"] == 2
    assert big["total_params"] == base["total_params"]
    assert big["total_macs"] > 4 * base["total_macs"]  # four times the area, twice the batch (fc aside)
    si = archc("summary", SPEC, "--units", "si", "--depth", "1")
    assert si.returncode == 0 and "13.0M" in si.stdout and "13,004,888" not in si.stdout


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_summary_paper_form_in_every_format(fmt):
    r = archc("summary", str(ROOT / "specs" / "googlenet_paper.yaml"), "--paper", "--format", fmt)
    assert r.returncode == 0, r.stderr
    assert "inception3a" in r.stdout and "#5x5 reduce" in r.stdout
    if fmt == "json":
        assert json.loads(r.stdout)["rows"][0]["name"] == "conv1"
    if fmt == "csv":
        assert next(csv.DictReader(io.StringIO(r.stdout)))["patch size / stride"] == "7x7/2"


@needs_dot
def test_build_writes_all_artifacts(tmp_path):
    out = tmp_path / "gn"
    r = archc("build", SPEC, "-o", str(out), "--set", "num_classes=10")
    assert r.returncode == 0, r.stderr
    assert "runtime shapes of all 97 layers match" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["forward.py", "googlenet.svg", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["nodes"][-1]["output_shape"] == [10]
    ET.fromstring((out / "googlenet.svg").read_text())
    compile((out / "forward.py").read_text(), "forward.py", "exec")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left over


def test_build_of_a_bad_spec_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(SPEC).read_text().replace("out: 64, k: 7", "out: 64, k: 700"))
    out = tmp_path / "out"
    r = archc("build", str(bad), "-o", str(out))
    assert r.returncode == 2 and str(bad) in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_build_into_an_existing_directory_keeps_other_files(tmp_path):
    out = tmp_path / "gn"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert archc("build", SPEC, "-o", str(out), "--set", "aux_logits=false").returncode == 0
    assert (out / "stale.txt").read_text() == "old" and (out / "summary.json").exists()


@needs_dot
@pytest.mark.parametrize("fmt", ["svg", "png", "pdf", "dot"])
def test_draw_each_format(tmp_path, fmt):
    out = tmp_path / f"g.{fmt}"
    r = archc("draw", SPEC, "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    if fmt == "svg":
        text = ET.tostring(ET.fromstring(data), encoding="unicode")
        for name in ("inception3a", "inception5b", "aux1", "aux2", "conv1"):
            assert name in text
    elif fmt == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    elif fmt == "pdf":
        assert data.startswith(b"%PDF")
    else:
        assert data.startswith(b"digraph googlenet")


def test_draw_depth_full_shows_every_layer(tmp_path):
    out = tmp_path / "g.dot"
    assert archc("draw", SPEC, "-o", str(out), "--depth", "full").returncode == 0
    text = out.read_text()
    assert '"inception3a.branch2.1"' in text and "cluster_inception3a" in text
    shallow = tmp_path / "s.dot"
    assert archc("draw", SPEC, "-o", str(shallow)).returncode == 0
    assert "inception3a.branch2.1" not in shallow.read_text()


def test_draw_block_and_expand(tmp_path):
    out = tmp_path / "b.dot"
    r = archc("draw", str(ROOT / "specs" / "inception_v4.yaml"), "--block", "reduction_a", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert '"features.10.branch1.2"' in out.read_text() and "features.11" not in out.read_text()
    r = archc("draw", SPEC, "--expand", "inception4a", "-o", str(out))
    assert r.returncode == 0 and '"inception4a.branch3.1"' in out.read_text()
    for args in (["--block", "nope"], ["--expand", "inception9z"]):
        r = archc("draw", SPEC, *args, "-o", str(out))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
def test_diff_compares_two_networks_by_stage(fmt):
    r = archc("diff", str(ROOT / "specs" / "inception_v4.yaml"), str(ROOT / "specs" / "inception_resnet_v2.yaml"),
              "--format", fmt)
    assert r.returncode == 0, r.stderr
    if fmt == "json":
        data = json.loads(r.stdout)
        assert data["totals"]["delta"]["params"] == 55_843_464 - 42_679_816
        assert {s["stage"]: s["b"]["output"] for s in data["stages"]}["17x17"] == [1088, 17, 17]
    else:
        assert "17x17" in r.stdout and "1088x17x17" in r.stdout
    bad = archc("diff", SPEC, SPEC, "--format", "xml")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@needs_dot
def test_build_emits_standalone_source_and_exports(tmp_path):
    out = tmp_path / "lenet"
    r = archc("build", str(ROOT / "specs" / "lenet5.yaml"), "-o", str(out),
              "--emit", "python", "--emit", "onnx", "--emit", "torchscript", "--emit", "exported")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["forward.py", "lenet5.onnx", "lenet5.pt2", "lenet5.py", "lenet5.svg", "lenet5.torchscript.pt",
                     "summary.json"]
    assert "class Lenet5(nn.Module):" in (out / "lenet5.py").read_text()
    assert "Warning" not in r.stderr
    bad = archc("build", SPEC, "-o", str(tmp_path / "x"), "--emit", "tflite")
    assert bad.returncode == 2 and "--emit must be one of" in bad.stderr and not (tmp_path / "x").exists()


@needs_dot
def test_build_saves_and_loads_weights(tmp_path):
    lenet = str(ROOT / "specs" / "lenet5.yaml")
    saved = tmp_path / "w.safetensors"
    assert archc("build", lenet, "-o", str(tmp_path / "a"), "--seed", "3", "--save", str(saved)).returncode == 0
    r = archc("build", lenet, "-o", str(tmp_path / "b"), "--weights", str(saved), "--save", str(tmp_path / "w.pt"))
    assert r.returncode == 0, r.stderr
    import torch
    from safetensors.torch import load_file

    first, second = load_file(saved), torch.load(tmp_path / "w.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in second)
    wrong = archc("build", str(ROOT / "specs" / "alexnet.yaml"), "-o", str(tmp_path / "c"), "--weights", str(saved))
    assert wrong.returncode == 2 and "does not fit alexnet" in wrong.stderr and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.splitlines()) <= 20 and not (tmp_path / "c").exists()


def test_summary_outputs_lists_channels_and_stride():
    r = archc("summary", str(ROOT / "specs" / "resnet50.yaml"), "--outputs", "layer2,layer4", "--depth", "1")
    assert r.returncode == 0, r.stderr
    assert "layer2 512 channels at stride 8" in r.stdout and "layer4 2048 channels at stride 32" in r.stdout


def test_schema_is_valid_and_accepts_the_specs():
    import jsonschema
    import yaml

    schema = json.loads(archc("schema").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(spec.read_text()), schema)


def test_help_explains_every_command():
    r = archc("--help")
    assert r.returncode == 0
    for command in ("check", "build", "summary", "draw", "diff", "schema"):
        assert command in r.stdout
    assert "--set" in archc("build", "--help").stdout


def test_readme_error_example_is_what_archc_prints(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ cat bad.yaml\n", 1)[1].split("```", 1)[0]
    spec_text, _, rest = block.partition("$ archc check bad.yaml\n")
    (tmp_path / "bad.yaml").write_text(spec_text)
    r = archc("check", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == rest.strip()


ZOO = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec", ZOO, ids=[p.stem for p in ZOO])
def test_build_summary_and_draw_succeed_on_every_spec(spec, tmp_path):
    from typer.testing import CliRunner

    from archcompiler.cli import app

    runner = CliRunner()
    built = runner.invoke(app, ["build", str(spec), "-o", str(tmp_path / "build")])
    assert built.exit_code == 0, built.output
    assert "runtime shapes of all" in built.output
    summary = json.loads((tmp_path / "build" / "summary.json").read_text())
    shown = runner.invoke(app, ["summary", str(spec), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["total_params"] == summary["total_params"] > 0
    drawn = runner.invoke(app, ["draw", str(spec), "-o", str(tmp_path / "net.svg")])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "net.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


@pytest.mark.parametrize("value", ["1,²,32", "1," + "9" * 5000 + ",32", "1,0,32", "3,224"])
def test_input_option_refuses_what_is_not_a_size_in_one_line(value):
    r = archc("summary", "specs/lenet5.yaml", "--input", value)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: --input expects three positive sizes C,H,W") and len(r.stderr) < 300
