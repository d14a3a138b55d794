"""Users' own ops: `register_op`, the three ways to load a plugin, `requires:`, and the example plugin
(examples/plugins/archc-example-ops, installed by scripts/setup.sh) in every command.

The command line runs in this process, with the op registry of a fresh process (`archc`), and each
way of loading the plugin once more in a process of its own, as a user runs it (`archc_process`).
`hide_installed` runs it with the `archc.ops` entry points hidden, so that `--plugin` and
`ARCHC_PLUGINS` are seen to load the plugin on their own.  In-process tests that register ops leave
the registry as it was (conftest.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

import archcompiler
from archcompiler import PluginError, SpecError, plugins, register_op
from archcompiler.ops import OPS, OpDef
from archcompiler.spec import parse_spec

from conftest import Ran, run_archc

ROOT = Path(__file__).parents[1]
PLUGIN_DIR = ROOT / "examples" / "plugins" / "archc-example-ops"
SPEC = ROOT / "examples" / "plugins" / "mobile.yaml"
MODULE = "archc_example_ops"
DOC = ROOT / "docs" / "extending.md"

# Runs the CLI; with HIDE set, as if no package declared an `archc.ops` entry point.
RUNNER = """
import importlib.metadata as md, json, os, runpy, sys
if os.environ.get("ARCHC_TEST_HIDE_INSTALLED"):
    _entry_points = md.entry_points
    def entry_points(**kw):
        return md.EntryPoints(()) if kw.get("group") == "archc.ops" else _entry_points(**kw)
    md.entry_points = entry_points
sys.argv = ["archc", *json.loads(os.environ["ARCHC_TEST_ARGS"])]
runpy.run_module("archcompiler.cli", run_name="__main__")
"""


def archc_process(*args: str, hide_installed: bool = False, env: dict | None = None, cwd: Path = ROOT,
                  path: Path | None = None) -> subprocess.CompletedProcess:
    """The command line in a process of its own; `path` goes on its PYTHONPATH."""
    environ = {k: v for k, v in os.environ.items() if k not in (plugins.ENV, "COLUMNS")}  # xdist sets COLUMNS
    environ.update(env or {}, ARCHC_TEST_ARGS=json.dumps(list(args)))
    if hide_installed:
        environ["ARCHC_TEST_HIDE_INSTALLED"] = "1"
    if path is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-c", RUNNER], cwd=cwd, env=environ, capture_output=True, text=True)


@contextmanager
def fresh_process(hide_installed: bool = False, path: Path | None = None) -> Iterator[None]:
    """This process as a new one would be: no plugin loaded, no op of a plugin's registered, `path`
    first on sys.path, and (`hide_installed`) no `archc.ops` entry point; all put back afterwards."""
    ops, loaded, entry_points, sys_path = dict(OPS), set(plugins._loaded), plugins._entry_points, list(sys.path)

    def plugin_modules() -> set[str]:
        return {op.origin for op in OPS.values() if op.origin} | plugins._loaded

    modules = {name: sys.modules.pop(name) for name in plugin_modules() if name in sys.modules}
    for name in [name for name, op in OPS.items() if op.origin]:
        del OPS[name]
    plugins._loaded.clear()
    if hide_installed:
        plugins._entry_points = lambda: []
    if path is not None:
        sys.path.insert(0, str(path))
        importlib.invalidate_caches()
    try:
        yield
    finally:
        for name in plugin_modules():
            sys.modules.pop(name, None)
        sys.modules.update(modules)
        sys.path[:] = sys_path
        plugins._entry_points = entry_points
        OPS.clear()
        OPS.update(ops)
        plugins._loaded.clear()
        plugins._loaded.update(loaded)


def archc(*args: str, hide_installed: bool = False, env: dict | None = None, cwd: Path = ROOT,
          path: Path | None = None) -> Ran:
    """The command line in this process (conftest.run_archc), as `archc_process` runs it in a new one.

    `env` sets environment variables for the call (ARCHC_PLUGINS is unset unless it names it);
    `path` goes first on sys.path, as PYTHONPATH would put it.
    """
    assert "PYTHONPATH" not in (env or {}), "PYTHONPATH takes a process of its own: archc_process"
    with fresh_process(hide_installed, path):
        return run_archc(*args, cwd=cwd, env={plugins.ENV: None, **(env or {})})


def one_line_error(r: Ran | subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(("archc: error: ", f"{SPEC}:")), r.stderr
    return r.stderr.strip()


@pytest.fixture
def example():
    """The example plugin, loaded in this process (conftest.py unloads it after the test)."""
    archcompiler.load_plugins([MODULE], installed=False, environment=False)
    return sys.modules[MODULE]


def write_module(tmp_path: Path, name: str, code: str) -> Path:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    return tmp_path


# ---------------------------------------------------------------------------
# the example plugin is installed, with its entry point


def test_example_plugin_is_installed_with_its_entry_point():
    assert importlib.metadata.version("archc-example-ops") == "0.1.0"
    (ep,) = [ep for ep in importlib.metadata.entry_points(group=plugins.GROUP) if ep.name == MODULE]
    assert ep.value == MODULE
    assert Path(importlib.util.find_spec(MODULE).origin).resolve() == (PLUGIN_DIR / f"{MODULE}.py").resolve()


# ---------------------------------------------------------------------------
# every command, by each way of loading the plugin

ROUTES = {
    "entry point": dict(),
    "--plugin": dict(hide_installed=True, prefix=("--plugin", MODULE)),
    "ARCHC_PLUGINS": dict(hide_installed=True, env={plugins.ENV: MODULE}),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_command_with_the_example_plugin(route, tmp_path):
    how = dict(ROUTES[route])
    prefix = how.pop("prefix", ())

    def run(*args: str) -> Ran:
        r = archc(*prefix, *args, **how)
        assert r.returncode == 0, r.stderr
        return r

    assert "ok: mobile, 11 layers" in run("check", str(SPEC)).stdout

    rows = {row["name"]: row for row in json.loads(run("summary", str(SPEC), "--format", "json").stdout)["nodes"]}
    # sepconv 16 -> 32 (3x3, no bias) on 16x16: 16*9 depthwise + 16*32 pointwise weights, per output pixel MACs
    assert rows["block1.sep"] | {"op": "sepconv", "params": 16 * 9 + 16 * 32, "macs": 16 * 16 * (16 * 9 + 16 * 32),
                                 "output_shape": [32, 16, 16]} == rows["block1.sep"]
    assert rows["block2.sep"]["params"] == 32 * 9 + 32 * 64 and rows["block2.sep"]["output_shape"] == [64, 8, 8]
    assert rows["act"]["op"] == "hard_swish" and rows["act"]["params"] == 0
    assert "sepconv" in run("summary", str(SPEC)).stdout
    assert "hard_swish" in run("summary", str(SPEC), "--paper", "--format", "csv").stdout

    dot = tmp_path / "mobile.dot"
    run("draw", str(SPEC), "-o", str(dot), "--depth", "full")
    assert "sepconv 3x3, 32" in dot.read_text() and "hard swish" in dot.read_text()

    out = tmp_path / "build"
    r = run("build", str(SPEC), "-o", str(out), "--emit", "python", "--emit", "onnx")
    assert "built mobile: 4,314 parameters" in r.stdout
    assert f"import {MODULE}\n" in (out / "mobile.py").read_text()
    assert (out / "mobile.onnx").stat().st_size > 0


@pytest.mark.parametrize("route", list(ROUTES))
def test_each_way_of_loading_the_plugin_works_in_a_process_of_its_own(route):
    how = dict(ROUTES[route])
    prefix = how.pop("prefix", ())
    r = archc_process(*prefix, "check", str(SPEC), **how)
    assert r.returncode == 0 and "ok: mobile, 11 layers" in r.stdout, r.stderr
    if route == "entry point":  # and with the entry points hidden, the spec's `requires:` is unmet
        hidden = archc_process("check", str(SPEC), hide_installed=True)
        assert hidden.returncode == 2 and "requires plugin 'archc_example_ops', which is not loaded" in hidden.stderr


def test_schema_lists_the_plugin_ops():
    schema = json.loads(archc("schema").stdout)
    assert {"SepConvArgs", "NoArgs"} <= set(schema["$defs"])
    hidden = json.loads(archc("schema", hide_installed=True).stdout)
    assert "SepConvArgs" not in hidden["$defs"]


# ---------------------------------------------------------------------------
# requires:


def test_a_required_plugin_that_is_not_loaded_is_a_located_error():
    line = one_line_error(archc("check", str(SPEC), hide_installed=True))
    row = next(i for i, text in enumerate(SPEC.read_text().splitlines(), 1) if text.startswith("requires:"))
    column = SPEC.read_text().splitlines()[row - 1].index(MODULE) + 1
    assert line == (f"{SPEC}:{row}:{column}: error: requires plugin '{MODULE}', which is not loaded (hint: load it "
                    f"with --plugin {MODULE}, or ARCHC_PLUGINS={MODULE}, or install the package that provides the "
                    f"'archc.ops' entry point '{MODULE}')")


def test_a_spec_never_imports_a_plugin_itself():
    text = SPEC.read_text()
    with pytest.raises(SpecError, match="requires plugin 'archc_example_ops', which is not loaded"):
        parse_spec(text, "mobile.yaml")
    assert MODULE not in sys.modules


def test_requires_is_checked_before_the_ops():
    text = "archc: 1\nname: n\ninput: [3, 8, 8]\nrequires: [some_plugin, other]\nbody:\n  a: {nosuch: {}}\n"
    with pytest.raises(SpecError) as err:
        parse_spec(text, "n.yaml")
    assert (err.value.line, err.value.column) == (4, 12) and "'some_plugin'" in err.value.message


def test_an_op_of_a_loaded_plugin_needs_no_requires(example, tmp_path):
    text = "".join(line for line in SPEC.read_text().splitlines(True) if not line.startswith("requires:"))
    graph = archcompiler.compile_graph(parse_spec(text, "mobile.yaml"))
    assert {n.op for n in graph.nodes.values()} >= {"sepconv", "hard_swish"}


def test_requires_accepts_an_entry_point_name_of_a_loaded_module(example, monkeypatch):
    fake = importlib.metadata.EntryPoint(name="fancy-ops", value=MODULE, group=plugins.GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [fake])
    parse_spec(SPEC.read_text().replace("[archc_example_ops]", "[fancy-ops, archc_example_ops]"), "mobile.yaml")
    with pytest.raises(SpecError, match="requires plugin 'other-ops'"):
        parse_spec(SPEC.read_text().replace("[archc_example_ops]", "[fancy-ops, other-ops]"), "mobile.yaml")


# ---------------------------------------------------------------------------
# plugins that fail


def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(tmp_path):
    write_module(tmp_path, "tplug_broken", "raise RuntimeError('boom')\n")
    line = one_line_error(archc("--plugin", "tplug_broken", "check", str(SPEC), path=tmp_path))
    assert line == "archc: error: plugin 'tplug_broken' (--plugin) failed to load: RuntimeError: boom"
    line = one_line_error(archc("check", str(SPEC), env={plugins.ENV: "archc_example_ops, tplug_missing"}))
    assert line == ("archc: error: plugin 'tplug_missing' (ARCHC_PLUGINS) failed to load: "
                    "ModuleNotFoundError: No module named 'tplug_missing'")
    write_module(tmp_path, "tplug_syntax", "def broken(:\n")
    assert "plugin 'tplug_syntax' (--plugin) failed to load: SyntaxError: " in one_line_error(
        archc("--plugin", "tplug_syntax", "summary", str(SPEC), path=tmp_path))


def test_a_failed_plugin_leaves_no_op_behind(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_module(tmp_path, "tplug_half", """
        import dataclasses
        from archcompiler import register_op
        from archcompiler.ops import OPS
        register_op(dataclasses.replace(OPS["relu"], name="tplug_relu"))
        raise ImportError("second half missing")
    """)))
    with pytest.raises(PluginError, match=r"^error: plugin 'tplug_half' \(--plugin\) failed to load: ImportError"):
        archcompiler.load_plugins(["tplug_half"], installed=False, environment=False)
    assert "tplug_relu" not in OPS


def test_a_duplicate_op_names_both_origins(example, tmp_path):
    with pytest.raises(PluginError) as err:
        register_op(OPS["sepconv"], origin="my_ops")
    assert err.value.message == "op 'sepconv' from plugin 'my_ops' is registered already, by plugin 'archc_example_ops'"
    with pytest.raises(PluginError, match="op 'conv' from plugin 'my_ops' is registered already, by archc"):
        register_op(OPS["conv"], origin="my_ops")
    # on the command line: the installed example plugin first, then this one
    write_module(tmp_path, "tplug_dup", """
        import dataclasses
        from archcompiler import register_op
        from archcompiler.ops import OPS
        register_op(dataclasses.replace(OPS["sepconv"], origin=None))
    """)
    line = one_line_error(archc("--plugin", "tplug_dup", "check", str(SPEC), path=tmp_path))
    assert line == ("archc: error: plugin 'tplug_dup' (--plugin) failed to load: op 'sepconv' from plugin 'tplug_dup' is "
                    "registered already, by plugin 'archc_example_ops'")


@pytest.mark.parametrize("name", ["seq", "concat", "add", "residual", "from", "repeat", "when"])
def test_a_spec_keyword_is_not_an_op_name(name):
    with pytest.raises(PluginError, match=f"registers an op named '{name}', which is a spec keyword"):
        register_op(OpDef(name, OPS["relu"].args, "act", OPS["relu"].infer, lowering=OPS["relu"].lowering),
                    origin="my_ops")
    assert OPS.get(name) is None or OPS[name].origin is None


@pytest.mark.parametrize("name", ["hard-swish", "1x1", "", "dw conv", "é"])
def test_an_op_name_must_be_an_identifier(name):
    with pytest.raises(PluginError, match="which is not an identifier"):
        register_op(OpDef(name, OPS["relu"].args, "act", OPS["relu"].infer, lowering=OPS["relu"].lowering))
    assert name not in OPS


def test_register_op_records_the_calling_module(example):
    assert OPS["sepconv"].origin == OPS["hard_swish"].origin == MODULE
    assert all(op.origin is None for name, op in OPS.items() if name not in ("sepconv", "hard_swish"))


# ---------------------------------------------------------------------------
# the compiled model, the emitted source and the ONNX export agree


def _load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emitted_python_imports_the_plugin_and_matches_the_model(example, tmp_path):
    import torch

    from archcompiler.emit import emit_python

    model = archcompiler.build(SPEC, seed=3).eval()
    text = emit_python(model.graph, "examples/plugins/mobile.yaml")
    assert f"\nimport {MODULE}\n" in text and f"{MODULE}.SepConv2d(in_channels, c, 3" in text
    assert "this file imports only torch and the archc plugins it uses: archc_example_ops." in text
    path = tmp_path / "mobile_emitted.py"
    path.write_text(text)
    standalone = _load_file(path, "mobile_emitted").Mobile().eval()
    assert list(standalone.state_dict()) == list(model.state_dict())
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), model(x), rtol=0, atol=0)
    # and in a fresh interpreter, where nothing but the plugin module is importable from archc's side
    code = (f"import importlib.util, torch; s = importlib.util.spec_from_file_location('m', {str(path)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(tuple(m.Mobile().eval()(torch.zeros(1, 3, 32, 32)).shape))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "(1, 10)", r.stderr


def test_onnx_export_of_both_plugin_ops_matches_torch(example):
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from archcompiler.export import export

    model = archcompiler.build(SPEC, seed=1).eval()
    assert {"sepconv", "hard_swish"} <= {n.op for n in model.graph.nodes.values()}
    blob = export(model, "onnx")
    kinds = {n.op_type for n in onnx.load_from_string(blob).graph.node}
    assert {"HardSwish", "Conv"} <= kinds
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# docs/extending.md: its code is the example's code, and its commands print what it shows

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _marked_blocks(marker: str) -> list[str]:
    """The fenced blocks that follow a `<!-- marker -->` line, in order."""
    text = DOC.read_text()
    out = []
    for fence in _FENCE.finditer(text):
        before = text[: fence.start()].rstrip().splitlines()
        if before and before[-1].strip() == f"<!-- {marker} -->":
            out.append(fence.group(2))
    return out


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("marker, path", [
    (f"{MODULE}.py", PLUGIN_DIR / f"{MODULE}.py"),
    ("pyproject.toml", PLUGIN_DIR / "pyproject.toml"),
    ("mobile.yaml", SPEC),
])
def test_the_walk_through_shows_the_example_files_whole(marker, path):
    """The page's blocks of each file, put together, are the file (blank lines between them aside)."""
    blocks = _marked_blocks(marker)
    assert blocks, f"docs/extending.md shows no part of {path.name}"
    assert _lines("\n".join(blocks)) == _lines(path.read_text())


def _sessions() -> list[tuple[bool, str, str]]:
    """(entry points hidden?, command, shown output) for every `$ ...` line of the page's console blocks."""
    text = DOC.read_text()
    out = []
    for fence in _FENCE.finditer(text):
        if fence.group(1) != "console":
            continue
        before = text[: fence.start()].rstrip().splitlines()
        hidden = bool(before) and before[-1].strip() == "<!-- not installed -->"
        for chunk in re.split(r"^(?=\$ )", fence.group(2), flags=re.M):
            if chunk.startswith("$ "):
                command, _, shown = chunk[2:].partition("\n")
                out.append((hidden, command, shown))
    return out


def _text(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.rstrip("\n").splitlines())


@pytest.mark.parametrize("hidden, command, shown", _sessions())
def test_the_walk_through_commands_print_what_it_shows(hidden, command, shown, tmp_path):
    import shlex

    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == "archc", command
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    if "PYTHONPATH" in env:  # read by a new process only
        r = archc_process(*words[1:], hide_installed=hidden, env=env, cwd=tmp_path)
    else:
        r = archc(*words[1:], hide_installed=hidden, env=env, cwd=tmp_path)
    got, want = _text(r.stdout + r.stderr), _text(shown)
    if "mobile.svg" in want and "mobile.dot" in got:  # a machine without Graphviz writes the DOT source
        want = want.replace("mobile.svg", "mobile.dot")
    assert got == want


def test_the_walk_through_python_runs():
    (code,) = [b for b in re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)
               if "load_plugins()" in b]
    environ = {k: v for k, v in os.environ.items() if k not in (plugins.ENV, "COLUMNS")}  # xdist sets COLUMNS
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "4314", r.stderr
