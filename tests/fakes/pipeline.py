"""A small live run for the notification pipeline's tests: an in-memory source whose values and
outages the test scripts, a recording notifier, a fake clock, one cycle per 1h bar.

    pipe = Pipeline(tmp_path, {"BTC": [0.1, 0.2, ...]})  # funding.close per bar
    pipe.run(strategy_text, hours=6, config=Config(...))
    pipe.groups["rec"]                                      # the Notifications "rec" received
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from perpwatch.api.interfaces import Frame, Notification, Notifier, Source, SourceError
from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.jobs import RunnerOptions
from perpwatch.live.runner import Runner
from perpwatch.live.state import StateStore

H = 3_600_000
T0 = 1_722_470_400_000  # 2024-08-01T00:00:00Z, the first bar the runs decide


class ScriptedSource(Source):
    """``funding.close`` per symbol from ``Pipeline.series`` (one value per bar from T0 - 48 h);
    raises SourceError while ``Pipeline.down`` is set."""

    name = "scripted"
    pipeline: Pipeline

    @classmethod
    def provides(cls, options):
        return frozenset({"funding.close", "price.close"})

    async def fetch(self, request):
        pipe = self.pipeline
        if pipe.down:
            raise SourceError("HTTP 503 from the scripted source")
        series = pipe.series[request.symbol]
        last = T0 - 48 * H + (len(series) - 1) * H  # no bar after the series: stale data
        times = np.arange(request.start, min(request.end, last) + 1, H, dtype=np.int64)
        idx = (times - (T0 - 48 * H)) // H
        values = np.array([series[i] if 0 <= i < len(series) else np.nan for i in idx], dtype=float)
        return Frame(times, {"funding.close": values, "price.close": np.full(len(times), 100.0)})


class RecordingNotifier(Notifier):
    """Keeps every notification it is sent (by instance name); fails while its name is in
    ``Pipeline.failing``."""

    name = "rec"
    pipeline: Pipeline
    options_schema = {"type": "object", "properties": {"label": {"type": "string"}}}

    async def send(self, event):  # pragma: no cover - the engine sends groups
        raise AssertionError("send_group expected")

    async def send_group(self, notification: Notification) -> None:
        label = self.options.get("label", "rec")
        if label in self.pipeline.failing:
            from perpwatch.api.interfaces import NotifierError

            raise NotifierError(f"{label} is down", retryable=True)
        self.pipeline.groups.setdefault(label, []).append(notification)


class Pipeline:
    def __init__(self, tmp: Path, funding: dict[str, list[float]]):
        self.tmp = tmp
        pad = 48
        self.series = {s: [0.0] * pad + list(v) for s, v in funding.items()}
        self.down = False
        self.failing: set[str] = set()
        self.groups: dict[str, list[Notification]] = {}
        self.store = StateStore(str(tmp / "state.db"))
        self.clock = FakeClock(T0 / 1000)
        self.registry = load_registry()
        owner = self

        class Src(ScriptedSource):
            pipeline = owner

        class Rec(RecordingNotifier):
            pipeline = owner

        self.registry.sources["scripted"] = Src
        self.registry.notifiers["rec"] = Rec

    def strategy(self, text: str, name: str = "s.yaml"):
        path = self.tmp / name
        path.write_text(text)
        return load_strategy(str(path))

    def config(self, receivers: tuple[str, ...] = ("a",), **blocks: Any) -> Config:
        cfg = Config(
            symbols=list(self.series),
            sources={"scripted": Instance("scripted", "scripted", {})},
            notifiers={n: Instance(n, "rec", {"label": n}) for n in receivers},
        )
        for key, value in blocks.items():
            setattr(cfg, key, value)
        return cfg

    def runner(self, strategies: list, cfg: Config) -> Runner:
        options = RunnerOptions(settle_seconds=0, source_timeout=5, notify_timeout=5)
        return Runner.build(strategies, cfg, self.registry, self.store, self.clock, options=options)

    def cycles(self, runner: Runner, bars: range, before: Any = None) -> list:
        """One cycle after the close of each bar ``T0 + n h`` for n in ``bars``, then deliver;
        ``before(n)`` runs first (to take a source down, ...)."""

        async def main() -> list:
            reports = []
            for n in bars:
                if before is not None:
                    before(n)
                self.clock.now = (T0 + (n + 1) * H) / 1000
                reports.append(await runner.run_cycle(self.clock.now))
                await runner.flush()
                if runner.heartbeat is not None:
                    await runner.heartbeat.aclose()  # its ping for this cycle, before the next
            await runner.aclose()
            return reports

        return asyncio.run(main())

    def texts(self, receiver: str) -> list[list[tuple[str, str, str]]]:
        """Per notification: (rule, kind, symbol) of each alert."""
        return [[(e.rule, e.kind, e.symbol) for e in n.events] for n in self.groups.get(receiver, [])]
