"""infer_shapes: every op's static shape rule, checked against torch where torch has one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from archcompiler import SpecError, compile_graph
from archcompiler.ops import conv_padding

from conftest import make_spec

FAST = settings(max_examples=80, deadline=None, derandomize=True)


def shapes(body: str, input=(3, 8, 8), **header) -> dict[str, tuple]:
    header.setdefault("outputs", "o: out")
    g = compile_graph(make_spec(body, input=input, **header))
    return {n.id: n.shape for n in g.nodes.values()}


def shape_error(body: str, input=(3, 8, 8), **header) -> SpecError:
    header.setdefault("outputs", "o: out")
    with pytest.raises(SpecError) as info:
        compile_graph(make_spec(body, input=input, **header))
    return info.value


def yaml_value(v) -> str:
    return f"[{', '.join(map(str, v))}]" if isinstance(v, (tuple, list)) else str(v)


# -- conv -------------------------------------------------------------------


@pytest.mark.parametrize("args,expected", [
    ("{out: 5, k: 3}", (5, 6, 8)),
    ("{out: 5, k: 3, pad: 1}", (5, 8, 10)),
    ("{out: 5, k: 3, s: 2}", (5, 3, 4)),
    ("{out: 5, k: 3, s: 2, pad: 1}", (5, 4, 5)),
    ("{out: 5, k: 3, dilation: 2}", (5, 4, 6)),
    ("{out: 5, k: [1, 3], pad: [0, 1]}", (5, 8, 10)),
    ("{out: 5, k: 3, pad: [0, 2, 1, 0]}", (5, 8, 9)),
    ("{out: 5, k: 3, s: [1, 2]}", (5, 6, 4)),
    ("{out: 5, k: 3, pad: same}", (5, 8, 10)),
    ("{out: 5, k: 3, s: 2, pad: same}", (5, 4, 5)),
    ("{out: 5, k: 4, s: 3, pad: same}", (5, 3, 4)),
    ("{out: 5, k: 2, dilation: 3, pad: same}", (5, 8, 10)),
])
def test_conv_output_size(args, expected):
    assert shapes(f"out: {{conv: {args}}}", input=(3, 8, 10))["out"] == expected


@st.composite
def conv_cases(draw):
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = draw(st.one_of(
        st.integers(0, 3),
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(*[st.integers(0, 3)] * 4),
        st.just("same"),
    ))
    return h, w, k, s, d, pad


@FAST
@given(conv_cases())
def test_conv_shape_matches_torch(case):
    h, w, k, s, d, pad = case
    body = (f"out: {{conv: {{out: 2, k: {yaml_value(k)}, s: {yaml_value(s)}, "
            f"dilation: {yaml_value(d)}, pad: {yaml_value(pad)}}}}}")
    spec = make_spec(body, input=(3, h, w), outputs="o: out")
    # torch, with the padding written out explicitly (F.pad takes left, right, top, bottom)
    if pad == "same":
        total_h = max((math.ceil(h / s[0]) - 1) * s[0] + (k[0] - 1) * d[0] + 1 - h, 0)
        total_w = max((math.ceil(w / s[1]) - 1) * s[1] + (k[1] - 1) * d[1] + 1 - w, 0)
        t, b, l, r = total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
    elif isinstance(pad, int):
        t = b = l = r = pad
    elif len(pad) == 2:
        t, b, l, r = pad[0], pad[0], pad[1], pad[1]
    else:
        t, b, l, r = pad
    x = F.pad(torch.zeros(1, 3, h, w), (l, r, t, b))
    try:
        expected = tuple(F.conv2d(x, torch.zeros(2, 3, *k), stride=s, dilation=d).shape[1:])
    except RuntimeError:
        expected = None
    if expected is None or 0 in expected:
        with pytest.raises(SpecError, match="'out'"):
            compile_graph(spec)
        return
    assert compile_graph(spec).nodes["out"].shape == expected
    if pad == "same":
        assert expected[1:] == (math.ceil(h / s[0]), math.ceil(w / s[1]))


def test_same_padding_puts_the_odd_pixel_at_the_end():
    from archcompiler.ops import ConvArgs

    assert conv_padding(ConvArgs(out=1, k=4, s=2, pad="same"), 9, 8) == (1, 2, 1, 1)
    assert conv_padding(ConvArgs(out=1, k=3, s=1, pad="same"), 5, 5) == (1, 1, 1, 1)
    assert conv_padding(ConvArgs(out=1, k=2, pad="same"), 5, 5) == (0, 1, 0, 1)
    assert conv_padding(ConvArgs(out=1, k=1, s=2, pad="same"), 5, 5) == (0, 0, 0, 0)


def test_conv_kernel_larger_than_input_names_the_node():
    e = shape_error("blk: {seq: {a: {conv: {out: 4, k: 9}}}}\nout: relu", input=(3, 8, 8))
    assert "'blk.a'" in e.message and "positive" in e.message


def test_conv_groups_must_divide_channels():
    e = shape_error("out: {conv: {out: 4, k: 1, groups: 2}}", input=(3, 8, 8))
    assert "'out'" in e.message and "groups=2" in e.message
    e = shape_error("out: {conv: {out: 3, k: 1, groups: 2}}", input=(4, 8, 8))
    assert "groups=2" in e.message
    assert shapes("out: {conv: {out: 6, k: 3, groups: 3}}", input=(3, 8, 8))["out"] == (6, 6, 6)


def test_conv_needs_a_map():
    e = shape_error("f: flatten\nout: {conv: {out: 4, k: 1}}")
    assert "'out'" in e.message and "(C, H, W)" in e.message


# -- pools ------------------------------------------------------------------


@pytest.mark.parametrize("args,expected", [
    ("{k: 2}", (3, 4, 5)),              # s defaults to k
    ("{k: 3, s: 2}", (3, 3, 4)),
    ("{k: 3, s: 2, ceil: true}", (3, 4, 5)),
    ("{k: 3, s: 2, pad: 1}", (3, 4, 5)),
    ("{k: 2, s: 2, ceil: true}", (3, 4, 5)),
    ("{k: 3, s: 1, pad: 1}", (3, 8, 10)),
    ("{k: [2, 3], s: [2, 3]}", (3, 4, 3)),
])
def test_maxpool_output_size(args, expected):
    assert shapes(f"out: {{maxpool: {args}}}", input=(3, 8, 10))["out"] == expected


def test_ceil_mode_drops_a_window_starting_in_the_padding():
    # 5 wide, k 2, s 2, pad 1, ceil: ceil((5+2-2)/2)+1 = 4, but the 4th window would start at 6 >= 5+1.
    assert shapes("out: {maxpool: {k: 2, s: 2, pad: 1, ceil: true}}", input=(1, 5, 5))["out"] == (1, 3, 3)
    assert tuple(F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape[1:]) == (1, 3, 3)


@pytest.mark.parametrize("size,k,s", [(1, 2, 2), (3, 5, 3), (2, 4, 3)])
def test_ceil_mode_window_larger_than_input(size, k, s):
    expected = tuple(F.max_pool2d(torch.zeros(1, 1, size, size), k, s, ceil_mode=True).shape[1:])
    assert expected == (1, 1, 1)
    body = f"out: {{maxpool: {{k: {k}, s: {s}, ceil: true}}}}"
    assert shapes(body, input=(1, size, size))["out"] == expected


@st.composite
def pool_cases(draw):
    h, w = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    return h, w, k, s, p, draw(st.booleans()), draw(st.sampled_from(["maxpool", "avgpool"]))


@FAST
@given(pool_cases())
def test_pool_shape_matches_torch(case):
    h, w, k, s, p, ceil, kind = case
    body = (f"out: {{{kind}: {{k: {yaml_value(k)}, s: {yaml_value(s)}, pad: {yaml_value(p)}, "
            f"ceil: {str(ceil).lower()}}}}}")
    spec = make_spec(body, input=(2, h, w), outputs="o: out")
    fn = F.max_pool2d if kind == "maxpool" else F.avg_pool2d
    try:
        expected = tuple(fn(torch.zeros(1, 2, h, w), k, s, p, ceil_mode=ceil).shape[1:])
    except RuntimeError:
        expected = None
    if expected is None or 0 in expected:
        with pytest.raises(SpecError, match="'out'"):
            compile_graph(spec)
        return
    assert compile_graph(spec).nodes["out"].shape == expected


def test_pool_padding_over_half_the_kernel_is_an_error():
    e = shape_error("out: {maxpool: {k: 2, pad: 2}}")
    assert "'out'" in e.message and "at most half the kernel" in e.message


@pytest.mark.parametrize("op,args,expected", [
    ("adaptive_avgpool", "{size: 1}", (3, 1, 1)),
    ("adaptive_avgpool", "{size: [2, 3]}", (3, 2, 3)),
    ("adaptive_maxpool", "{size: 4}", (3, 4, 4)),
    ("adaptive_maxpool", "{size: 12}", (3, 12, 12)),  # larger than the input is allowed, as in torch
    ("global_avgpool", "null", (3, 1, 1)),
    ("global_maxpool", "null", (3, 1, 1)),
])
def test_adaptive_and_global_pools(op, args, expected):
    assert shapes(f"out: {{{op}: {args}}}", input=(3, 7, 9))["out"] == expected


def test_adaptive_pool_matches_torch():
    x = torch.zeros(1, 3, 7, 9)
    assert tuple(F.adaptive_avg_pool2d(x, (2, 3)).shape[1:]) == shapes(
        "out: {adaptive_avgpool: {size: [2, 3]}}", input=(3, 7, 9))["out"]


# -- joins ------------------------------------------------------------------


def test_concat_sums_channels():
    s = shapes("""
    stem: {conv: {out: 4, k: 1}}
    out:
      concat:
        a: {conv: {out: 2, k: 1}}
        b: identity
        c: [{maxpool: {k: 3, s: 1, pad: 1}}, {conv: {out: 7, k: 3, pad: 1}}]
    """, outputs="o: out")
    assert s["out.concat"] == (13, 8, 8)
    assert s["out.c.0"] == (4, 8, 8)


def test_concat_mismatch_names_the_join():
    e = shape_error("""
    out: {inc: []}
    """, blocks="""
    inc:
      concat:
        a: {conv: {out: 2, k: 1}}
        b: {conv: {out: 2, k: 3}}
    """)
    assert "'out.concat'" in e.message and "same spatial size" in e.message
    assert "2x8x8" in e.message and "2x6x6" in e.message


def test_add_and_residual_need_equal_shapes():
    e = shape_error("out: {add: {a: {conv: {out: 4, k: 1}}, b: identity}}")
    assert "'out.add'" in e.message and "one shape" in e.message
    e = shape_error("blk: {seq: {out: {residual: [{conv: {out: 3, k: 3}}]}}}\nout: relu")
    assert "'blk.out.add'" in e.message
    s = shapes("out: {residual: [{conv: {out: 5, k: 3, pad: 1}}], shortcut: {conv: {out: 5, k: 1}}}")
    assert s["out.add"] == (5, 8, 8)


def test_concat_of_vectors():
    s = shapes("""
    f: flatten
    out: {concat: {a: {linear: {out: 5}}, b: identity}}
    """, input=(2, 2, 2))
    assert s["out.concat"] == (13,)


# -- dense and the rest -------------------------------------------------------


def test_linear_needs_a_flat_input():
    e = shape_error("blk: {seq: {fc: {linear: {out: 10}}}}\nout: relu")
    assert "'blk.fc'" in e.message and "flatten" in e.message


def test_flatten_then_linear():
    s = shapes("f: flatten\nout: {linear: {out: 10}}", input=(3, 4, 5))
    assert s == {"f": (60,), "out": (10,)}


@pytest.mark.parametrize("op,args", [
    ("relu", "null"), ("batchnorm", "null"), ("lrn", "{size: 5}"), ("dropout", "{p: 0.1}"),
    ("identity", "null"), ("softmax", "null"), ("scale", "{factor: 2}"), ("sigmoid", "null"),
])
def test_shape_preserving_ops(op, args):
    assert shapes(f"out: {{{op}: {args}}}", input=(3, 5, 6))["out"] == (3, 5, 6)


def test_batchnorm_takes_maps_and_vectors_but_nothing_else():
    assert shapes("f: flatten\nout: batchnorm", input=(3, 2, 2))["out"] == (12,)
    e = shape_error("out: batchnorm", input=(3, 4))
    assert "'out'" in e.message and "batchnorm needs a (C, H, W) map or a flat (features,) vector" in e.message


def test_softmax_dim_must_exist():
    e = shape_error("f: flatten\nout: {softmax: {dim: 2}}")
    assert "'out'" in e.message and "softmax dim 2" in e.message
    assert shapes("out: {softmax: {dim: 3}}")["out"] == (3, 8, 8)


def test_shapes_follow_from_and_dependency_order():
    s = shapes("""
    a: {conv: {out: 4, k: 3}}
    b: {conv: {out: 5, k: 1}, from: c}
    c: {conv: {out: 6, k: 1}, from: input}
    out: {concat: {x: {identity: null, from: b}, y: {maxpool: {k: 3, s: 1, pad: 1}, from: c}}}
    head: {identity: null, from: a}
    """, outputs="o: out\nh: head")
    assert s == {"a": (4, 6, 6), "b": (5, 8, 8), "c": (6, 8, 8), "out.x": (5, 8, 8), "out.y": (6, 8, 8),
                 "out.concat": (11, 8, 8), "head": (4, 6, 6)}


@pytest.mark.parametrize("layer,message", [
    ("{conv: {out: 3, k: 1, pad: -1}}", "padding must not be negative"),
    ("{conv: {out: 3, k: 0}}", "kernel, stride and dilation must be positive"),
    ("{conv: {out: 3, k: 3, dilation: 0}}", "kernel, stride and dilation must be positive"),
    ("{maxpool: {k: 2, s: 0}}", "must be positive"),
    ("{avgpool: {k: 2, pad: -1}}", "padding not negative"),
])
def test_bad_geometry_names_the_node(layer, message):
    e = shape_error(f"stage: {{seq: {{inner: {layer}}}}}\nout: relu")
    assert "'stage.inner'" in e.message and message in e.message
