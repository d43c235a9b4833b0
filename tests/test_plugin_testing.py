"""The helpers for plugin authors (``perpwatch.testing.plugins``) catch what they promise to catch:
a request nobody answered, a class that registration would refuse, a function that looks ahead,
a plugin that fails to load."""

from __future__ import annotations

import asyncio
import math
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from perpwatch.api.interfaces import Event, FetchRequest, Frame, Notifier, Source
from perpwatch.testing.plugins import (
    NetworkUsed,
    check_causal,
    check_plugin_class,
    deliver,
    fetch,
    frame_from_rows,
    load_plugin,
    make_context,
    plugin_class_problems,
    sample_event,
)


class Echo(Source):
    """One bar of ``price.close`` from ``GET https://example.test/price``."""

    name: ClassVar[str] = "echo"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"scale": {"type": "number", "default": 1}},
    }

    @classmethod
    def provides(cls, options: Any) -> frozenset[str]:
        return frozenset({"price.close"})

    async def fetch(self, request: FetchRequest) -> Frame:
        async with httpx.AsyncClient(transport=self.ctx.transport) as client:
            price = (await client.get("https://example.test/price")).json()["price"]
        return Frame(np.array([request.start]), {"price.close": np.array([price * self.option("scale")])})


def test_make_context_answers_with_the_handler_and_refuses_other_requests() -> None:
    ctx = make_context("2024-03-01T04:00:00Z", lambda req: httpx.Response(200, json={"price": 2.5}))
    assert ctx.clock.time() == 1_709_265_600.0
    frame = fetch(Echo({"scale": 2}, ctx), "BTC", "4h", ["price.close"], "2024-03-01", "2024-03-01")
    assert frame.columns["price.close"].tolist() == [5.0] and frame.times.tolist() == [1_709_251_200_000]
    with pytest.raises(NetworkUsed, match="GET https://example.test/price"):
        fetch(Echo({}, make_context()), "BTC", "4h", ["price.close"], 0, 0)


def test_frame_from_rows() -> None:
    frame = frame_from_rows(
        [
            {"time": "2024-03-01T04:00:00Z", "price.close": 2, "regime": None},
            {"time": "2024-03-01T00:00:00Z", "price.close": None, "regime": "calm"},
        ]
    )
    assert frame.times.tolist() == [1_709_251_200_000, 1_709_265_600_000]
    close = frame.columns["price.close"]
    assert isinstance(close, np.ndarray) and math.isnan(close[0]) and close[1] == 2.0
    assert frame.columns["regime"].to_list() == ["calm", None]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="given twice"):
        frame_from_rows([{"time": 0}, {"time": 0}])


class Recorder(Notifier):
    name: ClassVar[str] = "recorder"
    sent: ClassVar[list[Event]] = []

    async def send(self, event: Event) -> None:
        self.sent.append(event)


def test_deliver_asks_accepts_first() -> None:
    Recorder.sent.clear()
    assert deliver(Recorder({"min_severity": "medium"}))
    assert not deliver(Recorder({"min_severity": "critical"}))
    assert deliver(Recorder({}), sample_event(severity="debug-ish"))  # an unknown severity is accepted
    assert [e.severity for e in Recorder.sent] == ["high", "debug-ish"]
    assert sample_event(rule="cold").key == "demo/cold/BTC/1709251200000/fired"


def test_check_plugin_class_names_every_problem() -> None:
    check_plugin_class(Echo)
    check_plugin_class(Recorder)

    class Half(Source):  # no fetch, provides not a classmethod, no name, a sloppy schema
        options_schema: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"limit": {"type": "integer", "minimum": 1, "default": 0}},
        }

        def provides(self, options: Any) -> frozenset[str]:  # type: ignore[override]
            return frozenset()

    problems = plugin_class_problems(Half)
    assert problems == [
        "Half does not implement the abstract source method(s) fetch",
        "Half has no name",
        "Half.provides must be a classmethod, provides(cls, options)",
        'Half.options_schema should say "additionalProperties": false (a misspelt option would pass unnoticed)',
        "Half: the default of option 'limit' (0) does not fit its own schema: 0 is less than the minimum of 1",
    ]
    with pytest.raises(AssertionError, match="Half has no name"):
        check_plugin_class(Half)

    class Broken(Echo):
        options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"x": {"type": "nope"}}}

    assert plugin_class_problems(Broken)[0].startswith("Broken.options_schema is not a valid JSON Schema")
    assert plugin_class_problems(int) == [
        "<class 'int'> is not a Source, Notifier, Executor or HistoryReader subclass"
    ]


def test_check_causal_catches_a_look_ahead() -> None:
    def trailing_mean(x: np.ndarray, n: int) -> np.ndarray:
        out = np.full(len(x), np.nan)
        for t in range(n - 1, len(x)):
            out[t] = x[t - n + 1 : t + 1].mean()
        return out

    def centred_mean(x: np.ndarray, n: int) -> np.ndarray:  # uses the next bar too
        return np.convolve(x, np.ones(n) / n, mode="same")

    x = np.arange(10, dtype=float)
    check_causal(trailing_mean, x, 3)
    with pytest.raises(AssertionError, match="centred_mean is not causal at bar 0"):
        check_causal(centred_mean, x, 3)
    with pytest.raises(AssertionError, match="returned shape"):
        check_causal(lambda x: x[1:], x)


def test_load_plugin_raises_on_a_plugin_that_failed(tmp_path: Path) -> None:
    good = tmp_path / "goodplug.py"
    good.write_text(
        textwrap.dedent(
            """
            from perpwatch.api.interfaces import hookimpl

            @hookimpl
            def register_functions(register):
                register("twice", lambda x: x * 2)
            """
        )
    )
    reg, info = load_plugin(str(good))
    assert info.registers == {"functions": ["twice"]} and "twice" in reg.functions
    bad = tmp_path / "badplug.py"
    bad.write_text("import no_such_module_here\n")
    with pytest.raises(AssertionError, match="plugin 'badplug': failed to load: ModuleNotFoundError"):
        load_plugin(str(bad))
    with pytest.raises(AssertionError, match="no plugin 'nothere' was found"):
        load_plugin(name="nothere")


def test_a_context_clock_moves_only_when_slept() -> None:
    ctx = make_context(0)
    asyncio.run(ctx.clock.sleep(30))
    assert ctx.clock.time() == 30.0
