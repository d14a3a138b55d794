"""The safe expression evaluator: `$name`, `${...}` arithmetic, and everything it refuses."""

from __future__ import annotations

import keyword
import operator

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from archcompiler.expr import ExprError, evaluate, is_expression, names_in, source_of

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
    "${max(a, b)}",
    "${int(x)}",
    "${a.real}",
    "${act.upper()}",
    "${(1).__class__}",
    "${act[0]}",
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
    # Refused before names are checked: `${max(a, b)}` is a call, not an unknown parameter 'max'.
    with pytest.raises(ExprError, match="not allowed|cannot parse"):
        names_in(text)


def test_refusals_carry_a_hint():
    with pytest.raises(ExprError) as info:
        evaluate("${max(a, b)}", SCOPE)
    assert "not allowed" in str(info.value) and info.value.hint
    with pytest.raises(ExprError) as info:
        names_in("${max(a, b)}")
    assert "'max(a, b)' is not allowed" in str(info.value) and info.value.hint


def test_evaluate_never_calls_eval(monkeypatch):
    import builtins

    def boom(*args, **kwargs):
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert evaluate("${a * b + c // 2}", SCOPE) == 53


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


@settings(max_examples=300, deadline=None)
@given(a=ints, b=ints, op=st.sampled_from(sorted(OPS)))
def test_binary_operators_over_params_match_python(a, b, op):
    assume(b != 0)
    assert evaluate(f"${{a {op} b}}", {"a": a, "b": b}) == OPS[op](a, b)


@settings(max_examples=300, deadline=None)
@given(a=ints, b=ints, op=st.sampled_from(sorted(OPS)))
def test_binary_operators_over_literals_match_python(a, b, op):
    assume(b != 0)
    # Parenthesised literals: `-3 // 2` must mean `(-3) // 2`, as in Python.
    assert evaluate(f"${{({a}) {op} ({b})}}", {}) == OPS[op](a, b)


@settings(max_examples=200, deadline=None)
@given(a=ints, b=ints, c=ints)
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
