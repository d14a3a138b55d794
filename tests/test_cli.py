"""The `archc` command line: its commands run in this process (conftest.run_archc, typer's CliRunner);
the installed `archc` program and `python -m archcompiler.cli` run as a user runs them, in a process of
their own, at the end.
"""

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

from conftest import Ran, run_archc

ROOT = Path(__file__).parents[1]
SPEC = str(ROOT / "specs" / "googlenet.yaml")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


def archc(*args: str, cwd: Path = ROOT) -> Ran:
    return run_archc(*args, cwd=cwd)


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
        assert {s["stage"]: s["b"]["output"] for s in data["stages"]}["stride 16"] == [1088, 17, 17]
    elif fmt == "markdown":
        assert "stride 16" in r.stdout and "1088x17x17" in r.stdout
    else:  # piped: fitted to the readable width, the outputs left out and said so; COLUMNS shows them
        assert "stride 16" in r.stdout and "1088x17x17" not in r.stdout and "To fit 100 columns" in r.stdout
        wide = run_archc("diff", str(ROOT / "specs" / "inception_v4.yaml"),
                         str(ROOT / "specs" / "inception_resnet_v2.yaml"), env={"COLUMNS": "400"})
        assert "1088x17x17" in wide.stdout and "To fit" not in wide.stdout
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
    # jsonschema.validate(spec, schema) for each spec, with the schema checked and its validator made once
    validator = jsonschema.validators.validator_for(schema)(schema)
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        validator.validate(yaml.safe_load(spec.read_text()))


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
    assert r.stderr.startswith("archc: error: --input expects three positive sizes C,H,W") and len(r.stderr) < 300


# ---------------------------------------------------------------------------- as a user runs it


def _program() -> list[str]:
    """The `archc` console script that `pip install` wrote beside this Python."""
    script = Path(sys.executable).parent / "archc"
    assert script.is_file(), f"no archc program beside {sys.executable}: is archc installed (scripts/setup.sh)?"
    return [str(script)]


@pytest.mark.parametrize("program", ["archc", "python -m archcompiler.cli"])
def test_the_real_program_keeps_the_contract(program, tmp_path):
    """In a process of its own: exit statuses, the streams and the one-line error, as the shell sees them."""
    command = _program() if program == "archc" else [sys.executable, "-m", "archcompiler.cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    ok = run("check", "specs/googlenet.yaml")
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    assert ok.stdout.startswith("specs/googlenet.yaml: ok: googlenet, 97 layers") and ok.stdout.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(SPEC).read_text().replace("out: 64, k: 7", "out: 64, k: 700"))
    r = run("check", str(bad))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"{bad}:") and ": error: " in r.stderr and r.stderr.count("\n") == 1, r.stderr
    if program == "archc":
        usage = run("summary", SPEC, "--no-such-option")
        assert usage.returncode == 2 and "Traceback" not in usage.stderr and "--no-such-option" in usage.stderr
        assert "Usage: archc " in run("--help").stdout


# ---------------------------------------------------------------------------- summary's width, columns and count


def _table_width(text: str) -> int:
    return max(len(line.rstrip()) for line in text.splitlines())


@pytest.mark.parametrize("width", [80, 120])
def test_summary_honours_columns_when_piped(width):
    r = run_archc("summary", "resnet18", env={"COLUMNS": str(width)})
    assert r.returncode == 0, r.stderr
    assert _table_width(r.stdout) <= width and "…" not in r.stdout
    assert "layer4" in r.stdout and "11,689,512 params" in " ".join(r.stdout.split())


def test_summary_without_columns_uses_a_fixed_readable_width():
    from archcompiler.cli import PIPED_WIDTH

    r = run_archc("summary", "inception_v4", env={"COLUMNS": None})
    assert r.returncode == 0, r.stderr
    assert _table_width(r.stdout) <= PIPED_WIDTH == 100 and "…" not in r.stdout
    assert "reduction_a" in r.stdout and "features" in r.stdout  # the timm layout's modules, by default


def test_summary_columns_and_count_options():
    r = run_archc("summary", SPEC, "--columns", "output_size,num_params,mult_adds", "--count", "flops",
                  env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("┃"))
    assert [h.strip() for h in header.strip("┃").split("┃")] == ["name", "output", "params", "FLOPs"]
    assert "2,996,752,384 FLOPs" in r.stdout and "FLOPs = 2 x MACs" in r.stdout
    bad = run_archc("summary", SPEC, "--columns", "colour")
    assert bad.returncode == 2 and "no column 'colour'" in bad.stderr and "num_params" in bad.stderr
    bad = run_archc("summary", SPEC, "--count", "ops")
    assert bad.returncode == 2 and "--count must be macs or flops" in bad.stderr


# ---------------------------------------------------------------------------- help, version, errors, plurals


def test_short_help_and_version():
    from archcompiler import __version__

    assert archc("-h").stdout == archc("--help").stdout and "Usage: archc " in archc("-h").stdout
    assert "Usage: archc summary " in archc("summary", "-h").stdout
    for flag in ("--version", "-V"):
        r = archc(flag)
        assert r.returncode == 0 and r.stdout == f"archc {__version__}\n"


COMMANDS = ("check", "summary", "build", "diff", "list", "schema")  # draw's help is its owner's


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_has_an_example_and_types_in_words(command):
    text = run_archc(command, "-h", env={"COLUMNS": "200"}).stdout
    assert f"Example: archc {command}" in " ".join(text.split())
    assert "<" not in text.replace("<=", "") and "list[" not in text, text  # no <str>, <int>, <list[str]>


def test_one_error_format():
    spec_error = archc("check", "no_such.yaml")
    assert spec_error.returncode == 2 and spec_error.stderr.startswith("no_such.yaml:1:1: error: ")
    for args, message in ((["summary", SPEC, "--depth", "x"], "archc: error: --depth takes"),
                          (["summary"], "archc: error: Missing argument 'SPEC'. (hint: see 'archc summary -h')"),
                          (["summary", SPEC, "--nope"], "archc: error: No such option: --nope"),
                          (["summary", SPEC, "--batch", "x"], "archc: error: Invalid value for '--batch'"),
                          (["nosuchcommand"], "archc: error: No such command")):
        r = archc(*args)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (args, r.stderr)
        assert r.stderr.startswith(message) and "╭" not in r.stderr, (args, r.stderr)


def test_plurals(tmp_path):
    from archcompiler.cli import plural

    assert [plural(1, "block"), plural(2, "block"), plural(1_000, "layer")] == ["1 block", "2 blocks", "1,000 layers"]
    assert plural(1, "block or group", "blocks and groups") == "1 block or group"
    one = tmp_path / "one.yaml"
    one.write_text("archc: 1\nname: one\ninput: [3, 8, 8]\nbody:\n  - stem: {seq: [{conv: {out: 4, k: 3}}]}\n")
    r = archc("check", str(one))
    assert r.returncode == 0 and ": ok: one, 1 layer, " in r.stdout, r.stdout + r.stderr


def test_build_progress_shows_only_after_a_second():
    from rich.console import Console

    from archcompiler.cli import Steps

    def run(delay: float, wait: float) -> str:
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=100)
        with Steps(2, delay=delay, console=console) as steps:
            with steps.step("checking a forward pass"):
                import time

                time.sleep(wait)
        return out.getvalue()

    assert "checking a forward pass" in run(0.0, 0.3)
    assert run(5.0, 0.0) == ""


def test_latex_format_for_summary_paper_and_diff():
    from test_report import check_latex

    for args in (["summary", SPEC, "-f", "latex"], ["summary", "googlenet_paper", "--paper", "-f", "latex"],
                 ["diff", "inception_v4", "inception_resnet_v2", "-f", "latex"]):
        r = archc(*args)
        assert r.returncode == 0, (args, r.stderr)
        check_latex(r.stdout)
