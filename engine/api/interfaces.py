"""What a plugin class implements: sources, notifiers and executors (one import for all of them).

Every plugin class has a ``name`` (the default instance name in a config), an ``options_schema``
(JSON Schema of its options, checked when the config is loaded, with their defaults) and is built
as ``cls(options, ctx)``. The base classes are abstract: a class that leaves one of their abstract
methods out cannot be registered. All I/O methods are async.

* :mod:`perpwatch.api.plugin`: :class:`PluginContext`, :class:`PluginError`, :class:`Plugin`,
  :data:`SECRET_MARKERS` and :func:`secret_values` (options marked secret in a schema);
* :mod:`perpwatch.api.sources`: :class:`Source` (``provides``, ``fetch``), :class:`FetchRequest`,
  :class:`SourceError`;
* :mod:`perpwatch.api.notifiers`: :class:`Notifier` (``send``; ``accepts`` and ``min_severity``
  given), :class:`NotifierError`;
* :mod:`perpwatch.api.executors`: :class:`Executor` (``submit``, ``positions``), :class:`Fill`,
  :class:`Position`, :class:`ExecutorError`, the :class:`Accounting` and :class:`Protective`
  protocols (protective exits: :mod:`perpwatch.api.exits`);
* :mod:`perpwatch.api.ledger`: the :class:`Ledger` protocol and :class:`TradeSummary` (what a
  backtest reads from its executor);
* :mod:`perpwatch.api.history`: :class:`HistoryReader` (``accepts``, ``load``) and :class:`History`
  (what ``backtest --data`` reads);
* and what those classes take and return, from the layers below: :data:`hookimpl` (the hook
  marker, :mod:`perpwatch.api.hookspecs`), :class:`Frame` and :class:`Cat` (what a source returns,
  :mod:`perpwatch.evaluation.frame`), :class:`Event`, :class:`OrderIntent` and :class:`ExitDistance` (what a notifier and
  an executor receive, :mod:`perpwatch.evaluation.events`), :class:`Metric` (a source's own
  metrics, :mod:`perpwatch.language.metrics`).
"""

from __future__ import annotations

from perpwatch.api.executors import Accounting, Executor, ExecutorError, Fill, Position, Protective
from perpwatch.api.history import History, HistoryReader
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.ledger import Ledger, TradeSummary
from perpwatch.api.notifiers import Notification, Notifier, NotifierError
from perpwatch.api.plugin import SECRET_MARKERS, Plugin, PluginContext, PluginError, secret_values
from perpwatch.api.sources import FetchRequest, Source, SourceError
from perpwatch.evaluation.events import Event, ExitDistance, OrderIntent
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.metrics import Metric

__all__ = [
    "Accounting",
    "Cat",
    "Event",
    "Executor",
    "ExecutorError",
    "ExitDistance",
    "FetchRequest",
    "Fill",
    "Frame",
    "History",
    "HistoryReader",
    "Ledger",
    "Metric",
    "Notification",
    "Notifier",
    "NotifierError",
    "OrderIntent",
    "Plugin",
    "PluginContext",
    "PluginError",
    "Position",
    "Protective",
    "SECRET_MARKERS",
    "Source",
    "SourceError",
    "TradeSummary",
    "hookimpl",
    "secret_values",
]
