"""analyze: parameters, buffers and MACs per op, scope rows, totals, row order and depth."""

from __future__ import annotations

from pathlib import Path

import pytest

import archcompiler
from archcompiler import summary

from conftest import make_spec


def report(body: str, input=(3, 8, 8), **header):
    header.setdefault("outputs", "o: out")
    return summary(make_spec(body, input=input, **header))


def counts(row) -> tuple[int, int, int]:
    return row.params, row.buffers, row.macs


# -- per op -----------------------------------------------------------------


@pytest.mark.parametrize("args,expected", [
    # weights out*in*k*k (+ out bias); MACs out*H*W * in*k*k
    ("{out: 4, k: 3}", (4 * 3 * 9 + 4, 0, 4 * 6 * 6 * 3 * 9)),
    ("{out: 4, k: 3, bias: false}", (4 * 3 * 9, 0, 4 * 6 * 6 * 3 * 9)),
    ("{out: 4, k: 3, pad: 1, s: 2}", (4 * 3 * 9 + 4, 0, 4 * 4 * 4 * 3 * 9)),
    ("{out: 4, k: [1, 3], pad: [0, 1]}", (4 * 3 * 3 + 4, 0, 4 * 8 * 8 * 3 * 3)),
    # BatchNorm: 2*out trainable (affine), 2*out running stats + 1 step counter
    ("{out: 4, k: 3, bias: false, norm: true}", (4 * 3 * 9 + 8, 9, 4 * 6 * 6 * 3 * 9)),
    ("{out: 4, k: 3, norm: {affine: false}}", (4 * 3 * 9 + 4, 9, 4 * 6 * 6 * 3 * 9)),
    ("{out: 4, k: 3, norm: true, act: relu}", (4 * 3 * 9 + 4 + 8, 9, 4 * 6 * 6 * 3 * 9)),
    ("{out: 4, k: 3, dilation: 2}", (4 * 3 * 9 + 4, 0, 4 * 4 * 4 * 3 * 9)),
])
def test_conv_counts(args, expected):
    r = report(f"out: {{conv: {args}}}")
    assert counts(r.row("out")) == expected
    assert (r.total_params, r.total_buffers, r.total_macs) == expected


def test_grouped_conv_counts():
    r = report("out: {conv: {out: 8, k: 3, pad: 1, groups: 4}}", input=(4, 5, 5))
    # each output channel sees in/groups = 1 input channel
    assert counts(r.row("out")) == (8 * 1 * 9 + 8, 0, 8 * 5 * 5 * 1 * 9)
    r = report("out: {conv: {out: 6, k: 1, groups: 2, bias: false}}", input=(4, 5, 5))
    assert counts(r.row("out")) == (6 * 2, 0, 6 * 25 * 2)


def test_linear_and_batchnorm_counts():
    r = report("""
    bn: batchnorm
    f: flatten
    out: {linear: {out: 10}}
    """, input=(3, 4, 5))
    assert counts(r.row("bn")) == (6, 7, 0)
    assert counts(r.row("f")) == (0, 0, 0)
    assert counts(r.row("out")) == (60 * 10 + 10, 0, 600)
    assert (r.total_params, r.total_buffers, r.total_macs) == (616, 7, 600)
    r = report("bn: {batchnorm: {affine: false}}\nf: flatten\nout: {linear: {out: 10, bias: false}}", input=(3, 4, 5))
    assert counts(r.row("bn")) == (0, 7, 0)
    assert counts(r.row("out")) == (600, 0, 600)


@pytest.mark.parametrize("op,args", [
    ("maxpool", "{k: 2}"), ("avgpool", "{k: 2}"), ("relu", "null"), ("dropout", "null"),
    ("lrn", "{size: 3}"), ("global_avgpool", "null"), ("softmax", "null"), ("scale", "{factor: 3}"),
])
def test_parameter_free_ops_count_nothing(op, args):
    r = report(f"out: {{{op}: {args}}}")
    assert counts(r.row("out")) == (0, 0, 0)


def test_activations_are_output_elements():
    r = report("a: {conv: {out: 4, k: 3}}\nout: {maxpool: {k: 2}}")
    assert r.row("a").activations == 4 * 6 * 6
    assert r.row("out").activations == 4 * 3 * 3
    assert r.total_activations == 144 + 36
    assert r.row("a").output_shape == (4, 6, 6)
    assert r.outputs == {"o": (4, 3, 3)}


def test_labels():
    r = report("""
    a: {conv: {out: 4, k: 3, s: 2, groups: 1, norm: true, act: relu}}
    b: {conv: {out: 4, k: [1, 3], s: [1, 2], groups: 2}}
    out: {maxpool: {k: 3, s: 2}}
    """, input=(4, 16, 16))
    assert r.row("a").label == "conv 3x3/2, 4 +BN +relu"
    assert r.row("b").label == "conv 1x3/1x2, 4 g2"
    assert r.row("out").label == "max pool 3x3/2"


# -- scopes, totals, order ------------------------------------------------------


BLOCKS = """
unit:
  params: [c]
  seq:
    conv: {conv: {out: $c, k: 3, pad: 1, bias: false, norm: true}}
    act: relu
"""

BODY = """
stage: {unit: [4], repeat: 2}
aux: {seq: {p: global_avgpool, f: flatten, l: {linear: {out: 2}}}, from: stage.0}
head: {seq: {p: global_avgpool, f: flatten, l: {linear: {out: 3}}}, from: stage}
"""


@pytest.fixture(scope="module")
def staged():
    return summary(make_spec(BODY, blocks=BLOCKS, outputs="main: head\naux: {node: aux, train_only: true}"))


def test_row_order_scope_before_its_layers(staged):
    assert [(r.name, r.kind, r.depth) for r in staged.rows] == [
        ("stage", "group", 1),
        ("stage.0", "block", 2), ("stage.0.conv", "layer", 3), ("stage.0.act", "layer", 3),
        ("stage.1", "block", 2), ("stage.1.conv", "layer", 3), ("stage.1.act", "layer", 3),
        ("aux", "group", 1), ("aux.p", "layer", 2), ("aux.f", "layer", 2), ("aux.l", "layer", 2),
        ("head", "group", 1), ("head.p", "layer", 2), ("head.f", "layer", 2), ("head.l", "layer", 2),
    ]


def test_scope_rows_aggregate_their_nodes(staged):
    conv0 = (4 * 3 * 9 + 8, 9, 4 * 64 * 3 * 9)
    conv1 = (4 * 4 * 9 + 8, 9, 4 * 64 * 4 * 9)
    assert counts(staged.row("stage.0.conv")) == conv0
    assert counts(staged.row("stage.1.conv")) == conv1
    assert counts(staged.row("stage.0")) == conv0
    assert counts(staged.row("stage")) == tuple(a + b for a, b in zip(conv0, conv1))
    assert staged.row("stage").activations == 4 * 256
    assert staged.row("stage").output_shape == (4, 8, 8)
    assert counts(staged.row("head")) == (4 * 3 + 3, 0, 12)
    for scope in ("stage", "stage.0", "aux", "head"):
        row = staged.row(scope)
        layers = [r for r in staged.rows if r.kind == "layer" and r.name.startswith(scope + ".")]
        assert row.params == sum(r.params for r in layers)
        assert row.macs == sum(r.macs for r in layers)


def test_scope_row_kinds_and_labels(staged):
    assert (staged.row("stage").op, staged.row("stage").label) == ("repeat", "repeat")
    assert (staged.row("stage.0").op, staged.row("stage.0").label) == ("unit", "unit(4)")
    assert (staged.row("aux").op, staged.row("aux").kind) == ("seq", "group")


def test_train_only_macs_are_separate(staged):
    eval_macs = 4 * 64 * 3 * 9 + 4 * 64 * 4 * 9 + 4 * 3
    assert staged.total_macs == eval_macs
    assert staged.train_only_macs == 4 * 2
    assert staged.row("aux").train_only and staged.row("aux.l").train_only
    assert not staged.row("head").train_only and not staged.row("stage").train_only
    # parameters count every layer, as a state_dict does
    assert staged.total_params == (116 + 152) + (4 * 2 + 2) + (4 * 3 + 3)
    assert staged.total_buffers == 18
    assert staged.outputs == {"main": (3,), "aux": (2,)}
    # activations count eval-mode layers only
    assert staged.total_activations == 4 * 64 * 4 + 4 + 4 + 3


def test_report_row_lookup_and_dict(staged):
    with pytest.raises(KeyError):
        staged.row("nope")
    d = staged.to_dict()
    assert d["total_macs"] == staged.total_macs and len(d["nodes"]) == len(staged.rows)
    assert d["nodes"][0]["name"] == "stage" and d["nodes"][0]["output_shape"] == [4, 8, 8]


def test_container_rows_and_join_rows():
    r = report("""
    out:
      concat:
        a: {conv: {out: 2, k: 1}}
        b: identity
    """)
    assert [(x.name, x.kind, x.op, x.depth) for x in r.rows] == [
        ("out", "group", "concat", 1), ("out.a", "layer", "conv", 2), ("out.concat", "layer", "concat", 2)]
    assert r.row("out").output_shape == (5, 8, 8)
    assert counts(r.row("out")) == (3 * 2 + 2, 0, 2 * 64 * 3)
    assert r.row("out.concat").macs == 0


def test_block_label_lists_args_in_signature_order():
    r = report("out: {u: {k: 1, c: 6}}", blocks="""
    u:
      params: [c, k]
      conv: {out: $c, k: $k}
    """)
    assert r.row("out").label == "u(6, 1)"


# ---------------------------------------------------------------------------
# receptive fields, batch and sizes

ZOO = Path(__file__).parents[1] / "specs"


@pytest.mark.parametrize("spec, node, field", [
    # Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural
    # Networks" (Distill, 2019), table of TF-slim models: same geometry as these specs.
    ("alexnet", "features.12", 195),
    ("vgg16", "features.30", 212),
    ("bn_inception", "inception_5b", 699),    # TF-slim's "inception_v2" is BN-Inception
    ("inception_v3", "Mixed_7c", 1311),
    ("inception_v4", "features", 2071),
    ("inception_resnet_v2", "conv2d_7b", 3039),
    ("resnet50", "layer4", 427),              # torchvision's v1.5: stride on the 3x3 (slim's v1: 483)
    ("lenet5", "C5", 32),                     # C5 sees the whole 32x32 input
])
def test_receptive_fields_equal_published_values(spec, node, field):
    row = archcompiler.summary(ZOO / f"{spec}.yaml").row(node)
    assert row.rf == (field, field)
    assert row.jump == ((4, 4) if spec == "lenet5" else (32, 32))


def test_receptive_field_recurrence_on_a_small_chain():
    report = archcompiler.summary(make_spec("""
    a: {conv: {out: 4, k: 3}}
    b: {conv: {out: 4, k: [3, 5], s: 2}}
    c: {conv: {out: 4, k: 3, dilation: 2}}
    d: {maxpool: {k: 2}}
    j: {concat: {x: identity, y: {conv: {out: 4, k: 1}}}}
    """, input=(3, 64, 64)))
    assert [(report.row(n).rf, report.row(n).jump) for n in "abcd"] == [
        ((3, 3), (1, 1)), ((5, 7), (2, 2)), ((13, 15), (2, 2)), ((15, 17), (4, 4)),
    ]
    assert report.row("j.concat").rf == (15, 17)


def test_batch_scales_macs_and_activations_but_not_parameters():
    one = archcompiler.analysis.analyze(archcompiler.compile_graph(ZOO / "googlenet.yaml"))
    eight = archcompiler.analysis.analyze(archcompiler.compile_graph(ZOO / "googlenet.yaml"), batch=8)
    assert eight.total_macs == 8 * one.total_macs and eight.total_activations == 8 * one.total_activations
    assert eight.total_params == one.total_params and eight.total_buffers == one.total_buffers
    assert eight.activation_bytes == 4 * eight.total_activations
    assert one.model_bytes(4) == 4 * (one.total_params + one.total_buffers) == 2 * one.model_bytes(2)


def test_input_override_changes_shapes_and_costs():
    graph = archcompiler.compile_graph(ZOO / "resnet50.yaml", input_shape=(3, 448, 448))
    assert graph.input_shape == (3, 448, 448)
    assert graph.nodes["layer4.2.add"].shape == (2048, 14, 14)
    report = archcompiler.analysis.analyze(graph)
    base = archcompiler.summary(ZOO / "resnet50.yaml")
    assert report.total_params == base.total_params
    assert report.total_macs - 2_048_000 == 4 * (base.total_macs - 2_048_000)  # all but fc scale with the area
