"""Bind parameters: a `Spec` and overrides -> the network's parameter values (a pass of `expand`).

In: a `Spec` and the caller's overrides (`--set K=V`, keyword arguments).
Out: every top-level parameter's value, defaults computed from earlier
parameters, after checking that each override names a parameter of the
right type and that every declared parameter (of the spec or of a block)
is used somewhere.  `evaluate` is the one place a `$expression` becomes a
value; every later pass calls it with the variables visible where the
expression stands.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from . import expr
from .errors import Loc, SpecError, did_you_mean, shorten, shown
from .source import loc_of
from .spec import BUILTIN_VARIABLES, Spec


def evaluate(value: Any, loc: Loc, variables: dict[str, Any]) -> Any:
    """`value` itself, or the value of the expression it is, errors located at `loc`."""
    if not expr.is_expression(value):
        return value
    try:
        return expr.evaluate(value, variables)
    except expr.ExprError as exc:
        raise SpecError(str(exc), loc, hint=exc.hint or did_you_mean(exc.name or "", variables)) from None


def bind_params(spec: Spec, overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec's parameters with `overrides` applied and expression defaults evaluated, in order."""
    params = dict(spec.params)
    where = spec.loc("params") if "params" in spec.tree else spec.tree.loc
    for key, value in overrides.items():
        if key not in params:
            raise SpecError(f"unknown parameter '{shorten(key)}' in an override; this spec's parameters: "
                            f"{', '.join(params) or 'none'}", where, hint=did_you_mean(key, params))
        default = params[key]
        if default is not None and not expr.is_expression(default) and not same_type(default, value):
            raise SpecError(f"parameter '{key}' has type {type(default).__name__} (default {shown(default)}), "
                            f"got {shown(value)}", spec.tree["params"].loc_of(key))
        params[key] = value
    check_param_use(spec)
    bound: dict[str, Any] = {}
    for key, value in params.items():  # a default may be computed from earlier parameters
        loc = spec.tree["params"].loc_of(key)
        try:  # a plain YAML or --set number: refused here, by name, not at some later use
            expr.check_number(value, f"parameter '{key}'")
        except expr.ExprError as exc:
            raise SpecError(str(exc), loc, hint=exc.hint) from None
        if key not in overrides:
            value = evaluate(value, loc, bound)
        bound[key] = value
    return bound


def check_param_use(spec: Spec) -> None:
    """Refuse an expression naming an unknown parameter, and a declared parameter that nothing uses."""
    globals_ = set(spec.params)
    used: set[str] = set()
    for name, block in spec.blocks.items():
        local = set(block.params)
        block_used: set[str] = set()
        for text, loc, _ in _used(block.item, block.loc):
            block_used |= _names(text, loc, local | globals_, f"block '{name}'")
        for text, loc, _ in expressions(block.defaults, block.loc):
            block_used |= _names(text, loc, local | globals_, f"block '{name}'")
        for p, default in block.param_defaults.items():
            if expr.is_expression(default):
                block_used |= _names(default, block.param_locs.get(p, block.loc), local | globals_, f"block '{name}'")
        for p in block.params:
            if p not in block_used:
                raise SpecError(f"parameter '{p}' of block '{name}' is never used", block.param_locs.get(p, block.loc),
                                hint="remove it, or use it as '$" + p + "'")
        used |= block_used - local
    for key in ("body", "input", "outputs", "defaults", "params"):
        if key in spec.tree:
            for text, loc, _ in _used(spec.tree[key], spec.tree.loc_of(key)):
                used |= _names(text, loc, globals_, "the spec")
    for p in spec.params:
        if p not in used:
            raise SpecError(f"parameter '{p}' is never used", spec.tree["params"].key_loc(p),
                            hint="remove it, or use it as '$" + p + "'")


def _names(text: str, loc: Loc, known: set[str], where: str) -> set[str]:
    """The parameters `text` uses; an unknown name is an error (`$in`, `$in_shape` and `$i` are known)."""
    try:
        names = set(expr.names_in(text)) - set(BUILTIN_VARIABLES)
    except expr.ExprError as exc:
        raise SpecError(str(exc), loc, hint=exc.hint) from None
    for n in sorted(names):
        if n not in known:
            raise SpecError(f"unknown parameter '{n}' in {where}", loc,
                            hint=did_you_mean(n, known) or "declare it under 'params'")
    return names


def same_type(default: Any, value: Any) -> bool:
    """Whether override `value` fits a parameter whose default is `default` (an int fits a float)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _used(tree: Any, loc: Loc) -> list[tuple[str, Loc, tuple]]:
    """`expressions(tree)`, then each `{...}` of a repeat's `names:` pattern as the expression it is, found in
    one walk."""
    patterns: list[tuple[str, Loc]] = []
    used = expressions(tree, loc, patterns=patterns)
    for text, where in patterns:
        for part in re.findall(r"\{([^{}]*)\}", text):
            used.append(("${" + part + "}", where, ()))
    return used


def expressions(tree: Any, loc: Loc, path: tuple = (),
                patterns: Optional[list[tuple[str, Loc]]] = None) -> list[tuple[str, Loc, tuple]]:
    """Every `$...` string below `tree`, in order: its text, its location and its path of keys and indices.
    With `patterns`, every `names:` pattern below `tree` is appended to it in the same walk."""
    found: list[tuple[str, Loc, tuple]] = []
    if isinstance(tree, (dict, list)):
        _expressions(tree, loc, path, found, patterns)
    elif expr.is_expression(tree):
        found.append((tree, loc, path))
    return found


def _expressions(tree: Any, loc: Loc, path: tuple, found: list[tuple[str, Loc, tuple]],
                 patterns: Optional[list[tuple[str, Loc]]] = None) -> None:
    """Append every `$...` string below `tree` to `found`, in order, and with `patterns`, every `names:`
    pattern (a string under a key `names`) to that."""
    # Built as one list (not generators yielding through every level): a spec has thousands of values.
    entries = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in entries:
        if isinstance(value, (dict, list)):
            _expressions(value, loc_of(tree, key, loc), (*path, key), found, patterns)
        elif isinstance(value, str):
            if value.startswith("$"):  # expr.is_expression, inline
                found.append((value, loc_of(tree, key, loc), (*path, key)))
            if key == "names" and patterns is not None and isinstance(tree, dict):
                patterns.append((value, loc_of(tree, key, loc)))
