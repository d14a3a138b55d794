"""The examples of docs/spec-language.md compile, and say what the prose says.

Every ```yaml block of the reference is a whole spec.  Each one is parsed with
`parse_spec` and compiled with `compile_graph`; a block marked by a preceding
`<!-- error -->` comment must instead raise `SpecError`, with exactly the
message shown in the ```text block after it.  The facts the prose states
about an example (layer names, shapes, parameter counts, ...) are checked in
FACTS, keyed by the example's `name:` so that reordering the page changes
nothing.  Only one test builds a torch model (train/eval return values and
state_dict keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from archcompiler import SpecError, compile_graph, summary
from archcompiler.graph import Graph
from archcompiler.spec import parse_spec

DOC_PATH = "docs/spec-language.md"
DOC = Path(__file__).resolve().parent.parent / DOC_PATH
TEXT = DOC.read_text(encoding="utf-8")

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Example:
    index: int  # position among the page's yaml blocks
    line: int  # line of the opening fence in the page
    text: str
    name: str
    error: bool  # marked `<!-- error -->`
    after: Optional[str]  # body of the first ```text block after it, before the next yaml block


def _examples() -> list[Example]:
    fences = list(_FENCE.finditer(TEXT))
    out = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "yaml":
            continue
        before = TEXT[: fence.start()].rstrip().splitlines()
        error = bool(before) and before[-1].strip() == "<!-- error -->"
        after = None
        for later in fences[i + 1:]:
            if later.group(1) == "yaml":
                break
            if later.group(1) == "text":
                after = later.group(2)
                break
        name = re.search(r"^name:[ \t]*(\S+)", fence.group(2), re.M)  # also for examples that are not valid YAML
        line = TEXT[: fence.start()].count("\n") + 1
        out.append(Example(len(out), line, fence.group(2), name.group(1) if name else f"line{line}", error, after))
    return out


EXAMPLES = _examples()
BY_NAME = {e.name: e for e in EXAMPLES}
GOOD = [e for e in EXAMPLES if not e.error]
BAD = [e for e in EXAMPLES if e.error]


def _id(e: Example) -> str:
    return f"{e.index}-{e.name}"


def _graph(name: str, **params: Any) -> Graph:
    return compile_graph(parse_spec(BY_NAME[name].text, DOC_PATH), **params)


# ---------------------------------------------------------------------------
# every example


def test_page_has_examples():
    assert len(GOOD) >= 15 and len(BAD) >= 2
    names = [e.name for e in EXAMPLES]
    assert len(set(names)) == len(names), "every example needs its own `name:`"


@pytest.mark.parametrize("example", GOOD, ids=_id)
def test_example_compiles(example: Example):
    try:
        graph = compile_graph(parse_spec(example.text, DOC_PATH))
    except SpecError as exc:
        pytest.fail(f"example {example.index} ({example.name}, page line {example.line}) does not compile: {exc}")
    assert graph.name == example.name
    assert graph.nodes and all(node.shape is not None for node in graph.nodes.values())


# which stage rejects each error example, as the page says
ERROR_STAGE = {"typo_header": "parse_spec", "typo_op": "compile_graph", "needs_flatten": "compile_graph",
               "from_arity": "compile_graph"}


@pytest.mark.parametrize("example", BAD, ids=_id)
def test_error_example(example: Example):
    assert example.after is not None, f"error example {example.name} needs a ```text block with its message after it"
    shown = example.after.strip().splitlines()[0]
    stage = "parse_spec"
    with pytest.raises(SpecError) as info:
        spec = parse_spec(example.text, DOC_PATH)
        stage = "compile_graph"
        compile_graph(spec)
    error = info.value
    assert stage == ERROR_STAGE[example.name]
    display = shown.split(":", 1)[0]  # the page shows the spec saved as NAME.yaml
    assert display == f"{example.name}.yaml"
    assert str(error).replace(DOC_PATH, display, 1) == shown
    assert shown.startswith(f"{display}:{error.line}:{error.column}: error: {error.message}")
    if error.hint:
        assert shown.endswith(f" (hint: {error.hint})")


# ---------------------------------------------------------------------------
# what the prose says about the examples


def shapes(**expected: Any) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        for node, shape in expected.items():
            node = node.replace("__", ".")
            assert g.nodes[node].shape == tuple(shape), node
    return check


def layers(*expected: str) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        assert list(g.nodes) == list(expected)
    return check


def params(total: int) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        from archcompiler.analysis import analyze

        assert analyze(g).total_params == total
    return check


def inputs(**expected: list[str]) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        for node, ins in expected.items():
            assert g.nodes[node.replace("__", ".")].inputs == ins, node
    return check


def args(node: str, **expected: Any) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        a = g.nodes[node].args
        for key, value in expected.items():
            if key == "norm" and isinstance(value, dict):
                assert a.norm is not None, node
                for k, v in value.items():
                    assert getattr(a.norm, k) == v, (node, k)
            else:
                assert getattr(a, key) == value, (node, key)
    return check


def outputs(**expected: str) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        assert {k: o.node for k, o in g.outputs.items()} == expected
    return check


def ops(expected: dict[str, str]) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        for node, op in expected.items():
            assert g.nodes[node].op == op, node
    return check


def train_only(nodes: list[str], outs: dict[str, bool]) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        assert [n for n, node in g.nodes.items() if node.train_only] == nodes
        assert {k: o.train_only for k, o in g.outputs.items()} == outs
    return check


def block_args(**expected: dict[str, Any]) -> Callable[[Graph], None]:
    def check(g: Graph) -> None:
        assert {k: g.scopes[k].args for k in expected} == expected
    return check


def uses_every_op(g: Graph) -> None:
    from archcompiler.ops import spec_ops

    assert {n.op for n in g.nodes.values()} == set(spec_ops())


# (example name, parameter overrides, checks)
FACTS: list[tuple[str, dict[str, Any], list[Callable[[Graph], None]]]] = [
    ("first_cnn", {}, [
        layers("conv1", "pool1", "conv2", "pool2", "flatten", "fc"),
        shapes(conv1=(16, 32, 32), pool1=(16, 16, 16), conv2=(32, 16, 16), pool2=(32, 1, 1), flatten=(32,), fc=(10,)),
        params(5418),
    ]),
    ("lenet5", {}, [shapes(pool2=(16, 5, 5), flatten=(400,), fc3=(10,)), params(61706)]),
    ("params_demo", {}, [shapes(stem=(32, 32, 32), fc=(1000,))]),
    ("params_demo", {"num_classes": 10, "size": 96}, [shapes(stem=(32, 48, 48), fc=(10,))]),
    ("expr_demo", {}, [shapes(conv1=(24, 32, 32), conv2=(12, 32, 32)), args("conv2", k=(1, 3)),
                       args("conv1", act="relu")]),
    ("expr_demo", {"wide": True}, [shapes(conv1=(48, 32, 32))]),
    ("list_body", {}, [
        layers(*map(str, range(8))),
        ops({"0": "conv", "3": "conv", "7": "linear"}),
        outputs(output="7"),
    ]),
    ("named_body", {}, [
        layers("stem.0", "stem.1", "features.reduce", "features.act", "head.pool", "head.flatten", "head.fc"),
        outputs(logits="head.fc"),
    ]),
    ("defaults_demo", {}, [
        shapes(conv1=(16, 16, 16), pool1=(16, 8, 8)),
        args("conv1", bias=False, norm={"eps": 0.001}, act="relu"),
        args("pool1", ceil=True),
        args("conv2", bias=False, norm={"eps": 0.001, "momentum": 0.01}, act="relu"),
        args("conv3", norm={"eps": 0.001}, act=None),
        args("conv4", bias=True, norm=None, act=None),
    ]),
    ("blocks_demo", {}, [
        layers("a.conv1", "a.conv2", "b.conv1", "b.conv2", "c.conv1", "c.conv2", "d", "pool"),
        shapes(a__conv2=(16, 32, 32), b__conv1=(32, 16, 16), b__conv2=(32, 16, 16), c__conv2=(16, 16, 16)),
        args("a.conv1", act="relu6", s=1), args("a.conv2", act=None),
        args("b.conv1", s=2, out=32), args("c.conv1", out=16, s=1),
        args("d", act="relu", out=8),
        block_args(a={"c": 16, "s": 1}, b={"c": 32, "s": 2}, c={"c": 16, "s": 1}, d={"c": 8}),
    ]),
    ("concat_demo", {}, [
        layers("mixed.branch1", "mixed.branch2.0", "mixed.branch2.1", "mixed.branch3.0", "mixed.branch3.1",
               "mixed.branch4.0", "mixed.branch4.1", "mixed.concat"),
        shapes(mixed__concat=(256, 28, 28)),
    ]),
    ("add_demo", {}, [
        layers("block.main.0", "block.main.1", "block.add", "pool"),
        inputs(block__add=["block.main.1", "input"]), args("block.add", act="relu"),
    ]),
    ("residual_demo", {}, [
        layers("unit1.conv1", "unit1.conv2", "unit1.add", "unit2.0", "unit2.1", "unit2.shortcut", "unit2.add"),
        inputs(unit1__add=["input", "unit1.conv2"], unit2__shortcut=["unit1.add"]),
        args("unit1.add", act="relu", scale=1.0),
        shapes(unit2__add=(128, 28, 28)),
        args("unit2.0", norm={"eps": 1e-5}), args("unit2.shortcut", norm={"eps": 1e-5}),
    ]),
    ("in_demo", {}, [
        args("a.dw", groups=16, out=16), shapes(a__pw=(32, 32, 32), b__pw=(96, 32, 32), head=(32, 31, 31)),
        args("b.dw", groups=32), args("head", k=2, out=32), block_args(a={"factor": 2, "out": 32}, b={"factor": 3, "out": 96}),
    ]),
    ("mul_demo", {}, [
        layers("se.avgpool", "se.fc1", "se.relu", "se.fc2", "se.scale", "se.mul", "pool"),
        inputs(se__mul=["input", "se.scale"]), shapes(se__mul=(32, 14, 14)),
    ]),
    ("repeat_names_demo", {}, [
        layers(*(f"block1.denselayer{j}.{n}" for j in (1, 2, 3) for n in ("norm", "conv", "concat")), "wide.w0", "wide.w1"),
        shapes(block1__denselayer1__norm=(16, 8, 8), block1__denselayer2__norm=(24, 8, 8),
               block1__denselayer3__norm=(32, 8, 8), block1__denselayer3__concat=(40, 8, 8),
               wide__w0=(8, 8, 8), wide__w1=(16, 8, 8)),
    ]),
    ("plain_family", {}, [layers("stem", "stage.0", "pool", "flatten", "fc")]),
    ("repeat_demo", {}, [
        layers("stem.0", "stem.1", "stem.2", "stem.3", "stage.0.conv", "stage.0.relu", "stage.1.conv",
               "stage.1.relu", "stage.2.conv", "stage.2.relu"),
        shapes(stage__2__relu=(32, 16, 16)),
    ]),
    ("repeat_demo", {"depth": 1}, [
        layers("stem.0", "stem.1", "stem.2", "stem.3", "stage.0.conv", "stage.0.relu"),
    ]),
    ("when_demo", {}, [
        layers("conv", "relu", "pool", "flatten", "head.0", "head.1"),
        ops({"head.0": "dropout", "head.1": "linear"}),
    ]),
    ("when_demo", {"use_bn": True, "dropout": False}, [
        layers("conv", "bn", "relu", "pool", "flatten", "head.0"),
        ops({"head.0": "linear"}),
    ]),
    ("from_demo", {}, [
        inputs(stage__side=["stem"], stage__both__x=["stage.b"], stage__both__y=["stage.side"], raw=["input"],
               tap=["stage.a"]),
        outputs(features="stage.both.concat", raw="raw", tap="tap"),
        shapes(stage__both__concat=(24, 32, 32)),
    ]),
    ("from_list_demo", {}, [
        inputs(right=["stem"], both=["left", "right", "stem"], sum=["proj", "stem"]),
        shapes(both=(32, 32, 32), sum=(16, 32, 32)),
        args("sum", act="relu"),
    ]),
    ("aux_demo", {}, [
        train_only(["aux.pool", "aux.flatten", "aux.fc"], {"logits": False, "aux": True}),
        shapes(fc=(10,), aux__fc=(10,)),
    ]),
    ("aux_demo", {"aux_logits": False}, [
        outputs(logits="fc"),
        train_only([], {"logits": False}),
        layers("stem", "stage", "pool", "flatten", "fc"),
    ]),
    ("scopeless_demo", {}, [layers("conv1", "conv2", "conv3", "conv4", "pool")]),
    ("scopeless_demo", {"deep": False}, [layers("conv1", "conv2", "pool")]),
    ("ops_tour", {}, [
        shapes(c1=(16, 32, 32), c2=(16, 32, 32), c3=(16, 32, 30), part=(8, 32, 30), sub=(8, 16, 15), mp=(8, 9, 8),
               ap=(8, 4, 4), amp=(8, 4, 3), aap=(8, 2, 2), gmp=(8, 1, 1), gap=(8, 1, 1), flat=(8,), fc=(10,),
               probs=(10,), f6=(84,), rbf=(10,)),
        uses_every_op,  # the page says "every op in one spec"
    ]),
]


@pytest.mark.parametrize("name, overrides, checks", FACTS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'defaults'}" for n, o, _ in FACTS])
def test_stated_facts(name: str, overrides: dict[str, Any], checks: list[Callable[[Graph], None]]):
    assert name in BY_NAME, f"the page has no example named {name}"
    graph = _graph(name, **overrides)
    for check in checks:
        check(graph)


def test_counting_table():
    """Section 19's table for aux_demo."""
    report = summary(parse_spec(BY_NAME["aux_demo"].text, DOC_PATH))
    rows = {name: report.row(name) for name in ("stem", "stage", "aux", "fc")}
    assert (rows["stem"].params, rows["stem"].buffers, rows["stem"].macs) == (464, 33, 442_368)
    assert (rows["stage"].params, rows["stage"].buffers, rows["stage"].macs) == (4_640, 0, 1_179_648)
    assert (rows["aux"].params, rows["aux"].macs, rows["aux"].train_only) == (330, 320, True)
    assert (rows["fc"].params, rows["fc"].macs) == (330, 320)
    assert (report.total_params, report.total_buffers) == (5_764, 33)
    assert (report.total_macs, report.train_only_macs) == (1_622_336, 320)
    without_aux = summary(parse_spec(BY_NAME["aux_demo"].text, DOC_PATH), aux_logits=False)
    assert (without_aux.total_params, without_aux.total_macs, without_aux.train_only_macs) == (5_434, 1_622_336, 0)


def _state_dict_keys_on_page() -> list[str]:
    start = TEXT.index("gives these state_dict keys")
    block = _FENCE.search(TEXT, start)
    assert block is not None and block.group(1) == "text"
    return block.group(2).split()


def test_aux_demo_model():
    """The one torch build: what train() and eval() return, and the state_dict keys of section 17."""
    torch = pytest.importorskip("torch")
    from archcompiler import build

    spec = parse_spec(BY_NAME["aux_demo"].text, DOC_PATH)
    model = build(spec)
    assert list(model.state_dict()) == _state_dict_keys_on_page()
    x = torch.randn(2, 3, 32, 32)
    model.train()
    out = model(x)
    assert type(out).__name__ == "AuxDemoOutputs" and out._fields == ("logits", "aux")
    assert out.logits.shape == out.aux.shape == (2, 10)
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    plain = build(spec, aux_logits=False).train()
    assert isinstance(plain(x), torch.Tensor)
    assert "aux" not in dict(plain.named_children())


# ---------------------------------------------------------------------------
# behaviour the page documents in prose


_TINY = """\
archc: 1
name: tiny
input: [8, 8, 8]
body:
{body}
"""


def test_default_output_is_last_layer():
    graph = compile_graph(parse_spec(_TINY.format(body="  a: {conv: {out: 4, k: 1}}\n  b: relu"), DOC_PATH))
    assert {k: o.node for k, o in graph.outputs.items()} == {"output": "b"}


def test_residual_scale_option():
    body = "  res:\n    residual: [{conv: {out: 8, k: 1}}]\n    scale: 0.2\n    act: relu\noutputs: {o: res}"
    graph = compile_graph(parse_spec(_TINY.format(body=body), DOC_PATH))
    assert (graph.nodes["res.add"].args.scale, graph.nodes["res.add"].args.act) == (0.2, "relu")


def test_override_rules():
    """Section 3: overrides must name a parameter and keep its type (a float takes an int)."""
    spec = parse_spec(BY_NAME["params_demo"].text, DOC_PATH)
    assert compile_graph(spec, drop=1).nodes["dropout"].args.p == 1
    for bad in ({"num_classes": 3.0}, {"num_class": 10}, {"size": True}):
        with pytest.raises(SpecError):
            compile_graph(spec, **bad)
    unused = BY_NAME["params_demo"].text.replace("  drop: 0.2\n", "  drop: 0.2\n  spare: 1\n")
    with pytest.raises(SpecError, match="'spare' is never used"):
        compile_graph(parse_spec(unused, DOC_PATH))


def test_norm_true_replaces_a_default_norm():
    """Section 7: `norm: true` is a default BatchNorm, not merged with `defaults`."""
    text = BY_NAME["defaults_demo"].text.replace("norm: {momentum: 0.01}", "norm: true")
    norm = compile_graph(parse_spec(text, DOC_PATH)).nodes["conv2"].args.norm
    assert (norm.eps, norm.momentum) == (1e-5, 0.1)


def test_flow_mapping_needs_quotes():
    """Section 4: an unquoted `${...}` inside `{...}` is a YAML error."""
    text = BY_NAME["expr_demo"].text.replace('"${width // 2}"', "${width // 2}")
    with pytest.raises(SpecError, match="invalid YAML"):
        parse_spec(text, DOC_PATH)


def test_from_a_switched_off_layer_is_an_error():
    """Section 13: `from:` naming a layer whose `when:` is false is an error."""
    text = BY_NAME["when_demo"].text.replace("  relu: relu\n", "  relu: {relu: {}, from: bn}\n")
    assert compile_graph(parse_spec(text, DOC_PATH), use_bn=True).nodes["relu"].inputs == ["bn"]
    with pytest.raises(SpecError, match="switched off"):
        compile_graph(parse_spec(text, DOC_PATH))
