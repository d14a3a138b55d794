"""The safe expression evaluator: `$name`, `${...}` arithmetic, and everything it refuses."""

from __future__ import annotations

import keyword
import operator
import sys
import time
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from archcompiler import expr
from archcompiler.expr import (
    MAX_DEPTH,
    MAX_EXPR_CHARS,
    MAX_MAGNITUDE,
    ExprError,
    check_number,
    evaluate,
    is_expression,
    names_in,
    source_of,
)

from conftest import Ran, run_archc

SCOPE = {"a": 7, "b": 3, "c": 64, "x": 0.5, "flag": True, "off": False, "act": "relu"}


# -- forms -------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("$a", True), ("${a}", True), ("${a * 2}", True), ("$", True),
    ("a", False), ("", False), ("a$b", False), (3, False), (None, False), (["$a"], False),
])
def test_is_expression(value, expected):
    assert is_expression(value) is expected


def test_dollar_name_form():
    assert source_of("$c") == "c"
    assert evaluate("$c", SCOPE) == 64
    assert evaluate("$act", SCOPE) == "relu"
    assert evaluate("$_private9", {"_private9": 1}) == 1


@pytest.mark.parametrize("text", ["$", "$1abc", "$a b", "$a-b", "$a.b", "$(a)", "$a}"])
def test_dollar_without_a_name_or_braces_is_not_an_expression(text):
    with pytest.raises(ExprError, match="is not an expression") as info:
        evaluate(text, SCOPE)
    assert info.value.hint and "${" in info.value.hint


@pytest.mark.parametrize("text", ["${a * 2", "${"])
def test_unclosed_braces(text):
    with pytest.raises(ExprError, match="without a closing"):
        evaluate(text, SCOPE)


@pytest.mark.parametrize("text", ["${}", "${   }"])
def test_empty_expression(text):
    with pytest.raises(ExprError, match="empty expression"):
        evaluate(text, SCOPE)


@pytest.mark.parametrize("text", ["${a *}", "${(a}", "${1 if a}", "${a b}", "${yield}", "${a\0}"])
def test_syntax_errors(text):
    with pytest.raises(ExprError, match="cannot parse expression"):
        evaluate(text, SCOPE)
    with pytest.raises(ExprError, match="cannot parse expression"):
        names_in(text)


# -- what it computes -------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("${a + b * 2}", 13),
    ("${(a + b) * 2}", 20),
    ("${c / 2}", 32.0),
    ("${c // 3}", 21),
    ("${-a // 2}", -4),
    ("${-a % 3}", 2),
    ("${a - -b}", 10),
    ("${+a}", 7),
    ("${x * 4}", 2.0),
    ("${c * 0.25}", 16.0),
    ("${ a }", 7),
    ("${a > b}", True),
    ("${b < a < c}", True),
    ("${a < b < c}", False),
    ("${a == 7 and b != 7}", True),
    ("${not flag}", False),
    ("${flag or off}", True),
    ("${off or 5}", 5),
    ("${off and 5}", False),
    ("${c if flag else 0}", 64),
    ("${c if off else 0}", 0),
    ("${'gelu' if off else act}", "relu"),
    ("${act == 'relu'}", True),
    ("${None}", None),
    ("${3}", 3),
])
def test_evaluate(text, expected):
    got = evaluate(text, SCOPE)
    assert got == expected and type(got) is type(expected)


def test_short_circuit_skips_the_other_side():
    assert evaluate("${off and missing}", SCOPE) is False
    assert evaluate("${flag or missing}", SCOPE) is True
    assert evaluate("${1 if flag else missing}", SCOPE) == 1


@pytest.mark.parametrize("text", ["${a / 0}", "${a // (b - 3)}", "${a % 0}", "${x / 0.0}"])
def test_division_by_zero(text):
    with pytest.raises(ExprError, match="division by zero"):
        evaluate(text, SCOPE)


def test_unknown_parameter_names_it():
    with pytest.raises(ExprError, match="unknown parameter 'widht'") as info:
        evaluate("${widht * 2}", SCOPE)
    assert info.value.name == "widht"
    with pytest.raises(ExprError, match="unknown parameter 'nope'"):
        evaluate("$nope", SCOPE)


@pytest.mark.parametrize("text", ["${act * 2}", "${a + 'x'}", "${flag + 1}", "${-act}", "${True * 3}", "${-off}"])
def test_arithmetic_needs_numbers(text):
    with pytest.raises(ExprError, match="needs numbers"):
        evaluate(text, SCOPE)


def test_incomparable_values():
    with pytest.raises(ExprError, match="cannot compare"):
        evaluate("${act < 3}", SCOPE)


# -- what it refuses -----------------------------------------------------------

FORBIDDEN = [
    "${__import__('os')}",
    "${__import__('os').system('true')}",
    "${open('/etc/passwd')}",
    "${pow(a, b)}",
    "${open(x)}",
    "${max(a, key=b)}",
    "${a.real}",
    "${act.upper()}",
    "${(1).__class__}",
    "${act[0:1]}",
    "${act[::-1]}",
    "${lambda: 1}",
    "${(lambda q: q)(a)}",
    "${[q for q in range(3)]}",
    "${{q: q for q in act}}",
    "${{q for q in act}}",
    "${sum(q for q in (1, 2))}",
    "${[a, b]}",
    "${(a, b)}",
    "${{'k': a}}",
    "${{a}}",
    "${f'{a}'}",
    "${(q := 1)}",
    "${*a}",
    "${a ** 2}",
    "${a ** 1000000}",
    "${a << 2}",
    "${a | b}",
    "${a & b}",
    "${a ^ b}",
    "${a @ b}",
    "${~a}",
    "${a in (1, 2)}",
    "${a is None}",
    "${a is not b}",
    "${1j}",
    "${...}",
    "${b'x'}",
]


@pytest.mark.parametrize("text", FORBIDDEN)
def test_forbidden_constructs_are_refused_by_evaluate(text):
    with pytest.raises(ExprError, match="not allowed|cannot parse"):
        evaluate(text, SCOPE)


@pytest.mark.parametrize("text", FORBIDDEN)
def test_forbidden_constructs_are_refused_by_names_in(text):
    # Refused before names are checked: `${pow(a, b)}` is a call, not an unknown parameter 'pow'.
    with pytest.raises(ExprError, match="not allowed|cannot parse"):
        names_in(text)


def test_refusals_carry_a_hint():
    with pytest.raises(ExprError) as info:
        evaluate("${pow(a, b)}", SCOPE)
    assert "not allowed" in str(info.value) and info.value.hint
    with pytest.raises(ExprError) as info:
        names_in("${pow(a, b)}")
    assert "'pow(a, b)' is not allowed" in str(info.value) and info.value.hint


@pytest.mark.parametrize("text, value", [
    ("${make_divisible(32 * 0.75, 8)}", 24),
    ("${make_divisible(16 * 1.1, 8)}", 16),  # 17.6 rounds to 16, within 10 %
    ("${make_divisible(10, 8)}", 16),  # 8 would be more than 10 % below 10
    ("${make_divisible(3, 8, 2)}", 10),  # 2 is more than 10 % below 3: one divisor more
    ("${ceil(3 * 1.1)}", 4),
    ("${floor(2.9)}", 2),
    ("${min(4, 2, 3)}", 2),
    ("${max(a, 1)}", 7),
    ("${int(7 / 2)}", 3),
    ("${in * 4}", 12),
    ("$in", 3),
    ("${in_shape[1] // 2}", 56),
    ("${in_shape[-1]}", 112),
])
def test_functions_and_the_input(text, value):
    assert evaluate(text, {**SCOPE, "in": 3, "in_shape": (3, 112, 112)}) == value


def test_in_is_named_in_and_indexing_is_bounded():
    assert names_in("${in + in_shape[1] + c}") == {"in", "in_shape", "c"}
    with pytest.raises(ExprError, match="out of range"):
        evaluate("${in_shape[3]}", {"in_shape": (3, 4, 4)})
    with pytest.raises(ExprError, match="only a shape is indexed"):
        evaluate("${act[0]}", SCOPE)
    with pytest.raises(ExprError, match="divisor"):
        evaluate("${make_divisible(3, 0)}", SCOPE)
    with pytest.raises(ExprError, match="needs numbers"):
        evaluate("${ceil(act)}", SCOPE)


def test_evaluate_never_calls_eval(monkeypatch):
    import builtins

    def boom(*args, **kwargs):
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert evaluate("${a * b + c // 2}", SCOPE) == 53


# -- limits: nothing crashes or hangs ---------------------------------------------

ROOT = Path(__file__).parents[1]


def at_stack_depth(frames_left: int, fn):
    """`fn()` called with only about `frames_left` frames left before Python's recursion limit."""
    depth, frame = 0, sys._getframe()
    while frame:
        depth, frame = depth + 1, frame.f_back

    def down(n):
        return fn() if n <= 0 else down(n - 1)
    return down(sys.getrecursionlimit() - depth - frames_left)


@pytest.mark.parametrize("text", [
    "${" + "+".join(["1"] * 100_000) + "}",  # RecursionError in ast.parse before the limit
    "${" + "not " * 5_000 + "1}",
    "${" + "1+" * 500_000 + "1}",  # a megabyte: MemoryError or RecursionError before the limit
    "$" + "a" * MAX_EXPR_CHARS,
])
def test_long_expressions_are_refused_before_parsing(text):
    start = time.perf_counter()
    for fn in (lambda: evaluate(text, {}), lambda: names_in(text)):
        with pytest.raises(ExprError, match=f"expression too long .*at most {MAX_EXPR_CHARS}") as info:
            fn()
        assert info.value.hint
    assert time.perf_counter() - start < 2


def test_an_expression_at_the_length_limit_is_accepted():
    name = "a" * (MAX_EXPR_CHARS - 3)
    assert evaluate("${" + name + "}", {name: 5}) == 5


@pytest.mark.parametrize("body", [  # each within MAX_EXPR_CHARS
    "not " * 249 + "1",
    "-" * 996 + "1",
    "+".join(["1"] * 499),
    "(" * 498 + "1" + ")" * 498,  # past the tokenizer's 200 levels: a syntax error
    "[" * 199 + "]" * 199,
    "a if a else " * 83 + "a",
    "a" + " * -a" * 166,
    "-(" * 199 + "1" + ")" * 199,
])
# With 150 frames left, CPython 3.11's ast.parse itself runs out of stack on some of these.
@pytest.mark.parametrize("frames_left", [None, 150])
def test_deep_expressions_are_refused(body, frames_left):
    text = "${" + body + "}"
    assert len(text) <= MAX_EXPR_CHARS
    for fn in (lambda: evaluate(text, {"a": 1}), lambda: names_in(text)):
        with pytest.raises(ExprError, match="nested too deeply|too complex|cannot parse|not allowed"):
            fn() if frames_left is None else at_stack_depth(frames_left, fn)


def test_depth_limit():
    assert evaluate("${" + "not " * (MAX_DEPTH - 1) + "1}", {}) is ((MAX_DEPTH - 1) % 2 == 0)
    assert evaluate("${" + "(" * 199 + "1" + ")" * 199 + "}", {}) == 1  # parentheses are no level of the tree
    with pytest.raises(ExprError, match=f"nested too deeply \\(more than {MAX_DEPTH} levels\\)"):
        evaluate("${" + "not " * MAX_DEPTH + "1}", {})


def test_evaluation_that_runs_out_of_stack_is_an_expr_error():
    text = "${" + "- " * (MAX_DEPTH - 2) + "a}"
    assert names_in(text) == {"a"}  # parsed (and cached) with the whole stack available
    with pytest.raises(ExprError, match="too complex to evaluate"):
        at_stack_depth(20, lambda: evaluate(text, {"a": 1}))


@pytest.mark.parametrize("text, scope", [
    ("${" + "9" * 400 + " / 3}", {}),  # was OverflowError: int/int to float
    ("${" + "9" * 400 + "}", {}),
    ("${a * a}", {"a": 2**32}),
    ("${a + 1}", {"a": MAX_MAGNITUDE}),
    ("${-a - 1}", {"a": MAX_MAGNITUDE}),
    ("${a * 2}", {"a": 2**62 + 1}),
    ("$a", {"a": 10**90}),  # a plain YAML number, bound without evaluation
    ("${a > 0}", {"a": -10**90}),
    ("${1e308 * 10}", {}),
    ("${x * 1e10}", {"x": 1e10}),
    ("${x}", {"x": 1e19}),
])
def test_numbers_past_the_magnitude_bound_are_refused(text, scope):
    with pytest.raises(ExprError, match="number too large: .* is over 2\\*\\*63 in magnitude") as info:
        evaluate(text, scope)
    assert info.value.hint


@pytest.mark.parametrize("text, scope, expected", [
    ("${a}", {"a": MAX_MAGNITUDE}, MAX_MAGNITUDE),
    ("${-a}", {"a": MAX_MAGNITUDE}, -MAX_MAGNITUDE),
    ("${a * a}", {"a": 2**31}, 2**62),
    ("${a * 2 - a}", {"a": 2**62}, 2**62),
    ("${x * 2.0}", {"x": 2.0**62}, 2.0**63),
    ("${-9223372036854775808}", {}, -MAX_MAGNITUDE),
])
def test_numbers_at_the_magnitude_bound_are_accepted(text, scope, expected):
    assert evaluate(text, scope) == expected


@pytest.mark.parametrize("text, scope", [
    ("${1e999}", {}),
    ("${1e999 - 1e999}", {}),
    ("${x * 0}", {"x": float("inf")}),
    ("$x", {"x": float("-inf")}),
    ("${x + 1}", {"x": float("nan")}),
    ("${x == x}", {"x": float("nan")}),
])
def test_nan_and_inf_are_refused(text, scope):
    with pytest.raises(ExprError, match="is not a finite number"):
        evaluate(text, scope)


def test_overflow_in_arithmetic_is_an_expr_error(monkeypatch):
    # Out of reach with the real bound; with a looser one, int / int to float overflows.
    monkeypatch.setattr(expr, "MAX_MAGNITUDE", 10**1000)
    with pytest.raises(ExprError, match="number too large in '9+…'"):
        evaluate("${" + "9" * 400 + " / 3}", {})


@pytest.mark.parametrize("value", [0, -5, MAX_MAGNITUDE, 2.5, True, "relu", None, [10**90]])
def test_check_number_passes_what_is_in_range_or_not_a_number(value):
    check_number(value, "it")


def test_a_squaring_chain_stops_at_the_first_step_past_the_bound():
    scope, start = {"p0": 10}, time.perf_counter()
    with pytest.raises(ExprError, match="number too large: 'p4 \\* p4'"):
        for i in range(1, 12):  # 12 levels, not 32: unbounded, those are 10 ** 2**11, still quick
            scope[f"p{i}"] = evaluate(f"${{p{i - 1} * p{i - 1}}}", scope)
    assert len(scope) == 5 and time.perf_counter() - start < 2


def archc_check(*args: str, timeout: float) -> Ran:
    """`archc check ARGS`, in this process (conftest.run_archc); interrupted past `timeout` seconds."""
    return run_archc("check", *args, cwd=ROOT, timeout=timeout)


def test_archc_check_of_a_32_level_squaring_chain_fails_fast():
    # Before the bound this hung, eating memory; the timeout makes a regression fail instead.
    spec = "tests/fixtures/bad_specs/squaring_chain.yaml"
    r = archc_check(spec, timeout=20)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"{spec}:11:7: error: number too large: 'p4 * p4'") and r.stderr.count("\n") == 1


def test_archc_check_refuses_a_huge_set_value_naming_the_parameter():
    spec = "specs/lenet5.yaml"
    lines = (ROOT / spec).read_text().splitlines()
    line, col = next((i, len("  num_classes: ") + 1) for i, text in enumerate(lines, 1)
                     if text.startswith("  num_classes: "))
    r = archc_check(spec, "--set", "num_classes=" + "7" * 90, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"{spec}:{line}:{col}: error: number too large: parameter 'num_classes'"), r.stderr
    assert r.stderr.count("\n") == 1


# -- names_in ------------------------------------------------------------------


@pytest.mark.parametrize("text, names", [
    ("$c", {"c"}),
    ("${c}", {"c"}),
    ("${a * b + c}", {"a", "b", "c"}),
    ("${a if flag else b}", {"a", "b", "flag"}),
    ("${not off and a > 2}", {"a", "off"}),
    ("${a + a}", {"a"}),
    ("${3 * 4}", set()),
    ("${'relu'}", set()),
])
def test_names_in(text, names):
    assert names_in(text) == names


# -- properties ------------------------------------------------------------------

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod}
ints = st.integers(min_value=-10**12, max_value=10**12)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s not in ("True", "False", "None"))


# Operands small enough that no intermediate of `a + b * c` leaves MAX_MAGNITUDE.
small_ints = st.integers(min_value=-(2**31), max_value=2**31)


def python_or_refused(text: str, scope: dict, expected: int) -> None:
    """`text` gives Python's `expected`, or is refused where that is past MAX_MAGNITUDE."""
    if abs(expected) <= MAX_MAGNITUDE:
        assert evaluate(text, scope) == expected
    else:
        with pytest.raises(ExprError, match="number too large"):
            evaluate(text, scope)


@settings(max_examples=300, deadline=None)
@given(a=ints, b=ints, op=st.sampled_from(sorted(OPS)))
def test_binary_operators_over_params_match_python(a, b, op):
    assume(b != 0)
    python_or_refused(f"${{a {op} b}}", {"a": a, "b": b}, OPS[op](a, b))


@settings(max_examples=300, deadline=None)
@given(a=ints, b=ints, op=st.sampled_from(sorted(OPS)))
def test_binary_operators_over_literals_match_python(a, b, op):
    assume(b != 0)
    # Parenthesised literals: `-3 // 2` must mean `(-3) // 2`, as in Python.
    python_or_refused(f"${{({a}) {op} ({b})}}", {}, OPS[op](a, b))


@settings(max_examples=200, deadline=None)
@given(a=small_ints, b=small_ints, c=small_ints)
def test_precedence_matches_python(a, b, c):
    scope = {"a": a, "b": b, "c": c}
    assert evaluate("${a + b * c}", scope) == a + b * c
    assert evaluate("${a - b - c}", scope) == a - b - c
    assert evaluate("${-a * b + c}", scope) == -a * b + c
    assert evaluate("${a if a > b else c}", scope) == (a if a > b else c)
    assert evaluate("${a < b <= c}", scope) == (a < b <= c)


@settings(max_examples=200, deadline=None)
@given(p=identifiers, q=identifiers, a=ints, b=ints)
def test_names_in_finds_every_name_and_evaluate_uses_them(p, q, a, b):
    assume(p != q)
    text = f"${{{p} * 2 + {q}}}"
    assert names_in(text) == {p, q}
    assert names_in(f"${p}") == {p}
    assert evaluate(text, {p: a, q: b}) == a * 2 + b


@settings(max_examples=300, deadline=None)
@given(body=st.text(alphabet=st.sampled_from(list("ab01 +-*/%()<>=!.,'[]{}:_ifelsnotdr\\x\0")), max_size=40))
def test_any_text_either_evaluates_or_raises_expr_error(body):
    for fn in (lambda: evaluate("${" + body + "}", {"a": 5, "b": 2}), lambda: names_in("${" + body + "}")):
        try:
            fn()
        except ExprError:
            pass
