"""Helpers for testing a perpwatch plugin in-process and offline (``docs/plugins.md``, *Testing a
plugin*). They need no test framework: the ``check_*`` helpers raise ``AssertionError`` naming
every problem, so they read the same under pytest, unittest or a plain script.

* :func:`make_context` — a :class:`PluginContext` with a :class:`FakeClock` and an
  ``httpx.MockTransport`` (by default one that refuses every request: a test never goes online);
* :func:`fetch` — a source's ``fetch`` run to its :class:`Frame`, times as ISO 8601 or ms;
* :func:`frame_from_rows` — a :class:`Frame` from a few rows, ``None`` for unknown;
* :func:`sample_event` and :func:`deliver` — an :class:`Event` and a notifier's ``send`` of it;
* :func:`check_plugin_class` — what ``register`` and the config loader will demand of a class;
* :func:`check_causal` — an expression function's value at bar t uses bars up to t only;
* :func:`load_plugin` — a plugin file or the installed plugins through the registry, failures raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from perpwatch.api.executors import Executor
from perpwatch.api.history import HistoryReader
from perpwatch.api.notifiers import Notifier
from perpwatch.api.plugin import Plugin, PluginContext
from perpwatch.api.registry import PluginInfo, Registry, load_registry
from perpwatch.api.sources import FetchRequest, Source, provides_is_classmethod
from perpwatch.common.clock import FakeClock
from perpwatch.common.timeutil import parse_time
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.frame import Cat, Frame

#: The time :func:`make_context`'s clock starts at and :func:`sample_event`'s bar opens at.
DEFAULT_NOW = "2024-03-01T00:00:00Z"

Handler = Callable[[httpx.Request], httpx.Response]


class NetworkUsed(AssertionError):
    """A plugin under test sent a request that its test did not answer."""


def no_network(request: httpx.Request) -> httpx.Response:
    """The default transport's handler: every request fails the test, naming its URL."""
    raise NetworkUsed(f"the plugin sent {request.method} {request.url}, which this test does not answer")


def make_context(
    now: str | int | float = DEFAULT_NOW,
    handler: Handler | None = None,
    *,
    secrets: Iterable[str] = (),
    store: Any = None,
    state_path: str | None = None,
) -> PluginContext:
    """A context for a plugin under test: its clock stands at ``now`` (ISO 8601, or epoch ms) and
    moves only when the plugin sleeps (``await ctx.clock.sleep(s)`` returns at once, ``s`` later) or
    the test sets ``ctx.clock.now`` (seconds); its HTTP requests go to ``handler`` (an
    ``httpx.MockTransport`` handler; default :func:`no_network`)."""
    return PluginContext(
        clock=FakeClock(parse_time(now) / 1000),
        transport=httpx.MockTransport(handler or no_network),
        secrets=frozenset(secrets),
        store=store,
        state_path=state_path,
    )


def fetch(
    source: Source,
    symbol: str,
    interval: str,
    metrics: Iterable[str],
    start: str | int,
    end: str | int,
) -> Frame:
    """``await source.fetch(...)`` from synchronous test code; ``start`` and ``end`` (bar open times,
    inclusive) as ISO 8601 or epoch ms."""
    request = FetchRequest(symbol, interval, frozenset(metrics), parse_time(start), parse_time(end))
    return asyncio.run(source.fetch(request))


def frame_from_rows(rows: Sequence[Mapping[str, Any]]) -> Frame:
    """A :class:`Frame` from rows of ``{"time": ISO 8601 or ms, metric: value, ...}``, in any order.

    ``None`` or a missing key is unknown (NaN); a column of text values (``None`` aside) becomes a
    :class:`Cat`. Two rows for one time, or a row without ``time``, is a ``ValueError``."""
    by_time: dict[int, Mapping[str, Any]] = {}
    for i, row in enumerate(rows):
        if "time" not in row:
            raise ValueError(f"row {i} has no 'time'")
        t = parse_time(row["time"])
        if t in by_time:
            raise ValueError(f"row {i}: time {row['time']!r} is given twice")
        by_time[t] = row
    times = sorted(by_time)
    frame = Frame(np.asarray(times, dtype=np.int64))
    names = sorted({k for row in rows for k in row if k != "time"})
    for name in names:
        values = [by_time[t].get(name) for t in times]
        known = [v for v in values if v is not None]
        if known and all(isinstance(v, str) for v in known):
            frame.columns[name] = Cat.from_values(values)
        else:
            frame.columns[name] = np.asarray([math.nan if v is None else float(v) for v in values])
    return frame


def sample_event(**changes: Any) -> Event:
    """A fired ``high`` event of strategy ``demo``, rule ``hot``, BTC, at :data:`DEFAULT_NOW` (4h
    bars); ``changes`` replace any field (``kind=``, ``severity=``, ``message=``, ``signal=`` ...)."""
    event = Event(
        kind="fired",
        strategy="demo",
        rule="hot",
        symbol="BTC",
        time=parse_time(DEFAULT_NOW),
        severity="high",
        message="BTC: funding 0.05 % above its 0.03 % limit",
        values={"funding.close": 0.05, "price.close": 60000.0},
        interval="4h",
    )
    return dataclasses.replace(event, **changes)


def deliver(notifier: Notifier, event: Event | None = None) -> bool:
    """What the engine does with one event for ``notifier``: ask ``accepts`` and, when it does,
    ``await send(event)``. True when sent; False when the notifier's routing declined it. A
    ``NotifierError`` from ``send`` propagates."""
    event = sample_event() if event is None else event
    if not notifier.accepts(event):
        return False
    asyncio.run(notifier.send(event))
    return True


_KINDS: tuple[tuple[type, str], ...] = (
    (Source, "source"),
    (Notifier, "notifier"),
    (Executor, "executor"),
    (HistoryReader, "history reader"),
)


def plugin_class_problems(cls: type) -> list[str]:
    """Why ``register`` or the config loader would refuse ``cls``, or would accept it but misread its
    options (one line each; empty when there is nothing to fix)."""
    kind = next((k for base, k in _KINDS if isinstance(cls, type) and issubclass(cls, base)), None)
    if kind is None:
        return [f"{cls!r} is not a Source, Notifier, Executor or HistoryReader subclass"]
    problems = []
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(
            f"{cls.__name__} does not implement the abstract {kind} method(s) {', '.join(missing)}"
        )
    if not getattr(cls, "name", ""):
        problems.append(f"{cls.__name__} has no name")
    if issubclass(cls, Source) and not provides_is_classmethod(cls):
        problems.append(f"{cls.__name__}.provides must be a classmethod, provides(cls, options)")
    if issubclass(cls, Plugin):
        problems += _schema_problems(cls)
    return problems


def _schema_problems(cls: type[Plugin]) -> list[str]:
    import jsonschema

    from perpwatch.language.schemas import schema_validator

    schema = cls.options_schema
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        return [f"{cls.__name__}.options_schema is not a valid JSON Schema: {e.message}"]
    problems = []
    if schema.get("type") != "object":
        problems.append(f'{cls.__name__}.options_schema must have "type": "object"')
    if schema.get("additionalProperties") is not False:
        problems.append(
            f'{cls.__name__}.options_schema should say "additionalProperties": false (a misspelt option '
            "would pass unnoticed)"
        )
    for name, spec in (schema.get("properties") or {}).items():
        if isinstance(spec, Mapping) and "default" in spec:
            errors = list(schema_validator(spec).iter_errors(spec["default"]))
            if errors:
                problems.append(
                    f"{cls.__name__}: the default of option {name!r} ({spec['default']!r}) does not fit "
                    f"its own schema: {errors[0].message}"
                )
    return problems


def check_plugin_class(cls: type) -> None:
    """Raise ``AssertionError`` listing :func:`plugin_class_problems`, if there are any."""
    problems = plugin_class_problems(cls)
    if problems:
        raise AssertionError("\n".join(problems))


def check_causal(func: Callable[..., np.ndarray], x: Sequence[float] | np.ndarray, *windows: int) -> None:
    """Raise ``AssertionError`` unless ``func(x, *windows)`` at every bar t equals the last value of
    ``func(x[: t + 1], *windows)`` (NaN equal to NaN) and has ``x``'s length: the value at bar t
    uses bars up to t only, as live evaluation (which sees bars up to t) requires."""
    x = np.asarray(x, dtype=float)
    whole = np.asarray(func(x, *windows), dtype=float)
    if whole.shape != x.shape:
        raise AssertionError(f"{getattr(func, '__name__', func)} returned shape {whole.shape} for {x.shape}")
    for t in range(len(x)):
        head = np.asarray(func(x[: t + 1], *windows), dtype=float)
        if not np.array_equal(head[-1:], whole[t : t + 1], equal_nan=True):
            raise AssertionError(
                f"{getattr(func, '__name__', func)} is not causal at bar {t}: {whole[t]!r} over the whole "
                f"series, {head[-1]!r} over bars 0..{t}"
            )


def load_plugin(path: str | None = None, name: str | None = None) -> tuple[Registry, PluginInfo]:
    """The registry with the plugin file ``path`` loaded (``None``: the installed plugins only), and
    the :class:`PluginInfo` of plugin ``name`` (default: the file's stem). Raises ``AssertionError``
    when that plugin failed to load, a hook of it raised, or a name it registers is taken."""
    if name is None:
        if path is None:
            raise ValueError("name the installed plugin to look at")
        name = path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    reg = load_registry([] if path is None else [path])
    info = next((p for p in reg.plugins if p.name == name), None)
    if info is None:
        found = ", ".join(sorted(p.name for p in reg.plugins))
        raise AssertionError(f"no plugin {name!r} was found (found: {found})")
    problems = [info.error] if info.error else []
    problems += [c for c in reg.conflicts if repr(name) in c]
    if problems:
        raise AssertionError(f"plugin {name!r}: " + "; ".join(problems))
    return reg, info
