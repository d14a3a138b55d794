"""Shared helpers: build small specs from a body snippet."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest

from archcompiler.spec import Spec, parse_spec


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
