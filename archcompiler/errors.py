"""User-facing errors.

Every mistake in a spec is reported as one `SpecError` that points at the
text that caused it: ``PATH:LINE:COL: error: MESSAGE``.  Stages raise it with
the `Loc` they carry from the YAML; the CLI prints `str(error)` and exits 2.
"""

from __future__ import annotations

import difflib
from typing import Iterable, NamedTuple


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

    def __str__(self) -> str:
        return f"error: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")


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
        # One line, always: YAML and pydantic messages can carry newlines.
        return " ".join(text.split())


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice to a misspelt `word`, if any is close."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
