"""Shared helpers: build small specs from a body snippet, and run the `archc` command line in this process."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import pytest

# MKL reads this once, when it starts, so it is set before anything imports torch.  It makes MKL run the
# same kernels on every x86 CPU: without it, float64 logits that amplify rounding (efficientnet_v2_s
# under the fill) move by 1.9e-6 between an AVX-512 Xeon and the AMD machine that recorded them, and
# the float64 comparison in test_zoo_modern.py could not be tighter than that.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

from archcompiler.spec import Spec, parse_spec  # noqa: E402

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # pytest-xdist (scripts/test.sh runs `-n auto`) starts a worker per core: each worker's torch keeps to
    # one thread, or the workers' threads outnumber the cores and every layer waits for one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(autouse=True)
def _op_registry_as_it_was():
    """Each test leaves the op registry as it found it.

    Running the CLI in-process loads the installed plugins (the example's `archc.ops` entry point),
    and tests of plugins register ops of their own; tests that list every op must not see them.
    """
    from archcompiler import plugins
    from archcompiler.ops import OPS

    ops, loaded = dict(OPS), set(plugins._loaded)
    yield
    if OPS.keys() != ops.keys() or plugins._loaded != loaded:
        for module in {op.origin for name, op in OPS.items() if name not in ops} | (plugins._loaded - loaded):
            sys.modules.pop(module, None)  # imported again, and so registered again, by the next load
        OPS.clear()
        OPS.update(ops)
        plugins._loaded.clear()
        plugins._loaded.update(loaded)


def spec_text(body_yaml: str, *, name: str = "net", input: Any = (3, 8, 8), **header: str) -> str:
    """A spec: `archc: 1`, name, input, extra top-level sections (YAML text) and `body:`."""
    lines = ["archc: 1", f"name: {name}", f"input: [{', '.join(str(d) for d in input)}]"]
    for key, text in header.items():
        lines.append(f"{key}:")
        lines.append(textwrap.indent(textwrap.dedent(text).strip("\n"), "  "))
    lines.append("body:")
    lines.append(textwrap.indent(textwrap.dedent(body_yaml).strip("\n"), "  "))
    return "\n".join(lines) + "\n"


def make_spec(body_yaml: str, **header: Any) -> Spec:
    """Parse a small spec whose body is `body_yaml` (params/defaults/blocks/outputs given as YAML text)."""
    return parse_spec(spec_text(body_yaml, **header), "test.yaml")


def flat_outputs(out: Any) -> list:
    """A model's outputs as a list, in order: a tensor alone, a named tuple's fields, a dict's values."""
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (tuple, list)) else [out]


ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Ran:
    """What one `archc ARGS` did, with the fields of a `subprocess.CompletedProcess` the tests read."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class TimedOut(BaseException):
    """An in-process command ran past its `timeout` (a BaseException: archc's handlers cannot swallow it)."""


@contextmanager
def _deadline(seconds: Optional[float]) -> Iterator[None]:
    if seconds is None:
        yield
        return

    def alarm(signum, frame):
        raise TimedOut(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_archc(*args: str, cwd: Path = ROOT, env: Optional[Mapping[str, Optional[str]]] = None,
              timeout: Optional[float] = None) -> Ran:
    """`archc ARGS` run in this process through typer's CliRunner, read as the real command's result.

    The exit status, stdout and stderr are the command's.  An exception that escapes the command
    (it would end a real process with a traceback and exit 1) gives exit 1 with its traceback on
    stderr, so `"Traceback" not in r.stderr` checks the same thing in both.  `cwd` is the working
    directory for the call; `env` sets (None: removes) environment variables for it; past
    `timeout` seconds the call is interrupted with `TimedOut`.  A process of its own is still
    needed for what a process owns: signals, the umask, PYTHONPATH, a real stack overflow.
    """
    from typer.testing import CliRunner

    from archcompiler.cli import app

    here = os.getcwd()
    os.chdir(cwd)
    try:
        with _deadline(timeout):
            # pytest-xdist's workers set COLUMNS=80; a command's output must not depend on how the suite runs.
            result = CliRunner().invoke(app, list(args), env={"COLUMNS": None, **(env or {})}, prog_name="archc")
    finally:
        os.chdir(here)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Ran(tuple(args), result.exit_code, result.stdout, stderr)
