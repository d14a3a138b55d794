"""Shared helpers: build small specs from a body snippet."""

from __future__ import annotations

import textwrap
from typing import Any

from archcompiler.spec import Spec, parse_spec


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
