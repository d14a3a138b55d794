"""Random wirings of small layers, as spec text, for property tests (hypothesis).

Every layer keeps a 4x6x6 map's shape and reads one or two earlier values (the input among them); every
value nobody reads is an output.  The ops are those the in-place plan and the BatchNorm fold tell apart:
fresh values and views, a backward that reads its input or its output, what passes its input on (dropout,
stochastic depth, identity), BatchNorm standalone or a conv's own, and residual containers.
"""

from __future__ import annotations

from hypothesis import strategies as st

UNARY = [
    "{conv: {out: 4, k: 1}}", "{conv: {out: 4, k: 3, pad: 1, act: relu}}", "{conv: {out: 4, k: 1, norm: {}, act: silu}}",
    "{conv: {out: 4, k: 3, pad: 1, bias: false}}",
    "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
    "batchnorm", "{dropout: {p: 0.3}}", "identity", "{stochastic_depth: {p: 0.3}}", "layer_scale",
    "{maxpool: {k: 3, s: 1, pad: 1}}", "{avgpool: {k: 3, s: 1, pad: 1}}", "{scale: {factor: 0.5}}",
    "{channel_shuffle: {groups: 2}}", "layernorm2d",
    "{residual: [{conv: {out: 4, k: 3, pad: 1, norm: {}, act: relu}}, {conv: {out: 4, k: 1, norm: {}}}], act: relu}",
    "{residual: [{conv: {out: 4, k: 1}}, {stochastic_depth: {p: 0.3}}], scale: 0.5}",
    "{residual: [{conv: {out: 4, k: 1, bias: false}}, batchnorm, {dropout: {p: 0.3}}]}",
]
BINARY = ["{add: null}", "{add: null, act: relu}", "{mul: null}"]


@st.composite
def random_graph(draw, unary: list[str] = UNARY, binary: list[str] = BINARY, most: int = 12) -> str:
    """A spec of 2 to `most` layers drawn from `unary` and `binary` (spec items as flow YAML, or op names)."""
    n = draw(st.integers(2, most))
    names, read, lines = ["input"], set(), []
    for i in range(n):
        two = len(names) > 1 and draw(st.booleans())
        op = draw(st.sampled_from(binary if two else unary))
        # Mostly the last few values, as a network reads them, so that chains form (conv -> batchnorm -> act).
        pool = names if len(names) < 4 else draw(st.sampled_from([names[-3:], names[-3:], names]))
        sources = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2, unique=True)) if two \
            else [draw(st.sampled_from(pool))]
        read.update(sources)
        name = f"n{i}"
        body = op[1:-1] + ", " if op.startswith("{") else f"{op}: {{}}, "
        source = sources[0] if len(sources) == 1 else "[" + ", ".join(sources) + "]"
        lines.append(f"  {name}: {{{body}from: {source}}}")
        names.append(name)
    outputs = [m for m in names[1:] if m not in read]
    return ("archc: 1\nname: random\ninput: [4, 6, 6]\nbody:\n" + "\n".join(lines) + "\noutputs:\n"
            + "".join(f"  out_{m}: {m}\n" for m in outputs))
