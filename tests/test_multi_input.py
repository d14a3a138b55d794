"""Multi-input ops (`from: [a, b]`) and the typed IR of the expansion passes."""

from __future__ import annotations

import dataclasses

import pytest

import archcompiler
from archcompiler import SpecError
from archcompiler.expand import expand
from archcompiler.graph import INPUT, Expanded, Graph, Layer, Node
from archcompiler.items import BlockUse, ContainerUse, OpUse, Parser
from archcompiler.ops import OPS, spec_ops
from archcompiler.shapes import infer_shapes
from archcompiler.source import parse_yaml
from archcompiler.wiring import Names, Ref

from conftest import make_spec

BODY = """
stem: {conv: {out: 4, k: 1}}
left: {conv: {out: 2, k: 1}}
right: {conv: {out: 3, k: 1}, from: stem}
cat: {concat: null, from: [left, right, stem]}
proj: {conv: {out: 4, k: 1}}
sum: {add: null, act: relu, from: [proj, stem]}
"""


def compiled(body: str, **header) -> Graph:
    return archcompiler.compile_graph(make_spec(body, **header))


def error(body: str, **header) -> SpecError:
    with pytest.raises(SpecError) as info:
        compiled(body, **header)
    return info.value


def test_from_list_wires_the_inputs_in_order():
    g = compiled(BODY)
    assert g.nodes["cat"].inputs == ["left", "right", "stem"]
    assert g.nodes["cat"].op == "concat" and g.nodes["cat"].shape == (9, 8, 8)
    assert g.nodes["sum"].inputs == ["proj", "stem"]
    assert g.nodes["sum"].op == "add" and g.nodes["sum"].args.act == "relu"
    assert g.outputs["output"].node == "sum"


def test_from_list_order_is_the_concat_order():
    g = compiled("a: {conv: {out: 2, k: 1}}\nb: {conv: {out: 5, k: 1}, from: input}\n"
                 "c: {concat: null, from: [b, a]}")
    assert g.nodes["c"].inputs == ["b", "a"] and g.nodes["c"].shape == (7, 8, 8)


def test_from_list_names_resolve_like_from():
    g = compiled("""
    stage:
      seq:
        a: {conv: {out: 2, k: 1}}
        b: {conv: {out: 2, k: 1}}
    j: {concat: null, from: [stage.a, stage, input]}
    """)
    assert g.nodes["j"].inputs == ["stage.a", "stage.b", INPUT]
    assert g.nodes["j"].shape == (2 + 2 + 3, 8, 8)


def test_join_ops_compile_lower_and_run():
    torch = pytest.importorskip("torch")
    spec = make_spec(BODY)
    model = archcompiler.build(spec, seed=0).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = model(x)
        stem = model.stem(x)
        expected = torch.relu(model.proj(torch.cat([model.left(stem), model.right(stem), stem], 1)) + stem)
    torch.testing.assert_close(out, expected)
    from archcompiler.emit import emit_python

    source = emit_python(archcompiler.compile_graph(spec), "t.yaml")
    assert "torch.cat([left, right, stem], 1)" in source


def test_join_op_without_from_takes_the_layer_before():
    g = compiled("a: {conv: {out: 2, k: 1}}\nj: concat\nk: {add: null}")
    assert g.nodes["j"].inputs == ["a"] and g.nodes["k"].inputs == ["j"]


def test_containers_stay_sugar_over_the_join_ops():
    g = compiled("""
    mix:
      concat:
        x: {conv: {out: 2, k: 1}}
        y: {conv: {out: 2, k: 1}}
    """)
    assert g.nodes["mix.concat"].op == "concat" and g.nodes["mix.concat"].inputs == ["mix.x", "mix.y"]


def test_join_ops_are_spec_ops_and_the_residual_join_is_not():
    assert {"concat", "add"} <= set(spec_ops())
    assert OPS["residual_add"].internal


@pytest.mark.parametrize("body, where, words", [
    # a one-input op given two
    ("a: {conv: {out: 2, k: 1}}\nb: {conv: {out: 2, k: 1}, from: input}\nc: {conv: {out: 2, k: 1}, from: [a, b]}",
     (7, 35), "'c': conv takes 1 input, got 2 (a, b)"),
    ("a: {conv: {out: 2, k: 1}}\nb: {relu: null, from: [a, input]}", (6, 25), "'b': relu takes 1 input, got 2"),
    # the join's own rule
    ("a: {conv: {out: 2, k: 1}}\nb: {add: null, from: [a, input]}", (6, 7), "add needs inputs of one shape"),
    # a list of one, or not of names
    ("a: {conv: {out: 2, k: 1}}\nb: {concat: null, from: [a]}", (6, 27), "'from' takes the name of an earlier layer"),
    ("a: {conv: {out: 2, k: 1}}\nb: {concat: null, from: [a, 3]}", (6, 27),
     "'from' takes the name of an earlier layer"),
    ("a: {conv: {out: 2, k: 1}}\nb: {concat: null, from: []}", (6, 27), "'from' takes the name of an earlier layer"),
    # each name is looked up, and located, on its own
    ("a: {conv: {out: 2, k: 1}}\nb: {concat: null, from: [a, nope]}", (6, 31), "'nope' names no layer or block"),
    # only an op takes several inputs
    ("a: {conv: {out: 2, k: 1}}\nb: {seq: [relu], from: [a, input]}", (6, 26),
     "a 'from' list feeds the inputs of one op"),
    # a layer that feeds nothing is still refused
    ("a: {conv: {out: 2, k: 1}}\nb: {conv: {out: 2, k: 1}}\nc: {concat: null, from: [a, input]}", (6, 7),
     "the output of 'b' is never used"),
])
def test_from_list_errors_are_located(body, where, words):
    err = error(body)
    assert words in err.message, err.message
    assert (err.line, err.column) == where, str(err)
    assert "\n" not in str(err)


def test_from_list_cycle_is_refused():
    err = error("a: {conv: {out: 3, k: 1}}\nb: {add: null, from: [a, c]}\nc: {conv: {out: 3, k: 1}}")
    assert "the wiring has a cycle" in err.message


# -- the typed IR -------------------------------------------------------------


def test_expand_makes_frozen_layers_and_infer_shapes_shaped_nodes():
    expanded = expand(make_spec(BODY))
    assert isinstance(expanded, Expanded) and not isinstance(expanded, Graph)
    layer = expanded.nodes["cat"]
    assert type(layer) is Layer and not hasattr(layer, "shape")
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.inputs = []  # type: ignore[misc]
    shaped = infer_shapes(expanded)
    assert isinstance(shaped, Graph)
    assert all(type(n) is Node for n in shaped.nodes.values())
    assert shaped.nodes["cat"].shape == (9, 8, 8) and shaped.nodes["cat"].inputs == layer.inputs
    assert expanded.nodes["cat"] is layer  # the pass made new nodes, it did not edit these


def test_parser_types_items():
    tree = parse_yaml("items:\n- {conv: {out: 2, k: 1}, from: a}\n- {unit: [1]}\n- {concat: {x: relu, y: relu}}\n"
                      "- {concat: null, from: [a, b]}\n- [relu]\n", "t.yaml")["items"]
    parser = Parser(OPS, ["unit"], spec_ops())
    kinds = [parser.item(entry, tree.loc_of(i)) for i, entry in enumerate(tree)]
    assert [type(k) for k in kinds] == [OpUse, BlockUse, ContainerUse, OpUse, ContainerUse]
    assert kinds[0].meta == {"from": "a"} and kinds[0].meta_loc("from").line == 2
    assert kinds[3].kind == "concat" and kinds[4].kind == "seq"
    assert parser.item(tree[0], tree.loc_of(0)) is kinds[0]  # parsed once per subtree


def test_refs_are_typed_and_distinct():
    names = Names()
    loc = archcompiler.errors.Loc("t.yaml", 1, 1)
    a, b = Ref("x", names, loc), Ref("x", names, loc)
    assert a != b and a.name == "x" and a.names is names and a.loc is loc
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "y"  # type: ignore[misc]
