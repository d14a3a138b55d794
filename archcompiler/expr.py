"""The safe expression language of spec values.

A string value `$name` is the value of parameter `name`; `${...}` holds a
small expression over parameters: numbers, `+ - * / // %`, unary minus,
comparisons, `and` / `or` / `not`, `a if cond else b`, indexing a shape
(`in_shape[1]`) and the functions in `FUNCTIONS` (`make_divisible`, `ceil`,
`min`, ...).  Anything else (other calls, attributes) is refused.  `in` (the
input's channels, which `expand` binds) is a Python keyword, so the text is
tokenized and `in` renamed to `IN_ALIAS` before parsing.  Expressions are parsed with
`ast` and walked by `evaluate`; nothing is ever passed to `eval`.

Nothing a spec writes can crash or hang the evaluator: the text's length, the
tree's depth and every number's magnitude are bounded (the limits below), and
any failure is an `ExprError`.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from typing import Any, Callable, Mapping

from .errors import shorten, shown

# The longest expression in specs/ has 21 characters.  1,000 leaves room for any
# hand-written one, and refuses a megabyte of `1+1+...` before ast.parse sees it.
MAX_EXPR_CHARS = 1_000
# Levels of the syntax tree, leaves included: `${a * 2 + b}` has 4, and so has the
# deepest in specs/ and docs/.  50 keeps the evaluator's recursion (two frames a
# level) and ast.unparse far from Python's stack limit.
MAX_DEPTH = 50
# Every number the evaluator takes in or produces, int or float.  No layer width,
# kernel, stride or count comes near 2**63 (torch sizes are int64), and with both
# operands bounded a product stays under 2**126: a chain of squarings is refused at
# its first step past the bound instead of building numbers with millions of digits.
MAX_MAGNITUDE = 2**63

_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
IN_ALIAS = "__in__"  # `in` as ast sees it: no parameter may start with `__`


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """`value` rounded to the nearest multiple of `divisor` (at least `min_value`, default `divisor`), and never
    more than 10 % below `value`: the width rounding of MobileNet, EfficientNet and RegNet."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor <= 0:
        raise ExprError(f"make_divisible's divisor must be a positive whole number, got {shown(divisor)}")
    floor_value = divisor if min_value is None else min_value
    rounded = max(floor_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "make_divisible": make_divisible,
    "ceil": math.ceil,
    "floor": math.floor,
    "round": round,
    "int": int,
    "float": float,
    "min": min,
    "max": max,
    "abs": abs,
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class ExprError(ValueError):
    """An expression that cannot be evaluated; the caller adds the location."""

    def __init__(self, message: str, hint: str | None = None, name: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.name = name  # the unknown parameter, where that is the problem


def is_expression(value: Any) -> bool:
    """True for a string that the spec language evaluates (`$x`, `${...}`)."""
    return isinstance(value, str) and value.startswith("$")


def source_of(text: str) -> str:
    """The Python-syntax expression inside `$name` or `${...}`."""
    if text.startswith("${"):
        if not text.endswith("}"):
            raise ExprError(f"'{text}' opens '${{' without a closing '}}'")
        return text[2:-1]
    if _NAME.fullmatch(text):
        return text[1:]
    raise ExprError(
        f"'{text}' is not an expression",
        hint="write '$name' for a parameter or '${...}' for arithmetic, e.g. '${c * 2}'",
    )


@functools.lru_cache(maxsize=4096)
def names_in(text: str) -> frozenset[str]:
    """The parameter names an expression refers to."""
    tree = _parse(text)
    # Refuse what `evaluate` would refuse before naming names: in `${max(a, b)}` the
    # problem is the call, not an unknown parameter 'max'.
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, (ast.operator, ast.unaryop, ast.cmpop)) and type(child) not in {**_BINARY, **_UNARY, **_COMPARE}:
                raise ExprError(f"operator in '{_text(parent)}' is not allowed", hint=_ALLOWED_HINT)
            if not isinstance(child, _ALLOWED_NODES):
                raise ExprError(f"'{_text(child)}' is not allowed in an expression", hint=_ALLOWED_HINT)
            if isinstance(child, ast.Constant) and not _allowed_constant(child.value):
                raise ExprError(f"constant {shown(child.value)} is not allowed in an expression", hint=_ALLOWED_HINT)
            if isinstance(child, ast.Call) and not (isinstance(child.func, ast.Name) and child.func.id in FUNCTIONS
                                                    and not child.keywords):
                raise ExprError(f"'{_text(child)}' is not allowed: the functions are {', '.join(FUNCTIONS)}, "
                                "with positional arguments", hint=_ALLOWED_HINT)
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return frozenset("in" if n.id == IN_ALIAS else n.id for n in ast.walk(tree)
                     if isinstance(n, ast.Name) and n.id not in called)


_ALLOWED_HINT = ("only numbers, parameters, + - * / // %, comparisons, and/or/not, if/else, shape[index] and "
                 "the functions " + ", ".join(FUNCTIONS))
_ALLOWED_NODES = (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp, ast.Name, ast.Constant, ast.Load,
                  ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.Call, ast.Subscript)


def evaluate(text: str, scope: Mapping[str, Any]) -> Any:
    """The value of expression `text` with parameters from `scope`."""
    tree = _parse(text)
    try:
        return _Evaluator(scope).visit(tree.body)
    except (RecursionError, MemoryError):  # last line: the depth is bounded, but the caller's stack may be deep
        raise ExprError("expression too complex to evaluate", hint=_SPLIT_HINT) from None


def check_number(value: Any, what: str) -> None:
    """Refuse a number that is not finite or over `MAX_MAGNITUDE`; `what` names it in the message."""
    if not _out_of_bounds(value):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError(f"{what} is not a finite number ({value})")
    if isinstance(value, (int, float)) and abs(value) > MAX_MAGNITUDE:
        raise ExprError(f"number too large: {what} is over 2**{MAX_MAGNITUDE.bit_length() - 1} in magnitude",
                        hint="no layer size comes near that; check the values it is computed from")


_SPLIT_HINT = "split it into parameters computed one from another"


@functools.lru_cache(maxsize=4096)  # specs repeat the same few expressions many times
def _parse(text: str) -> ast.Expression:
    """The syntax tree of expression `text` (`$name` or `${...}`)."""
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression too long ({len(text)} characters, at most {MAX_EXPR_CHARS})", hint=_SPLIT_HINT)
    source = source_of(text)
    if not source.strip():
        raise ExprError("empty expression")
    source = _rename_in(source)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression '{source.strip()}': {exc.msg}") from None
    except (RecursionError, MemoryError):  # last line: CPython's parser recurses about once a character
        raise ExprError("expression too complex to parse", hint=_SPLIT_HINT) from None
    stack = [(tree.body, 1)]  # iteratively: walking a deep tree recursively is what is being prevented
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(f"expression nested too deeply (more than {MAX_DEPTH} levels)", hint=_SPLIT_HINT)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _rename_in(source: str) -> str:
    """`source` with the keyword `in` (the input's channels, `$in`) renamed `IN_ALIAS`, so that ast can parse it."""
    if not re.search(r"\bin\b", source):
        return source
    import io
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return source  # ast.parse reports it
    return tokenize.untokenize((t.type, IN_ALIAS if t.type == tokenize.NAME and t.string == "in" else t.string)
                               for t in tokens)


def _allowed_constant(value: Any) -> bool:
    return isinstance(value, (int, float, bool, str)) or value is None


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any]):
        self.scope = scope

    def visit(self, node: ast.AST) -> Any:
        method = _VISITORS.get(type(node))
        if method is None:
            method = getattr(_Evaluator, f"_{type(node).__name__}", None)
            if method is None:
                raise ExprError(
                    f"'{_text(node)}' is not allowed in an expression",
                    hint="only numbers, parameters, + - * / // %, comparisons, and/or/not and if/else",
                )
            _VISITORS[type(node)] = method
        return method(self, node)

    def _Constant(self, node: ast.Constant) -> Any:
        if _allowed_constant(node.value):
            return _bounded(node, node.value)
        raise ExprError(f"constant {shown(node.value)} is not allowed in an expression")

    def _Name(self, node: ast.Name) -> Any:
        name = "in" if node.id == IN_ALIAS else node.id
        if name in self.scope:  # a block argument may be a plain YAML number, never checked before
            return _bounded(node, self.scope[name])
        raise ExprError(f"unknown parameter '{name}'", name=name)

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ExprError(f"'{_text(node)}' is not allowed in an expression", hint=_ALLOWED_HINT)
        args = [self.visit(a) for a in node.args]
        _check_numbers(node, *args)
        try:
            return _bounded(node, FUNCTIONS[node.func.id](*args))
        except ExprError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExprError(f"cannot evaluate '{_text(node)}': {exc}") from None

    def _Subscript(self, node: ast.Subscript) -> Any:
        value, index = self.visit(node.value), self.visit(node.slice)
        if not isinstance(value, (tuple, list)) or isinstance(index, bool) or not isinstance(index, int):
            raise ExprError(f"'{_text(node)}': only a shape is indexed, by a whole number (e.g. in_shape[1])")
        if not -len(value) <= index < len(value):
            raise ExprError(f"'{_text(node)}': index {index} is out of range for {shown(value)}")
        return _bounded(node, value[index])

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExprError(f"operator in '{_text(node)}' is not allowed", hint="use + - * / // %")
        left, right = self.visit(node.left), self.visit(node.right)
        _check_numbers(node, left, right)
        try:  # cheap: both operands are within MAX_MAGNITUDE
            return _bounded(node, op(left, right))
        except ZeroDivisionError:
            raise ExprError(f"division by zero in '{_text(node)}'") from None
        except OverflowError:  # int / int to float; out of reach while MAX_MAGNITUDE is far below 1e308
            raise ExprError(f"number too large in '{_text(node)}'") from None

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise ExprError(f"operator in '{_text(node)}' is not allowed")
        value = self.visit(node.operand)
        if not isinstance(node.op, ast.Not):
            _check_numbers(node, value)
        return _bounded(node, op(value))

    def _Compare(self, node: ast.Compare) -> bool:
        left = self.visit(node.left)
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _COMPARE.get(type(op_node))
            if op is None:
                raise ExprError(f"comparison in '{_text(node)}' is not allowed")
            right = self.visit(right_node)
            try:
                if not op(left, right):
                    return False
            except TypeError:
                raise ExprError(f"cannot compare {shown(left)} and {shown(right)} in '{_text(node)}'") from None
            left = right
        return True

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for operand in node.values:
            value = self.visit(operand)
            if bool(value) != is_and:
                return value
        return value

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)


def _out_of_bounds(value: Any) -> bool:
    """Whether `check_number` refuses `value`: a number that is not finite or over `MAX_MAGNITUDE`."""
    return isinstance(value, (int, float)) and not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE


# Node type -> its `_Evaluator` method, found by name once per type rather than once per node.
_VISITORS: dict[type, Callable[[_Evaluator, Any], Any]] = {}


def _bounded(node: ast.AST, value: Any) -> Any:
    # The node's text only when refused: unparsing it for every value was most of the evaluation's time.
    if _out_of_bounds(value):
        check_number(value, f"'{_text(node)}'")
    return value


def _text(node: ast.AST) -> str:
    """An expression's text as a message quotes it: cut at about 100 characters."""
    return shorten(ast.unparse(node).replace(IN_ALIAS, "in"))


def _check_numbers(node: ast.AST, *values: Any) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExprError(f"'{_text(node)}' needs numbers, got {shown(value)}")
