"""Sources: what fetches metric history for the engine."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MethodType
from typing import Any, ClassVar

from perpwatch.api.plugin import Plugin, PluginError
from perpwatch.evaluation.frame import Frame
from perpwatch.language.metrics import Metric


class SourceError(PluginError):
    """A source could not deliver; its metrics count as missing for this cycle."""


@dataclass(frozen=True)
class FetchRequest:
    """Bars ``start``..``end`` (open times, ms, both inclusive) of ``metrics`` for one symbol."""

    symbol: str
    interval: str
    metrics: frozenset[str]
    start: int
    end: int


class _ProvidesMethod:
    """``provides`` of a source class: ``Cls.provides(options)``, and ``source.provides()`` on an
    instance, which answers for that instance's options."""

    def __init__(self, func: Callable[..., frozenset[str]]) -> None:
        self.__func__ = func
        self.__doc__ = func.__doc__

    @property
    def __isabstractmethod__(self) -> bool:
        return bool(getattr(self.__func__, "__isabstractmethod__", False))

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., frozenset[str]]:
        if obj is None:
            return MethodType(self.__func__, owner)
        func, cls, own = self.__func__, type(obj), obj.options

        @functools.wraps(func)
        def bound(options: Mapping[str, Any] | None = None) -> frozenset[str]:
            return func(cls, own if options is None else options)

        return bound


class Source(Plugin, ABC):
    """Fetches metric history. Only closed bars; values it lacks are NaN, never 0."""

    #: Metrics outside the core namespace that this source adds, under its own prefix (``myplugin.thing``).
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("provides")
        if isinstance(own, classmethod):
            cls.provides = _ProvidesMethod(own.__func__)  # type: ignore[method-assign, assignment]

    @classmethod
    @abstractmethod
    def provides(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The metric names this source can fill with ``options``; answered without opening anything.

        Called on the class (``Cls.provides(options)``); on an instance, ``source.provides()``
        answers for the instance's own options.
        """

    @abstractmethod
    async def fetch(self, request: FetchRequest) -> Frame:
        """The requested bars; raise SourceError when the source cannot answer."""

    def check(self, symbols: Sequence[str], interval: str) -> list[str]:
        """Start-up: what can never work for ``symbols`` at ``interval`` (a missing file, a path
        that does not exist), one sentence each; ``perpwatch run`` stops with them (exit 2) before
        the first cycle. Answered without the network; the default finds nothing."""
        return []

    def stale_hint(self, symbol: str, interval: str) -> str | None:
        """A hint for the log when this source's newest bar is older than the bar being decided
        (a replay source names the span its file holds and ``--simulate-from``); default none."""
        return None


def provides_is_classmethod(cls: type[Source]) -> bool:
    """Whether ``cls`` declares ``provides`` as a class method, as the contract asks."""
    for klass in cls.__mro__:
        if "provides" in klass.__dict__:
            return isinstance(klass.__dict__["provides"], _ProvidesMethod | classmethod)
    return False
