"""spec: the header is validated by pydantic, with located, one-line errors."""

from __future__ import annotations

import pytest

from archcompiler import SpecError
from archcompiler.spec import json_schema, parse_spec

GOOD = "archc: 1\nname: tiny\ninput: [3, 8, 8]\nbody:\n  a: {conv: {out: 4, k: 3}}\n"


def test_a_minimal_spec_loads():
    spec = parse_spec(GOOD, "tiny.yaml")
    assert spec.name == "tiny" and list(spec.input) == [3, 8, 8] and spec.blocks == {}


@pytest.mark.parametrize("text, where, words", [
    (GOOD.replace("archc: 1", "archc: 2"), (1, 8), "archc"),
    (GOOD.replace("name: tiny", "name: 3tiny"), (2, 7), "name"),
    (GOOD + "titel: x\n", (6, 1), "unknown key 'titel' in spec (hint: did you mean 'title'?)"),
    (GOOD.replace("archc: 1\n", ""), (1, 1), "needs 'archc'"),
    (GOOD.replace("input: [3, 8, 8]", "input: [3, 8, 8, 8]"), (3, 8), "input"),
    (GOOD + "params: {num-classes: 3}\n", (6, 10), "'num-classes' is not a valid name"),
    (GOOD + "blocks:\n  b:\n    params: [x]\n", (7, 3), "block 'b' has no body"),
])
def test_header_errors_point_at_the_text(text, where, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "t.yaml")
    err = info.value
    assert (err.path, err.line, err.column) == ("t.yaml", *where), str(err)
    assert words in str(err) and "\n" not in str(err)
    assert str(err).startswith(f"t.yaml:{where[0]}:{where[1]}: error: ")


def test_schema_lists_every_op_and_the_header_keys():
    from archcompiler.ops import spec_ops

    schema = json_schema()
    assert set(schema["properties"]) >= {"archc", "name", "input", "params", "defaults", "blocks", "body", "outputs"}
    items = schema["$defs"]["Item"]["anyOf"]
    keyed = {v["required"][0] for v in items if "required" in v}
    assert set(spec_ops()) | {"seq", "concat", "add", "residual"} <= keyed
