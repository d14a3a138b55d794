"""errors: the one-line error and the typo measures behind its hints."""

from __future__ import annotations

import pytest

from archcompiler.errors import Loc, SpecError, did_you_mean, edit_distance


@pytest.mark.parametrize("a, b, distance", [
    ("concta", "concat", 1), ("residul", "residual", 1), ("ad", "add", 1), ("kitten", "sitting", 3),
    ("", "abc", 3), ("same", "same", 0), ("ab", "ba", 1), ("stage", "scale", 2), ("head", "add", 3),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance == edit_distance(b, a)


def test_did_you_mean():
    assert did_you_mean("cnov", ["conv", "linear"]) == "did you mean 'conv'?"
    assert did_you_mean("zzz", ["conv", "linear"]) is None


def test_spec_error_is_one_line():
    err = SpecError("bad\nthing", Loc("a.yaml", 3, 4), hint="fix\nit")
    assert str(err) == "a.yaml:3:4: error: bad thing (hint: fix it)"
