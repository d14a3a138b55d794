"""expand: naming, containers, meta keys, parameters, blocks, defaults, scopes, outputs."""

from __future__ import annotations

import contextlib
import importlib
import textwrap

import pytest

import archcompiler
from archcompiler import SpecError
from archcompiler.expand import expand
from archcompiler.graph import INPUT

from conftest import ROOT, make_spec

C1 = "{conv: {out: 3, k: 1}}"  # a shape-neutral layer for 3-channel inputs


def graph(body: str, overrides: dict | None = None, **header):
    return expand(make_spec(body, **header), **(overrides or {}))


def inputs(g) -> dict[str, list[str]]:
    return {n.id: n.inputs for n in g.nodes.values()}


def error(body: str, overrides: dict | None = None, **header) -> SpecError:
    with pytest.raises(SpecError) as info:
        graph(body, overrides, **header)
    return info.value


# -- naming -----------------------------------------------------------------


def test_list_items_are_named_by_position_including_parameter_free_layers():
    g = graph(f"""
    - {C1}
    - relu
    - {{maxpool: {{k: 2}}}}
    - flatten
    """, outputs="o: '3'")
    assert list(g.nodes) == ["0", "1", "2", "3"]
    assert [n.op for n in g.nodes.values()] == ["conv", "relu", "maxpool", "flatten"]
    assert inputs(g) == {"0": [INPUT], "1": ["0"], "2": ["1"], "3": ["2"]}
    assert g.scopes == {}


def test_named_mapping_body_chains_in_order():
    g = graph(f"""
    stem: {C1}
    act: relu
    pool: {{maxpool: {{k: 2}}}}
    """, outputs="o: pool")
    assert inputs(g) == {"stem": [INPUT], "act": ["stem"], "pool": ["act"]}


def test_seq_with_list_and_mapping():
    g = graph(f"""
    a:
      seq: [{C1}, relu]
    b:
      seq: {{x: {C1}, y: relu}}
    """, outputs="o: b")
    assert list(g.nodes) == ["a.0", "a.1", "b.x", "b.y"]
    assert inputs(g) == {"a.0": [INPUT], "a.1": ["a.0"], "b.x": ["a.1"], "b.y": ["b.x"]}
    assert g.scopes["a"].kind == "seq" and g.scopes["a"].output == "a.1"
    assert g.scopes["b"].nodes == ["b.x", "b.y"] and g.scopes["b"].output == "b.y"


def test_bare_list_as_named_item_is_a_positional_seq():
    g = graph(f"""
    blk: [{C1}, relu, {C1}]
    """, outputs="o: blk")
    assert list(g.nodes) == ["blk.0", "blk.1", "blk.2"]
    assert g.scopes["blk"].kind == "seq"
    assert g.outputs["o"].node == "blk.2"


def test_named_chain_mapping_in_item_position():
    g = graph(f"""
    blk:
      first: {C1}
      second: relu
    """, outputs="o: blk")
    assert list(g.nodes) == ["blk.first", "blk.second"]
    assert g.scopes["blk"].output == "blk.second"


# -- containers -------------------------------------------------------------


def test_concat_branches_and_join_node():
    g = graph(f"""
    stem: {C1}
    cat:
      concat:
        x: {{conv: {{out: 2, k: 1}}}}
        y: identity
        z: [{{maxpool: {{k: 3, s: 1, pad: 1}}}}, {{conv: {{out: 5, k: 1}}}}]
    """, outputs="o: cat")
    assert list(g.nodes) == ["stem", "cat.x", "cat.z.0", "cat.z.1", "cat.concat"]
    join = g.nodes["cat.concat"]
    assert join.op == "concat"
    assert join.inputs == ["cat.x", "stem", "cat.z.1"]  # mapping order; identity = the container's input
    assert g.nodes["cat.x"].inputs == ["stem"] and g.nodes["cat.z.0"].inputs == ["stem"]
    assert g.scopes["cat"].kind == "concat" and g.scopes["cat"].output == "cat.concat"
    assert g.scopes["cat.z"].parent == "cat"
    assert g.outputs["o"].node == "cat.concat"


def test_add_join_node_and_act():
    g = graph(f"""
    stem: {C1}
    sum:
      add: {{p: {C1}, q: identity, r: [{C1}, relu]}}
      act: relu
    """, outputs="o: sum")
    join = g.nodes["sum.add"]
    assert join.op == "add"
    assert join.inputs == ["sum.p", "stem", "sum.r.1"]
    assert join.args.act == "relu" and join.args.scale == 1.0


def test_residual_body_children_are_direct_and_identity_shortcut():
    g = graph(f"""
    stem: {C1}
    res:
      residual: [{C1}, relu]
      act: relu
    """, outputs="o: res")
    assert list(g.nodes) == ["stem", "res.0", "res.1", "res.add"]
    join = g.nodes["res.add"]
    assert join.op == "residual_add"
    assert join.inputs == ["stem", "res.1"]  # (shortcut, body)
    assert join.args.act == "relu"
    assert g.scopes["res"].kind == "residual" and g.scopes["res"].output == "res.add"
    assert set(g.scopes) == {"res"}  # no extra level for the body


def test_residual_named_body_and_shortcut_child():
    g = graph("""
    res:
      residual: {a: {conv: {out: 8, k: 1}}, b: relu}
      shortcut: {conv: {out: 8, k: 1}}
    """, outputs="o: res")
    assert list(g.nodes) == ["res.a", "res.b", "res.shortcut", "res.add"]
    assert g.nodes["res.shortcut"].inputs == [INPUT]
    assert g.nodes["res.a"].inputs == [INPUT]
    assert g.nodes["res.add"].inputs == ["res.shortcut", "res.b"]


def test_residual_scale_option():
    g = graph(f"""
    res:
      residual: [{C1}, relu]
      scale: 0.25
      act: relu
    """, outputs="o: res")
    assert g.nodes["res.add"].args.scale == 0.25
    assert g.nodes["res.add"].args.act == "relu"
    assert list(g.nodes) == ["res.0", "res.1", "res.add"]


def test_scale_op_still_usable_as_a_layer():
    g = graph(f"""
    a: {C1}
    s: {{scale: {{factor: 0.5}}}}
    """, outputs="o: s")
    assert g.nodes["s"].op == "scale" and g.nodes["s"].args.factor == 0.5


def test_container_needs_two_branches():
    e = error(f"""
    cat:
      concat: {{x: {C1}}}
    """, outputs="o: cat")
    assert "at least two branches" in e.message


# -- `_` scopeless names ------------------------------------------------------


def test_underscore_names_add_no_level():
    g = graph(f"""
    _pre: [{C1}, relu]
    blk:
      _inner: {{a: {C1}, b: relu}}
    st:
      _rep: {{conv: {{out: 3, k: 1}}, repeat: 2}}
    """, outputs="o: st")
    assert list(g.nodes) == ["0", "1", "blk.a", "blk.b", "st.0", "st.1"]
    assert g.nodes["blk.a"].inputs == ["1"]
    assert g.scopes["_pre"].nodes == ["0", "1"]
    assert g.scopes["blk._inner"].parent == "blk"


def test_underscore_name_collision_is_a_duplicate():
    e = error(f"""
    a: {C1}
    _grp: {{a: {C1}, b: relu}}
    """, outputs="o: _grp")
    assert "'a' is already used" in e.message


# -- repeat -----------------------------------------------------------------


def test_repeat_in_list_takes_consecutive_positions():
    g = graph(f"""
    - {C1}
    - relu
    - {{conv: {{out: 3, k: 1}}, repeat: 3}}
    - relu
    """, outputs="o: '5'")
    assert list(g.nodes) == ["0", "1", "2", "3", "4", "5"]
    assert [n.op for n in g.nodes.values()] == ["conv", "relu", "conv", "conv", "conv", "relu"]
    assert inputs(g)["4"] == ["3"] and inputs(g)["2"] == ["1"]
    assert g.scopes == {}


def test_repeat_on_named_item_makes_a_scope():
    g = graph("""
    stage: {conv: {out: 3, k: 1}, repeat: 3}
    """, outputs="o: stage")
    assert list(g.nodes) == ["stage.0", "stage.1", "stage.2"]
    sc = g.scopes["stage"]
    assert sc.kind == "repeat" and sc.output == "stage.2" and sc.nodes == ["stage.0", "stage.1", "stage.2"]
    assert inputs(g) == {"stage.0": [INPUT], "stage.1": ["stage.0"], "stage.2": ["stage.1"]}


def test_repeat_of_block_instance():
    g = graph("stage: {unit: [4], repeat: 2}", blocks="""
    unit:
      params: [c]
      seq:
        conv: {conv: {out: $c, k: 1}}
        act: relu
    """, outputs="o: stage")
    assert list(g.nodes) == ["stage.0.conv", "stage.0.act", "stage.1.conv", "stage.1.act"]
    assert g.scopes["stage.0"].block == "unit" and g.scopes["stage.0"].parent == "stage"
    assert g.scopes["stage.1"].args == {"c": 4}
    assert g.nodes["stage.1.conv"].scopes == ("stage", "stage.1")


def test_repeat_count_from_param_and_from_only_on_first_copy():
    g = graph(f"""
    a: {C1}
    b: {C1}
    r: {{conv: {{out: 3, k: 1}}, repeat: $n, from: a}}
    """, params="n: 2", outputs="o: r\np: b")
    assert inputs(g)["r.0"] == ["a"] and inputs(g)["r.1"] == ["r.0"]
    g = graph(f"""
    - {C1}
    - {C1}
    - {{conv: {{out: 3, k: 1}}, repeat: $n, from: '0'}}
    """, {"n": 3}, params="n: 2", outputs="o: '4'\np: '1'")
    assert inputs(g)["2"] == ["0"] and inputs(g)["3"] == ["2"] and inputs(g)["4"] == ["3"]


@pytest.mark.parametrize("count", ["0", "-1", "1.5", "true"])
def test_bad_repeat_counts(count):
    e = error(f"r: {{conv: {{out: 3, k: 1}}, repeat: {count}}}", outputs="o: r")
    assert "'repeat' must be a whole number" in e.message


# -- when -------------------------------------------------------------------


BODY_WHEN = f"""
a: {C1}
b: {{conv: {{out: 3, k: 1}}, when: $extra}}
c: relu
"""


def test_when_false_removes_item_and_its_output():
    g = graph(BODY_WHEN, params="extra: false", outputs="main: c\nside: b")
    assert list(g.nodes) == ["a", "c"]
    assert g.nodes["c"].inputs == ["a"]
    assert list(g.outputs) == ["main"]


def test_when_true_keeps_item():
    g = graph(BODY_WHEN, params="extra: false", outputs="main: c\nside: b", overrides={"extra": True})
    assert list(g.nodes) == ["a", "b", "c"]
    assert g.nodes["c"].inputs == ["b"]
    assert list(g.outputs) == ["main", "side"]


def test_when_false_in_list_takes_no_position():
    g = graph(f"""
    - {C1}
    - {{conv: {{out: 3, k: 1}}, when: false}}
    - relu
    """, outputs="o: '1'")
    assert list(g.nodes) == ["0", "1"] and g.nodes["1"].op == "relu"


def test_from_an_omitted_layer_is_an_error():
    e = error(f"""
    a: {C1}
    b: {{conv: {{out: 3, k: 1}}, when: false}}
    c: {{conv: {{out: 3, k: 1}}, from: b}}
    """, outputs="o: c")
    assert "switched off" in e.message


def test_when_must_be_boolean():
    e = error("a: {conv: {out: 3, k: 1}, when: $n}", params="n: 1", outputs="o: a")
    assert "'when' must be true or false" in e.message


# -- from -------------------------------------------------------------------


def test_from_sibling_and_input():
    g = graph("""
    a: {conv: {out: 3, k: 1}}
    b: {conv: {out: 4, k: 1}}
    c: {conv: {out: 5, k: 1}, from: a}
    d: {conv: {out: 6, k: 1}, from: input}
    cat: {concat: {x: {identity: null, from: b}, y: {identity: null, from: c}, z: {identity: null, from: d}}}
    """, outputs="o: cat")
    assert inputs(g)["c"] == ["a"] and inputs(g)["d"] == [INPUT]
    assert inputs(g)["cat.x"] == ["b"] and inputs(g)["cat.y"] == ["c"] and inputs(g)["cat.z"] == ["d"]


def test_from_full_dotted_path_and_scope_name():
    g = graph(f"""
    blk:
      seq:
        inner: {C1}
        other: {C1}
    x: {{conv: {{out: 3, k: 1}}, from: blk.inner}}
    cat: {{concat: {{p: {{identity: null, from: x}}, q: {{identity: null, from: blk}}}}}}
    """, outputs="o: cat")
    assert inputs(g)["x"] == ["blk.inner"]
    assert inputs(g)["cat.q"] == ["blk.other"]  # a scope's name means its output


def test_from_inside_block_instances_is_local():
    g = graph("""
    x: {u: [2]}
    y: {u: [3]}
    """, blocks="""
    u:
      params: [c]
      seq:
        a: {conv: {out: $c, k: 1}}
        b: {conv: {out: $c, k: 1}}
        j: {concat: {p: {identity: null, from: a}, q: identity}}
    """, outputs="o: y")
    assert inputs(g)["x.j.p"] == ["x.a"]
    assert inputs(g)["y.j.p"] == ["y.a"]
    assert inputs(g)["y.j.concat"] == ["y.j.p", "y.b"]
    assert inputs(g)["y.a"] == ["x.j.concat"]


def test_forward_from_making_a_cycle_is_an_error():
    e = error(f"""
    a: {{conv: {{out: 3, k: 1}}, from: b}}
    b: {C1}
    """, outputs="o: b")
    assert "cycle" in e.message
    assert "a -> b -> a" in str(e)


def test_dangling_from_suggests_a_name():
    e = error(f"""
    conv1: {C1}
    b: {{conv: {{out: 3, k: 1}}, from: convl}}
    """, outputs="o: b")
    assert "'convl' names no layer or block" in str(e)
    assert "did you mean 'conv1'?" in str(e)
    assert e.line == 8  # the `from:` line (header 3 lines, outputs 2, body: 1, conv1 1)


def test_spec_error_keeps_message_and_hint_apart():
    e = error(f"""
    conv1: {C1}
    b: {{conv: {{out: 3, k: 1}}, from: convl}}
    """, outputs="o: b")
    assert e.message == "'convl' names no layer or block"
    assert e.hint == "did you mean 'conv1'?"
    assert str(e) == "test.yaml:8:35: error: 'convl' names no layer or block (hint: did you mean 'conv1'?)"


def test_dangling_output_is_an_error():
    e = error(f"a: {C1}\nb: {C1}", outputs="o: bb")
    assert "'bb' names no layer or block" in str(e) and "did you mean 'b'?" in str(e)


# -- parameters -------------------------------------------------------------


PARAMS = "w: 4\nr: 2.5\nflag: true"
BODY_PARAMS = """
a: {conv: {out: "${w * 2}", k: 1}}
b: {dropout: {p: "${r / 10}"}, when: $flag}
"""


def test_param_defaults_and_expressions():
    g = graph(BODY_PARAMS, params=PARAMS, outputs="o: a\np: b")
    assert g.nodes["a"].args.out == 8
    assert g.nodes["b"].args.p == pytest.approx(0.25)
    assert g.params == {"w": 4, "r": 2.5, "flag": True}


def test_param_overrides():
    g = graph(BODY_PARAMS, {"w": 6, "r": 5, "flag": False}, params=PARAMS, outputs="o: a\np: b")
    assert g.nodes["a"].args.out == 12
    assert "b" not in g.nodes
    assert g.params == {"w": 6, "r": 5, "flag": False}


def test_override_of_unknown_param():
    e = error(BODY_PARAMS, {"wx": 6}, params=PARAMS, outputs="o: a\np: b")
    assert "unknown parameter 'wx'" in e.message and "did you mean 'w'?" in str(e)


@pytest.mark.parametrize("key,value", [("w", "6"), ("w", 6.0), ("flag", 1), ("w", True)])
def test_override_of_wrong_type(key, value):
    e = error(BODY_PARAMS, {key: value}, params=PARAMS, outputs="o: a\np: b")
    assert f"parameter '{key}' has type" in e.message


def test_int_override_of_float_param_is_accepted():
    g = graph(BODY_PARAMS, {"r": 5}, params=PARAMS, outputs="o: a\np: b")
    assert g.nodes["b"].args.p == pytest.approx(0.5)


def test_unused_param_is_an_error():
    e = error(BODY_PARAMS, params=PARAMS + "\nunused: 3", outputs="o: a\np: b")
    assert "parameter 'unused' is never used" in e.message


def test_unknown_param_in_expression():
    e = error("a: {conv: {out: $wdth, k: 1}}", params="width: 3", outputs="o: a")
    assert "unknown parameter 'wdth'" in e.message and "did you mean 'width'?" in str(e)


def test_invalid_op_argument_names_the_layer():
    e = error("a: {conv: {out: 3, k: 1, stride: 2}}", outputs="o: a")
    assert "unknown key 'stride'" in e.message and "conv 'a'" in e.message


# -- blocks -----------------------------------------------------------------


BLOCKS = """
unit:
  params: [c, k]
  seq:
    conv: {conv: {out: $c, k: $k}}
    act: relu
one:
  params: {c: 5}
  conv: {out: $c, k: 1}
"""


def test_block_params_positional_keyword_and_defaults():
    g = graph("""
    a: {unit: [4, 3]}
    b: {unit: {k: 1, c: 6}}
    c: {one: []}
    d: {one: [7]}
    e: {one: {c: 2}}
    """, blocks=BLOCKS, outputs="o: e")
    assert list(g.nodes) == ["a.conv", "a.act", "b.conv", "b.act", "c", "d", "e"]
    assert (g.nodes["a.conv"].args.out, g.nodes["a.conv"].args.k) == (4, 3)
    assert (g.nodes["b.conv"].args.out, g.nodes["b.conv"].args.k) == (6, 1)
    assert [g.nodes[n].args.out for n in "cde"] == [5, 7, 2]
    assert g.scopes["a"].block == "unit" and g.scopes["a"].kind == "seq" and g.scopes["a"].args == {"c": 4, "k": 3}
    assert g.scopes["c"].kind == "op" and g.scopes["c"].block == "one" and g.scopes["c"].output == "c"
    assert g.scopes["c"].args == {"c": 5}


def test_block_args_in_signature_order():
    g = graph("b: {unit: {k: 1, c: 6}}", blocks=BLOCKS, outputs="o: b")
    assert list(g.scopes["b"].args.items()) == [("c", 6), ("k", 1)]


@pytest.mark.parametrize("call,message", [
    ("{unit: [4]}", "block 'unit' takes 2 argument(s) unit(c, k), got 1"),
    ("{unit: [4, 1, 2]}", "block 'unit' takes 2 argument(s) unit(c, k), got 3"),
    ("{unit: {c: 1}}", "block 'unit' needs argument 'k'"),
    ("{unit: {c: 1, kk: 2}}", "block 'unit' has no parameter 'kk'"),
    ("{unit: 3}", "must be a list or a mapping"),
])
def test_block_argument_errors(call, message):
    e = error(f"a: {call}", blocks=BLOCKS, outputs="o: a")
    assert message in e.message


def test_block_recursion_is_an_error():
    e = error("a: {r: []}", blocks="""
    r:
      seq: {x: {conv: {out: 3, k: 1}}, y: {q: []}}
    q:
      seq: {x: {conv: {out: 3, k: 1}}, y: {r: []}}
    """, outputs="o: a")
    assert "block 'r' uses itself (r -> q -> r)" in e.message


def test_unused_block_param_and_unknown_name_in_block():
    e = error("a: {u: [1]}", blocks="u:\n  params: [c]\n  conv: {out: 3, k: 1}", outputs="o: a")
    assert "parameter 'c' of block 'u' is never used" in e.message
    e = error("a: {u: [1]}", blocks="u:\n  params: [c]\n  conv: {out: $cc, k: 1}", outputs="o: a")
    assert "unknown parameter 'cc' in block 'u'" in e.message and "did you mean 'c'?" in str(e)


def test_block_sees_spec_params():
    g = graph("a: {u: [2]}", {"w": 5}, params="w: 3", blocks="u:\n  params: [c]\n  conv: {out: '${c * w}', k: 1}",
              outputs="o: a")
    assert g.nodes["a"].args.out == 10


# -- defaults ---------------------------------------------------------------


def test_defaults_deep_merge_spec_and_block_level():
    g = graph("""
    a: {conv: {out: 3, k: 1}}
    b: {conv: {out: 3, k: 1, norm: {momentum: 0.3}, act: null}}
    c: {conv: {out: 3, k: 1, norm: null}}
    d: {maxpool: {k: 2}}
    e: {u: []}
    f: {conv: {out: 3, k: 1, norm: false, bias: true}}
    """, defaults="conv: {bias: false, norm: {eps: 0.001}, act: relu}\nmaxpool: {ceil: true}", blocks="""
    u:
      defaults: {conv: {norm: {affine: false}, act: silu}}
      seq:
        x: {conv: {out: 3, k: 1}}
        y: {conv: {out: 3, k: 1, act: tanh}}
    """, outputs="o: f")
    n = {k: v.args for k, v in g.nodes.items()}
    assert (n["a"].bias, n["a"].act, n["a"].norm.eps, n["a"].norm.momentum) == (False, "relu", 0.001, 0.1)
    assert (n["b"].norm.eps, n["b"].norm.momentum, n["b"].act) == (0.001, 0.3, None)
    assert n["c"].norm is None and n["c"].act == "relu"
    assert n["d"].ceil is True
    assert (n["e.x"].norm.eps, n["e.x"].norm.affine, n["e.x"].act, n["e.x"].bias) == (0.001, False, "silu", False)
    assert n["e.y"].act == "tanh" and n["e.y"].norm.affine is False
    assert n["f"].norm is None and n["f"].bias is True


def test_block_defaults_do_not_leak_outside_the_block():
    g = graph(f"""
    e: {{u: []}}
    f: {C1}
    """, blocks="""
    u:
      defaults: {conv: {act: silu}}
      conv: {out: 3, k: 1}
    """, outputs="o: f")
    assert g.nodes["e"].args.act == "silu"
    assert g.nodes["f"].args.act is None


def test_defaults_may_use_params():
    g = graph("a: {conv: {out: 3, k: 1}}", {"b": True}, params="b: false", defaults="conv: {bias: $b}", outputs="o: a")
    assert g.nodes["a"].args.bias is True


# -- outputs and training-only layers --------------------------------------


def test_train_only_marks_aux_layers():
    g = graph(f"""
    a: {C1}
    aux: {{seq: {{p: global_avgpool, f: flatten, l: {{linear: {{out: 2}}}}}}}}
    b: {{conv: {{out: 3, k: 1}}, from: a}}
    """, outputs="main: b\naux: {node: aux, train_only: true}")
    assert {n.id: n.train_only for n in g.nodes.values()} == {
        "a": False, "aux.p": True, "aux.f": True, "aux.l": True, "b": False}
    assert g.outputs["aux"].node == "aux.l" and g.outputs["aux"].train_only
    assert [o.name for o in g.eval_outputs()] == ["main"]


def test_all_outputs_train_only_is_an_error():
    e = error(f"a: {C1}", outputs="aux: {node: a, train_only: true}")
    assert "every output is train_only" in e.message


def test_default_output_is_last_layer():
    g = graph(f"a: {C1}\nb: relu")
    assert list(g.outputs) == ["output"]
    assert g.outputs["output"].node == "b" and not g.outputs["output"].train_only
    g = graph(f"a: {C1}\nblk: {{concat: {{x: {C1}, y: identity}}}}")
    assert g.outputs["output"].node == "blk.concat"
    g = graph(f"- {C1}\n- {{conv: {{out: 3, k: 1}}, repeat: 2}}")
    assert g.outputs["output"].node == "2"


def test_never_used_layer_is_an_error():
    e = error(f"""
    a: {C1}
    dead: {C1}
    b: {{conv: {{out: 3, k: 1}}, from: a}}
    """, outputs="main: b")
    assert "the output of 'dead' is never used" in e.message


def test_duplicate_names():
    e = error(f"a: {C1}\na: {C1}", outputs="o: a")
    assert "duplicate key 'a'" in e.message
    e = error(f"""
    blk: {{seq: {{x: {C1}, y: relu}}}}
    _s: {{blk: {C1}, z: relu}}
    """, outputs="o: _s")
    assert "the name 'blk' is already used" in e.message


def test_join_name_clash():
    e = error(f"""
    cat:
      concat: {{concat: {C1}, b: identity}}
    """, outputs="o: cat")
    assert "'cat.concat'" in e.message


@pytest.mark.parametrize("name", ["input", "1abc", "-ab", "a b", "a.b"])
def test_invalid_or_reserved_layer_names(name):
    e = error(f"cat:\n  concat: {{'{name}': {C1}, b: identity}}", outputs="o: cat")
    assert f"'{name}'" in e.message


def test_unknown_op_suggests():
    e = error("a: {cnov: {out: 3, k: 1}}", outputs="o: a")
    assert "unknown op or block 'cnov'" in e.message and "did you mean 'conv'?" in str(e)


def test_internal_op_not_usable():
    e = error("a: {residual_add: {}}", outputs="o: a")
    assert "not an op a spec can use" in e.message


# -- scopes and declaration order ---------------------------------------------


def test_scopes_tree_and_declaration_order():
    g = graph("""
    stem: {conv: {out: 4, k: 1}}
    inc: {inception: [2, 3]}
    res:
      residual:
        a: {conv: {out: 5, k: 1}}
        b: relu
      shortcut: {conv: {out: 5, k: 1}}
    """, blocks="""
    inception:
      params: [c1, c2]
      concat:
        b1: {conv: {out: $c1, k: 1}}
        b2: [{conv: {out: $c2, k: 1}}, relu]
    """, outputs="o: res")
    assert list(g.nodes) == ["stem", "inc.b1", "inc.b2.0", "inc.b2.1", "inc.concat",
                             "res.a", "res.b", "res.shortcut", "res.add"]
    assert list(g.scopes) == ["inc", "inc.b2", "res"]
    inc = g.scopes["inc"]
    assert (inc.kind, inc.block, inc.parent, inc.output) == ("concat", "inception", None, "inc.concat")
    assert inc.args == {"c1": 2, "c2": 3}
    assert inc.nodes == ["inc.b1", "inc.b2.0", "inc.b2.1", "inc.concat"]
    b2 = g.scopes["inc.b2"]
    assert (b2.kind, b2.block, b2.parent, b2.output, b2.depth) == ("seq", None, "inc", "inc.b2.1", 2)
    assert g.nodes["inc.b2.0"].scopes == ("inc", "inc.b2")
    assert g.nodes["inc.concat"].scopes == ("inc",)
    assert g.nodes["stem"].scopes == ()
    assert g.order() == list(g.nodes)


def test_order_follows_dependencies_for_forward_from():
    g = graph(f"""
    a: {C1}
    b: {{conv: {{out: 3, k: 1}}, from: c}}
    c: {{conv: {{out: 3, k: 1}}, from: a}}
    """, outputs="o: b")
    assert list(g.nodes) == ["a", "b", "c"]
    assert g.order() == ["a", "c", "b"]


def test_input_shape_from_params():
    g = graph(f"a: {C1}", {"size": 16}, params="size: 8", outputs="o: a", input=(3, "$size", "$size"))
    assert g.input_shape == (3, 16, 16)
    e = error(f"a: {C1}", params="size: 0", outputs="o: a", input=(3, "$size", "$size"))
    assert "positive integers" in e.message


def test_default_output_skips_an_omitted_last_layer():
    g = graph(f"a: {C1}\nb: {{conv: {{out: 3, k: 1}}, when: false}}")
    assert list(g.nodes) == ["a"]
    assert g.outputs["output"].node == "a"


@pytest.mark.parametrize("use", ["a: {blk: null}", "a: blk"])
def test_parameterless_block_without_brackets(use):
    g = graph(use, blocks="blk:\n  seq: {x: {conv: {out: 3, k: 1}}, y: relu}", outputs="o: a")
    assert list(g.nodes) == ["a.x", "a.y"]
    assert g.scopes["a"].block == "blk"


def test_parameter_default_computed_from_an_earlier_parameter():
    params = 'w: 4\nwide: "${w * 2}"'
    body = "a: {conv: {out: $wide, k: 1}}"
    assert graph(body, params=params).nodes["a"].args.out == 8
    assert graph(body, {"w": 5}, params=params).nodes["a"].args.out == 10
    assert graph(body, {"wide": 3}, params=params).nodes["a"].args.out == 3
    e = error(body, params='wide: "${w * 2}"\nw: 4')  # only earlier parameters are visible
    assert "unknown parameter 'w'" in e.message and (e.line, e.column) == (5, 9)


def test_block_parameter_default_computed_from_earlier_ones():
    blocks = """
    unit:
      params: {c: 4, c2: "${c * 2}"}
      seq: [{conv: {out: $c, k: 1}}, {conv: {out: $c2, k: 1}}]
    """
    g = graph("a: {unit: [3]}\nb: {unit: {c: 5, c2: 7}}", blocks=blocks)
    assert [g.nodes[f"a.{i}"].args.out for i in (0, 1)] == [3, 6]
    assert [g.nodes[f"b.{i}"].args.out for i in (0, 1)] == [5, 7]


def test_defaults_must_name_ops():
    e = error("a: {conv: {out: 3, k: 1}}", defaults="cnov: {bias: false}")
    assert "'cnov', which is not an op" in e.message and "conv" in e.hint


def test_block_named_like_an_op_is_refused():
    with pytest.raises(SpecError, match="block name 'relu' is taken"):
        make_spec("a: relu", blocks="relu:\n  params: []\n  conv: {out: 3, k: 1}")


def test_instances_with_equal_arguments_share_them_and_equal_but_differently_typed_ones_do_not():
    blocks = """
    unit:
      params: [c, b]
      seq: [{conv: {out: $c, k: 1, bias: $b}}]
    """
    g = graph("- {unit: [3, true]}\n- {unit: [3, true]}\n- {unit: [4, false]}", blocks=blocks, outputs="o: '2'")
    first, second, third = (n.args for n in g.nodes.values())
    assert first is second and first.bias is True and (third.out, third.bias) == (4, False)
    # 1 == True, but `bias` must be a boolean: the second instance is validated on its own.
    err = error("- {unit: [3, true]}\n- {unit: [3, 1]}", blocks=blocks, outputs="o: '1'")
    assert "bias" in err.message and "1.0" in err.message and (err.line, err.column) == (7, 40)  # at `$b`


# -- names that look like keywords ---------------------------------------------


@pytest.mark.parametrize("body", [
    "se: [{conv: {out: 3, k: 1}}, relu]",                           # squeeze-and-excitation, not a typo of 'seq'
    "concta: {seq: [{conv: {out: 3, k: 1}}]}",                      # an explicit chain may have any name
    "ad: {conv: {out: 3, k: 1}}",                                    # a layer (not a chain) called 'ad'
    "conv: {conv: {out: 3, k: 1}}\nrelu: relu",                      # layers named like ops, as timm names them
    "stage: [{conv: {out: 3, k: 1}}]\nshortcut: [{conv: {out: 3, k: 1}}]",  # two edits from 'scale'; a keyword itself
])
def test_names_that_are_not_typos_stay_legal(body):
    graph(body)


@pytest.mark.parametrize("body, word", [
    ("concta: {b1: " + C1 + ", b2: " + C1 + "}", "concat"),
    ("residul: [" + C1 + "]", "residual"),
    ("ad: {a: " + C1 + ", b: " + C1 + "}", "add"),
    ("sqe: [" + C1 + "]", "seq"),
    ("shortcu: [" + C1 + "]", "shortcut"),
])
def test_a_chain_named_one_typo_from_a_keyword_is_an_error(body, word):
    err = error(body)
    assert f"looks like a misspelt '{word}'" in err.message
    assert (err.line, err.column) == (5, 3)


def test_two_ops_in_one_item_say_so():
    err = error("- {linear: {out: 4}, dropout: {p: 0.5}}", input=(8,))
    assert err.message == "one item holds two ops, 'linear' and 'dropout'"


# -- the input's shape, repeat indices and names, residual when -------------------------


def _shapes(body: str, **header):
    from archcompiler.shapes import infer_shapes

    return {k: n.shape for k, n in infer_shapes(graph(body, **header)).nodes.items()}


def test_in_is_the_channel_count_of_what_the_item_receives():
    s = _shapes("""
    a: {conv: {out: 8, k: 1}}
    b: {conv: {out: "${in * 2}", k: 3, pad: 1, groups: $in}}
    c: {conv: {out: $in, k: 1}, from: a}
    d: {conv: {out: "${in_shape[1] + in}", k: 1}, from: b}
    """, outputs="o: c\np: d")
    assert s["b"] == (16, 8, 8) and s["c"] == (8, 8, 8) and s["d"] == (24, 8, 8)


def test_in_in_block_arguments_and_defaults_is_the_blocks_input():
    g = graph("""
    a: {conv: {out: 8, k: 1}}
    b: {unit: {}}
    c: {unit: [$in]}
    """, blocks="unit:\n  params: {out: '${in * 4}'}\n  seq: {x: {conv: {out: $out, k: 1}}}")
    assert g.scopes["b"].args == {"out": 32} and g.scopes["c"].args == {"out": 32}


def test_in_follows_the_input_shape_the_caller_gives():
    from archcompiler import compile_graph

    spec_body = "a: {conv: {out: '${in_shape[1] // 2}', k: 1}}"
    from conftest import make_spec

    assert compile_graph(make_spec(spec_body), input_shape=(3, 32, 32)).nodes["a"].shape == (16, 32, 32)


def test_in_where_the_input_is_not_made_yet_is_an_error():
    e = error("""
    blk:
      seq:
        a: {conv: {out: 4, k: 1}}
        b: {conv: {out: $in, k: 1}, from: blk}
    """)
    assert "not made yet" in e.message or "names no layer" in e.message


@pytest.mark.parametrize("name", ["in", "in_shape", "i", "__x"])
def test_builtin_variable_names_are_not_parameters(name):
    e = error("a: {conv: {out: 3, k: 1}}", params=f"{{{name}: 1}}")
    assert "a parameter" in e.message and "cannot" in e.message


def test_repeat_index_and_name_pattern():
    s = _shapes("""
    stage: {conv: {out: "${4 * (i + 1)}", k: 1}, repeat: 3, names: "block1-{i}"}
    tail:
      - {conv: {out: "${i + 1}", k: 1}, repeat: 2, names: "t{i * 10}"}
    """)
    assert s["stage.block1-0"][0] == 4 and s["stage.block1-2"][0] == 12
    assert s["tail.t0"][0] == 1 and s["tail.t10"][0] == 2


@pytest.mark.parametrize("pattern, message", [
    ("'a.{i}'", "not a valid layer name"),
    ("'x{i}' ", None),  # fine: checked below to be accepted
    ("'x{flag}'", "a name needs a whole number or text"),
    ("'x{nope}'", "unknown parameter 'nope'"),
    ("'same'", "already used"),
])
def test_bad_name_patterns_are_located_errors(pattern, message):
    body = f"stage: {{conv: {{out: 3, k: 1}}, repeat: 2, names: {pattern}}}"
    header = {"params": "{flag: true}"} if "flag" in pattern else {}
    if message is None:
        assert "stage.x1" in graph(body, **header).nodes
        return
    e = error(body, **header)
    assert message in e.message and e.loc.line > 1


def test_names_without_repeat_is_an_error():
    e = error("a: {conv: {out: 3, k: 1}, names: 'x{i}'}")
    assert "'names' names the copies of a 'repeat'" in e.message


def test_a_residual_whose_when_is_false_is_its_body_alone():
    body = """
    u:
      residual:
        conv: {seq: [{conv: {out: $out, k: 3, pad: 1}}, relu]}
      when: "${in == out}"
    """
    on = graph(body, params="{out: 3}")
    off = graph(body, params="{out: 5}")
    assert list(on.nodes) == ["u.conv.0", "u.conv.1", "u.add"]
    assert list(off.nodes) == ["u.conv.0", "u.conv.1"] and off.outputs["output"].node == "u.conv.1"


def test_when_on_a_shortcut_switches_the_projection():
    body = """
    u:
      residual: {c: {conv: {out: $out, k: 1}}}
      shortcut: {conv: {out: $out, k: 1}, when: "${in != out}"}
    """
    assert "u.shortcut" in graph(body, params="{out: 8}").nodes
    assert "u.shortcut" not in graph(body, params="{out: 3}").nodes


def test_layer_named_like_an_op_holding_a_chain():
    g = graph("conv: [{conv: {out: 3, k: 1}}, relu]\nblock: {conv: {seq: [relu]}}")
    assert list(g.nodes) == ["conv.0", "conv.1", "block.conv.0"]


# -- equal block instances: expanded once, copied after ------------------------

walk_module = importlib.import_module("archcompiler.expand")  # the module (the package's `expand` is its function)

UNIT = """
unit:
  params: {c: 3, k: 1}
  seq:
    conv1: {conv: {out: $c, k: $k}}
    act: relu
"""


def _compiled(spec) -> object:
    """Everything a compile makes of `spec` (nodes, scopes, outputs, summary), or its error with its location."""
    try:
        g = archcompiler.compile_graph(spec)
    except SpecError as exc:
        return "error", str(exc)
    return {"nodes": [repr(n) for n in g.nodes.values()], "scopes": [repr(s) for s in g.scopes.values()],
            "outputs": [repr(o) for o in g.outputs.values()], "summary": archcompiler.summary(spec).to_dict()}


def copied_and_walked(monkeypatch, body: str, **header) -> tuple[object, int]:
    """`body` compiled with equal block instances copied and with every instance walked: the results must be
    equal.  Returns the result and how many instances were copies."""
    copies = [0]
    replay = walk_module._Walk._replay

    def counted(self, *args):
        copies[0] += 1
        return replay(self, *args)

    monkeypatch.setattr(walk_module._Walk, "_replay", counted)
    with_copies = _compiled(make_spec(body, **header))
    copies[0] = 0
    with contextlib.suppress(SpecError):
        expand(make_spec(body, **header))
    made = copies[0]
    monkeypatch.setattr(walk_module, "MEMOISE_INSTANCES", False)
    walked = _compiled(make_spec(body, **header))
    assert copies[0] == made  # the walk copies nothing
    assert with_copies == walked
    return with_copies, made


def test_equal_instances_are_copied_and_equal_the_walk(monkeypatch):
    result, copies = copied_and_walked(monkeypatch, """
    first: {unit: []}
    stage: {unit: [], repeat: 3}
    other: {unit: {c: 4}}
    again: {unit: {c: 4}}
    """, blocks=UNIT, outputs="o: again")
    assert copies == 4  # stage.0-2 copy `first`, `again` copies `other`
    assert [n.split("(")[1].split(",")[0] for n in result["nodes"]][:6] == [
        "id='first.conv1'", "id='first.act'", "id='stage.0.conv1'", "id='stage.0.act'", "id='stage.1.conv1'",
        "id='stage.1.act'"]


def test_argument_values_of_other_types_are_other_instances(monkeypatch):
    _, copies = copied_and_walked(monkeypatch, """
    a: {unit: {c: 3}}
    b: {unit: {c: 3.0}}
    c: {unit: {c: true}}
    """, blocks=UNIT.replace("out: $c", "out: \"${int(c) * 3}\""), outputs="o: c")
    assert copies == 0


def test_an_instance_reading_in_is_copied_only_onto_an_equal_input_shape(monkeypatch):
    result, copies = copied_and_walked(monkeypatch, """
    x: {keep: [], repeat: 3}
    wide: {conv: {out: 5, k: 1}}
    y: {keep: [], repeat: 2}
    """, blocks="""
    keep:
      seq:
        a: {conv: {out: $in, k: 1}}
        b: {relu: {}, when: "${in < 4}"}
    """, outputs="o: y")
    assert copies == 3  # x.1 and x.2 on 3 channels, y.1 on 5
    nodes = " ".join(result["nodes"])
    assert "'x.2.b'" in nodes and "'y.0.b'" not in nodes and "'y.1.a'" in nodes


def test_an_instance_with_a_from_is_walked_each_time(monkeypatch):
    _, copies = copied_and_walked(monkeypatch, """
    stem: {conv: {out: 3, k: 1}}
    t: {tap: [], repeat: 3}
    u: {inner: [], repeat: 2}
    """, blocks="""
    tap:                # `stem` is outside the block
      seq:
        a: {conv: {out: 3, k: 1}}
        b: {add: null, from: [a, stem]}
    inner:              # `a` is inside, yet looked up through the names around
      seq:
        a: {conv: {out: 3, k: 1}}
        b: {relu: {}, from: a}
    """, outputs="o: u")
    assert copies == 0


def test_names_inside_copies_are_found_from_outside(monkeypatch):
    result, copies = copied_and_walked(monkeypatch, """
    u: {unit: []}
    v: {unit: []}
    side: {relu: {}, from: u.conv1}
    j: {add: null, from: [side, v]}
    """, blocks=UNIT, outputs="o: j\nmid: {node: v.conv1, train_only: true}")
    assert copies == 1
    assert "Output(name='mid', node='v.conv1'" in " ".join(result["outputs"])


def test_scopeless_names_keep_their_own_paths(monkeypatch):
    result, copies = copied_and_walked(monkeypatch, """
    s1: {seq: {_a: {unit: []}}}
    s2: {seq: {b: {unit: []}}}
    s3: {seq: {_c: {unit: []}}}
    s4: {seq: {d: {unit: []}}}
    s5: {seq: {e: {split: []}}}
    s6: {seq: {f: {split: []}}}
    """, blocks=UNIT + textwrap.dedent("""
    split:
      seq:
        _inner: {seq: [{conv: {out: 3, k: 1}}, relu]}
    """), outputs="o: s6")
    assert copies == 2  # s4.d copies s2.b, s6.f copies s5.e; `_a` and `_c` add no level, and are walked
    nodes = " ".join(result["nodes"])
    assert "'s1.conv1'" in nodes and "'s3.act'" in nodes and "'s4.d.conv1'" in nodes and "'s6.f.0'" in nodes


def test_names_patterns_when_and_the_repeat_index(monkeypatch):
    result, copies = copied_and_walked(monkeypatch, """
    a: {row: [], repeat: 2}
    b: {row: {on: false}, repeat: 2}
    c: {row: {n: "${i + 1}"}, repeat: 3}
    """, blocks="""
    row:
      params: {n: 2, on: true}
      seq:
        cells: {conv: {out: 3, k: 1}, repeat: $n, names: "cell{i + 1}"}
        gate: {relu: {}, when: $on}
    """, outputs="o: c")
    assert copies == 3  # a.1, b.1, and c.1 (n = 2, on: as a.0); c.0 and c.2 have an n of their own
    nodes = " ".join(result["nodes"])
    assert "'a.1.cells.cell2'" in nodes and "'b.1.gate'" not in nodes and "'c.2.cells.cell3'" in nodes


def test_defaults_of_the_spec_and_of_the_block(monkeypatch):
    result, copies = copied_and_walked(monkeypatch, "x: {d: [], repeat: 3}", defaults="conv: {bias: false}",
                                       blocks="""
    d:
      defaults: {conv: {k: 3, pad: 1}}
      seq: [{conv: {out: 3}}, {conv: {out: 3, k: 1, pad: 0}}]
    """, outputs="o: x")
    assert copies == 2


def test_nested_blocks_are_copied_whole(monkeypatch):
    _, copies = copied_and_walked(monkeypatch, "a: {outer: [], repeat: 3}", blocks=UNIT + textwrap.dedent("""
    outer:
      seq:
        p: {unit: []}
        q: {unit: {c: 4}}
        r: {unit: {c: 4}}
    """), outputs="o: a")
    assert copies == 3  # a.0.r copies a.0.q; a.1 and a.2 copy a.0


def test_an_instance_whose_when_is_false_and_list_arguments(monkeypatch):
    _, copies = copied_and_walked(monkeypatch, """
    first: {conv: {out: 3, k: 1}}
    x: {opt: [], repeat: 3}
    y: {opt: {on: true}}
    z: {lst: [[1, 1]], repeat: 2}
    """, blocks="""
    opt:
      params: {on: false}
      seq: {a: {conv: {out: 3, k: 1}}}
      when: $on
    lst:
      params: [ks]
      conv: {out: 3, k: $ks}
    """, outputs="o: z")
    assert copies == 2  # x.1 and x.2 (switched off); a list argument is never a key


@pytest.mark.parametrize("body,blocks", [
    ("x: {unit: [], repeat: 2, names: same}", UNIT),  # the copy claims a name the first one took
    ("x: {bad: [], repeat: 2}", "bad:\n  seq: [{conv: {out: 3, k: 1, bogus: 1}}]"),  # an error in the first
    ("x: {r: []}", "r:\n  seq: {a: {q: []}}\nq:\n  seq: {a: {conv: {out: 3, k: 1}}, b: {r: []}}"),
])
def test_a_copy_raises_what_the_walk_raises(monkeypatch, body, blocks):
    result, _ = copied_and_walked(monkeypatch, body, blocks=blocks, outputs="o: x")
    assert result[0] == "error"


def test_a_copy_stops_at_the_layer_bound_where_the_walk_does(monkeypatch):
    monkeypatch.setattr(walk_module, "MAX_NODES", 7)
    result, copies = copied_and_walked(monkeypatch, "x: {unit: [], repeat: 5}", blocks=UNIT, outputs="o: x")
    assert copies >= 1 and result[0] == "error" and "grows past 7 layers" in result[1]


@pytest.mark.parametrize("path", sorted((ROOT / "specs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_zoo_spec_compiles_alike_with_copies_and_walked(monkeypatch, path):
    with_copies = _compiled(str(path))
    monkeypatch.setattr(walk_module, "MEMOISE_INSTANCES", False)
    assert with_copies == _compiled(str(path))
