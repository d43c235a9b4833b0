"""Located errors: every bad input is reported as ``file:line:col: error: message``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a source file; line and column are 1-based."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file

    def shift(self, offset: int) -> Loc:
        """The position ``offset`` characters further along the same line."""
        return Loc(self.file, self.line, self.col + offset) if self.line else self


class PerpwatchError(Exception):
    """Base class of every error perpwatch reports to a user (never shown as a traceback)."""


class LocatedError(PerpwatchError):
    """One problem at one place in an input file."""

    def __init__(self, loc: Loc | None, message: str):
        self.loc = loc
        self.message = message
        super().__init__(self.format())

    def format(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}error: {self.message}"


class ErrorList(PerpwatchError):
    """Several located errors found in one pass (a compiler keeps going after the first)."""

    def __init__(self, errors: list[LocatedError]):
        self.errors = errors
        super().__init__("\n".join(e.format() for e in errors))


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean: a, b?)' suffix naming the closest known names, or ''."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
