"""History readers: what ``perpwatch backtest --data PATH`` and ``explain --data PATH`` can read.

A plugin registers :class:`HistoryReader` subclasses (hook ``register_history_readers``). The
engine checks that every path exists, then asks the registered readers, lowest ``priority`` first
(then by name), whether they ``accept`` the paths, and the first that does loads them. The
built-ins: ``replay`` (``<SYMBOL>_<interval>.csv|.parquet`` files, priority 10) and ``coinglass``
(folders of saved CoinGlass V4 responses, priority 20).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from perpwatch.evaluation.frame import Frame

#: Columns a backtest cannot do without: fills at the next open, marks at the close.
PRICE_COLUMNS = ("price.open", "price.close")


@dataclass
class History:
    """Per-symbol frames at one interval, where they came from, and notes worth showing."""

    frames: dict[str, Frame]
    interval: str
    source: str  # for messages: "replay folder data/", "CoinGlass snapshot a + b"
    notes: list[str] = field(default_factory=list)


class HistoryReader(ABC):
    """Turns ``--data`` paths (existing files or folders) into a :class:`History`.

    Built with no arguments; abstract (a subclass implements both methods). Raise ``perpwatch.common.errors.PerpwatchError`` with a message that
    names the path for data the reader accepted but cannot use (wrong interval, a symbol missing).
    """

    #: The name it is registered under.
    name: ClassVar[str] = ""
    #: What it reads, for the message when no reader accepts a path: "neither A nor B".
    describes: ClassVar[str] = ""
    #: Readers are asked lowest first: a reader of a narrower layout goes before a broader one.
    priority: ClassVar[int] = 100

    @abstractmethod
    def accepts(self, paths: Sequence[str]) -> bool:
        """Whether these paths (one or more, all existing) are this reader's kind of data."""

    @abstractmethod
    def load(self, paths: Sequence[str], interval: str, symbols: Sequence[str] | None) -> History:
        """Frames of ``interval`` bars for ``symbols`` (upper case; None: every symbol the data has)."""
