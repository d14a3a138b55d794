"""User-facing errors.

Every mistake in a spec is reported as one `SpecError` that points at the
text that caused it: ``PATH:LINE:COL: error: MESSAGE``.  Stages raise it with
the `Loc` they carry from the YAML; the CLI prints `str(error)` and exits 2.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, NamedTuple

# How much of a user's value a message echoes: enough to recognise it, and a
# 1 MB value in a spec must not make a 1 MB error line.
MAX_SHOWN = 100
# The cap on a whole message line (a backstop for values echoed without `shown`):
# a few echoed values plus the words around them.
MAX_MESSAGE = 1000


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """A user's value as a message echoes it: its repr, cut at about `limit` characters.

    Use it wherever a message quotes a value: f"expected a number, got {shown(v)}".
    """
    return shorten(repr(value), limit)


class Loc(NamedTuple):  # a tuple, not a dataclass: a spec makes thousands, and a tuple is made twice as fast
    """A position in a spec file; line and column are 1-based."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class UserError(Exception):
    """A mistake of the user's (a bad option, a missing tool): one line, exit code 2."""

    def __init__(self, message: str, hint: str | None = None):
        self.message, self.hint = message, hint
        super().__init__(str(self))

    def __str__(self) -> str:  # bounded, like SpecError's: options can echo a user's text too
        return shorten(f"error: {self.message}" + (f" (hint: {self.hint})" if self.hint else ""), MAX_MESSAGE)


class SpecError(UserError):
    """A mistake in a spec, with the place that caused it and what to change."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None):
        self.loc = loc
        # UserError sets .message and .hint; passing str(self) there would repeat "PATH:L:C: error:".
        super().__init__(message, hint)

    @property
    def path(self) -> str | None:
        return self.loc.path if self.loc else None

    @property
    def line(self) -> int | None:
        return self.loc.line if self.loc else None

    @property
    def column(self) -> int | None:
        return self.loc.column if self.loc else None

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        text = f"{where}error: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        # One line, always: YAML and pydantic messages can carry newlines; and a
        # bounded one, whatever a message echoes.
        return shorten(" ".join(text.split()), MAX_MESSAGE)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice to a misspelt `word`, if any is close."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn `a` into `b`.

    This is the optimal-string-alignment distance. A typo is one or two of
    these, which a similarity ratio cannot say: `ad` and `se` are both 0.8
    similar to a keyword, yet only one of them is a typo.
    """
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb)))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]
