"""End to end: the real runner against the local fake market API and fake webhook server.

A FakeClock drives the cycles (``run_cycle`` at each bar close plus the settle delay), so a day of
hourly bars runs in seconds. Expected events come from the same strategy walked over the whole
history (``evaluate`` + ``walk``): live agrees with it bar for bar, through faults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes.hooks import FakeHooks
from fakes.market import FakeMarket, generate_series
from helpers import H, perpwatch_command, run_perpwatch

from perpwatch.api.interfaces import FetchRequest, Source
from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import walk
from perpwatch.language.compiler import Strategy, load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

T0 = 1_722_470_400_000  # 2024-08-01T00:00Z: the close of the first bar processed
HISTORY = 240
BARS = HISTORY + 60
START = T0 - HISTORY * H
SETTLE = 5.0
KEY = "cg-test-key-123"

HEAT = """
version: 1
name: heat
interval: 1h
rules:
  - name: hot
    when: funding.close > 0.05
    severity: high
    message: "{symbol} funding {funding.close:.3f}"
    notify_resolved: true
  - name: rising
    when: pct_change(price.close, 1) > 0
    for: 1
notify: [file, hook]
"""


def pattern(n: int, period: int = 6) -> np.ndarray:
    """funding.close: hot (0.1) at bars 2 and 3 of every ``period``, else 0.01."""
    return np.array([0.1 if i % period in (2, 3) else 0.01 for i in range(n)])


def make_series(seed: int) -> dict[str, np.ndarray]:
    series = generate_series(BARS, seed=seed)
    series["funding.close"] = pattern(BARS)
    return series


def strategy(tmp: Path, text: str = HEAT, name: str = "heat.yaml") -> Strategy:
    path = tmp / name
    path.write_text(text)
    return load_strategy(str(path))


def reference(strat: Strategy, series: dict, symbol: str, first: int, last: int) -> list[str]:
    """The event keys of a walk over the whole history, bars ``first``..``last``."""
    times = START + H * np.arange(BARS, dtype=np.int64)
    frame = Frame(times, {m: np.asarray(series[m], dtype=float) for m in strat.metrics})
    ev = evaluate(strat, frame, symbol)
    i0 = int(np.searchsorted(times, first))
    return [e.key for e in walk(strat, ev, {}, i0) if e.time <= last]


class Env:
    """A FakeClock, a fake market with BTC/ETH/SOL, a fake webhook server and a state store."""

    def __init__(self, tmp: Path, symbols=("BTC", "ETH")):
        self.tmp = tmp
        self.clock = FakeClock(T0 / 1000 + SETTLE)
        self.market = FakeMarket(clock=self.clock, api_key=KEY).start()
        self.hooks = FakeHooks().start()
        self.series = {}
        for k, sym in enumerate(symbols):
            self.series[sym] = make_series(k)
            self.market.set_series(sym, "1h", self.series[sym], START)
        self.symbols = list(symbols)
        self.store = StateStore(str(tmp / "state.db"))
        self.registry = load_registry()

    def config(self, **notifiers: Instance) -> Config:
        base = {
            "file": Instance("file", "jsonl", {"path": str(self.tmp / "events.jsonl")}),
            "hook": Instance("hook", "webhook", {"url": self.hooks.url("/hook")}),
        }
        return Config(
            symbols=self.symbols,
            sources={
                "coinglass": Instance(
                    "coinglass",
                    "coinglass",
                    {
                        "base_url": self.market.base_url,
                        "api_key": KEY,
                        "rate_limit_per_min": 100_000,
                        "retries": 1,
                        "backoff_base": 0.01,
                        "timeout": 5,
                    },
                )
            },
            notifiers={**base, **notifiers},
        )

    def runner(self, strategies: list[Strategy], cfg: Config | None = None, **options) -> Runner:
        opts = RunnerOptions(
            **{"settle_seconds": SETTLE, "source_timeout": 10, "notify_timeout": 5, **options}
        )
        return Runner.build(
            strategies, cfg or self.config(), self.registry, self.store, self.clock, options=opts
        )

    async def cycle(self, runner: Runner, bar_close: int):
        """One cycle at ``bar_close`` + settle, then deliver what is due."""
        t = bar_close / 1000 + SETTLE
        self.clock.now = t
        report = await runner.run_cycle(t)
        await runner.flush(10)
        return report

    def jsonl(self) -> list[str]:
        path = self.tmp / "events.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [f"{r['strategy']}/{r['rule']}/{r['symbol']}/{r['time']}/{r['kind']}" for r in rows]

    def hook_keys(self) -> list[str]:
        return [r.headers["x-perpwatch-event"] for r in self.hooks.requests]

    def close(self) -> None:
        self.market.close()
        self.hooks.close()
        self.store.close()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def notified(keys: list[str]) -> list[str]:
    """Of the keys of a walk, the ones HEAT's notifiers get: fired ones, and hot's resolved ones."""
    return [k for k in keys if k.endswith("/fired") or ("/hot/" in k and k.endswith("/resolved"))]


def run(coro):
    return asyncio.run(coro)


def test_a_day_of_hourly_bars_matches_the_full_history_walk(env):
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat])
        reports = [await env.cycle(runner, T0 + n * H) for n in range(24)]
        await runner.aclose()
        return reports

    reports = run(main())
    assert all(not r.failed for r in reports)
    assert [r.bars["heat"] for r in reports] == [T0 - H + n * H for n in range(24)]
    expected = []
    for sym in env.symbols:
        expected += reference(strat, env.series[sym], sym, T0 - H, T0 + 22 * H)
    recorded = [e.key for e in env.store.events()]
    assert sorted(recorded) == sorted(expected)
    assert any("/hot/" in k and k.endswith("/fired") for k in expected)
    assert sorted(env.jsonl()) == sorted(notified(expected))
    assert sorted(env.hook_keys()) == sorted(notified(expected))  # X-Perpwatch-Event on every POST
    assert env.store.pending_count() == 0


def test_cycle_fetches_union_of_metrics_with_warmup(env):
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat], concurrency=2)
        await env.cycle(runner, T0)
        await runner.aclose()

    run(main())
    price = env.market.seen("/price/history")
    assert len(price) == 2 and len(env.market.seen("/oi-weight-history")) == 2
    assert not env.market.seen("/open-interest/")  # nothing the strategy does not need
    start = int(price[0].params["start_time"])
    assert start == T0 - H - strat.warmup * H


def test_api_down_three_cycles_holds_rules_then_catches_up(env):
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat])
        reports = []
        for n in range(12):
            if n == 3:
                env.market.fail("/oi-weight-history", "500", times=None)
            if n == 6:
                env.market.clear_faults()
            before = len(env.store.events())
            reports.append(await env.cycle(runner, T0 + n * H))
            if 3 <= n < 6:
                new = env.store.events()[before:]
                assert all(e.rule != "hot" for e in new)  # held: neither fires nor resolves
                assert env.store.load_rule_state("heat", "hot", "BTC").last_bar == T0 + 1 * H
        await runner.aclose()
        return reports

    reports = run(main())
    assert [r.failed for r in reports] == [False] * 3 + [True] * 3 + [False] * 6
    assert "HTTP 500" in reports[3].failures[0]
    # the price rule went on meanwhile; after the outage the funding rule caught up on the bars it missed
    expected = []
    for sym in env.symbols:
        expected += reference(strat, env.series[sym], sym, T0 - H, T0 + 10 * H)
    assert sorted(e.key for e in env.store.events() if e.strategy != "perpwatch") == sorted(expected)
    # the third failed cycle in a row raised the source_failing meta-alert; the first good one resolved it
    meta = [e for e in env.store.events() if e.strategy == "perpwatch"]
    assert [(e.rule, e.symbol, e.kind, e.time) for e in meta] == [
        ("source_failing", "coinglass", "fired", T0 + 5 * H + 5000),  # settle: 5 s
        ("source_failing", "coinglass", "resolved", T0 + 6 * H + 5000),
    ]
    assert (
        "3 in a row" in meta[0].message and "HTTP 500" in meta[0].message and meta[0].severity == "critical"
    )
    assert sorted(env.jsonl()) == sorted([*notified(expected), *(e.key for e in meta)])
    assert len(env.jsonl()) == len(set(env.jsonl()))


def test_stale_newest_bar_is_unknown(env):
    """A source that lags (the newest bar missing) leaves that bar unknown: nothing fires on old data."""
    strat = strategy(env.tmp, HEAT.replace("funding.close > 0.05", "not is_missing(funding.close)"))

    async def main():
        runner = env.runner([strat])
        env.market.fail(
            "/oi-weight-history", "lag", times=None, bars=2
        )  # the open bar and the newest closed one
        await env.cycle(runner, T0)
        await runner.aclose()

    run(main())
    assert env.store.rule_status("heat", "hot", "BTC") == "inactive"
    assert not [e for e in env.store.events() if e.rule == "hot"]


def test_one_symbol_failing_does_not_stop_the_others(tmp_path, caplog):
    env = Env(tmp_path, symbols=("BTC", "ETH", "SOL"))
    strat = strategy(env.tmp)
    env.market.fail("/api/futures/", "500", times=None, symbol="ETH")

    async def main():
        runner = env.runner([strat])
        reports = [await env.cycle(runner, T0 + n * H) for n in range(6)]
        await runner.aclose()
        return reports

    try:
        with caplog.at_level(logging.WARNING, logger="perpwatch.live.runner"):
            reports = run(main())
        assert all(len(r.failures) == 1 and " ETH " in r.failures[0] for r in reports)
        failures_logged = [r.getMessage() for r in caplog.records if "source coinglass " in r.getMessage()]
        # said once, then summarised after 2 and 4 failed cycles (fetching.FailureLog)
        assert len(failures_logged) == 3, failures_logged
        assert "source coinglass failed for ETH 1h" in failures_logged[0]
        assert [" still failing since " in m for m in failures_logged] == [False, True, True]
        by_symbol = {s: [e for e in env.store.events() if e.symbol == s] for s in env.symbols}
        assert by_symbol["ETH"] == []
        for sym in ("BTC", "SOL"):
            assert [e.key for e in by_symbol[sym]] == reference(
                strat, env.series[sym], sym, T0 - H, T0 + 4 * H
            )
    finally:
        env.close()


def test_notifier_down_then_back_delivers_late_exactly_once(env):
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat])
        env.hooks.down()
        for n in range(6):
            await env.cycle(runner, T0 + n * H)
        pending = env.store.pending_count("hook")
        assert pending > 0 and env.store.pending_count("file") == 0  # jsonl was not held up
        rows = env.store.recent_events(50)
        retrying = [
            d for r in rows for d in r["deliveries"] if d["notifier"] == "hook" and d["status"] == "retrying"
        ]
        assert retrying and "hook" in retrying[0]["last_error"]
        env.hooks.up()
        for n in range(6, 12):
            await env.cycle(runner, T0 + n * H)  # an hour later: every backoff has passed
        await runner.aclose()

    run(main())
    expected = []
    for sym in env.symbols:
        expected += reference(strat, env.series[sym], sym, T0 - H, T0 + 10 * H)
    assert sorted(env.hook_keys()) == sorted(notified(expected))
    assert len(env.hook_keys()) == len(set(env.hook_keys()))
    assert env.store.pending_count() == 0


def test_retry_after_is_honoured(env):
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat])
        env.hooks.fail(status=429, retry_after=600)
        n = 0
        while not env.store.pending_count("hook"):
            await env.cycle(runner, T0 + n * H)
            n += 1
        item = env.store.due(1e12, "hook")[0]
        assert item.next_try >= env.clock.now + 599
        runner.kick()
        assert not [t for t in runner._tasks.values() if not t.done()]  # blocked until then
        env.clock.now = item.next_try + 1
        await runner.flush(10)
        await runner.aclose()

    run(main())
    assert env.store.pending_count() == 0


def test_notify_resolved_and_suppressed_episodes(env):
    text = HEAT.replace("notify_resolved: true", "notify_resolved: true\n    cooldown: 8h")
    strat = strategy(env.tmp, text)

    async def main():
        runner = env.runner([strat])
        for n in range(14):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()

    run(main())
    events = [e for e in env.store.events() if e.rule == "hot" and e.symbol == "BTC"]
    kinds = [e.kind for e in events]
    assert "suppressed" in kinds and "resolved" in kinds
    sent = [k for k in env.jsonl() if "/hot/BTC/" in k]
    # a fired episode's resolved is sent; a suppressed episode and its resolved are not
    for i, e in enumerate(events):
        if e.kind == "fired":
            assert e.key in sent
        if e.kind == "suppressed":
            assert e.key not in sent
            assert events[i + 1].kind == "resolved" and events[i + 1].key not in sent
        if e.kind == "resolved" and events[i - 1].kind == "fired":
            assert e.key in sent
    assert not [k for k in env.jsonl() if "/rising/" in k and k.endswith("/resolved")]


def test_mute_and_unmute(env):
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat])
        env.store.mute("heat/hot", "BTC", until=(T0 + 6 * H) / 1000)
        env.store.mute("heat", None, until=(T0 + 3 * H) / 1000)
        for n in range(12):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()

    run(main())
    recorded = {e.key: e for e in env.store.events()}
    sent = set(env.jsonl())
    for key, e in recorded.items():
        if e.kind != "fired":
            continue
        close = e.time + H + SETTLE * 1000
        muted = close < T0 + 3 * H or (e.rule == "hot" and e.symbol == "BTC" and close < T0 + 6 * H)
        assert (key in sent) is not muted, key
    assert any(
        e.kind == "fired" and e.rule == "hot" and e.symbol == "BTC" and e.key not in sent
        for e in recorded.values()
    )
    assert any(
        e.kind == "fired" and e.rule == "hot" and e.symbol == "BTC" and e.key in sent
        for e in recorded.values()
    )


def test_routing_by_min_severity_and_notify_list(env):
    heat = strategy(env.tmp, HEAT.replace("notify: [file, hook]", "notify: [file, ops]"))
    other = strategy(
        env.tmp,
        HEAT.replace("name: heat", "name: quiet").replace("notify: [file, hook]", "notify: [file]"),
        "quiet.yaml",
    )
    ops = Instance("ops", "webhook", {"url": env.hooks.url("/ops"), "min_severity": "high"})

    async def main():
        runner = env.runner([heat, other], env.config(ops=ops))
        # "hook" is configured but no strategy names it and there is no route: block (the
        # meta-alerts go where the strategies' alerts go)
        assert set(runner.notifiers) == {"file", "ops"}
        for n in range(8):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()

    run(main())
    to_ops = env.hook_keys()
    assert to_ops and all(k.startswith("heat/hot/") for k in to_ops)  # high only, heat only
    fired = {e.key for e in env.store.events() if e.kind == "fired"}
    assert {k for k in env.jsonl() if k.endswith("/fired")} == fired  # file takes every severity
    assert any(k.startswith("quiet/") for k in fired)


def test_default_notifier_is_console(env, capsys):
    """Without notify: a strategy goes to the config's default route: every configured notifier
    (here file and hook), and the console only when the config names none (issue 16 #2)."""
    strat = strategy(env.tmp, HEAT.replace("notify: [file, hook]\n", ""))

    async def main(cfg):
        runner = env.runner([strat], cfg)
        for n in range(4):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()
        return list(runner.notifiers)

    assert run(main(env.config())) == ["file", "hook"]
    assert any(k.startswith("heat/hot/BTC/") for k in env.jsonl())
    assert "heat/hot BTC 1h: BTC funding 0.100" not in capsys.readouterr().out
    bare = env.config()
    bare.notifiers = {}
    strat = strategy(
        env.tmp, HEAT.replace("notify: [file, hook]\n", "").replace("name: heat", "name: bare"), "b.yaml"
    )
    assert run(main(bare)) == ["console"]
    assert "bare/hot BTC 1h: BTC funding 0.100" in capsys.readouterr().out


class FakeTrading:
    def __init__(self, store: StateStore):
        self.store = store
        self.calls: list[tuple] = []

    async def on_bar(self, strategy, symbol, bar_time, ev, i, events, exit_bars=1):
        other = self.store.load_rule_state("quiet", "hot", symbol).last_bar
        self.calls.append(
            (strategy.name, symbol, bar_time, i == len(ev.frame) - 1, [e.kind for e in events], other)
        )
        if any(e.kind == "fired" for e in events):
            return [Event("rejected", strategy.name, "hot", symbol, bar_time, message="max_open_positions")]
        return []


def test_trading_hook_after_all_rules_stepped(env):
    trader = strategy(env.tmp, HEAT + "execute: paper\n")
    quiet = strategy(env.tmp, HEAT.replace("name: heat", "name: quiet"), "quiet.yaml")

    async def main():
        runner = env.runner([trader, quiet])
        runner.trading = FakeTrading(env.store)
        for n in range(8):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()
        return runner.trading.calls

    calls = run(main())
    assert {c[0] for c in calls} == {"heat"}  # only strategies with execute:
    assert len(calls) == 8 * len(env.symbols)
    for _name, _symbol, bar, newest, _kinds, other in calls:
        assert newest and other == bar  # the newest bar, after every strategy stepped it
    rejected = env.store.events(kind="rejected")
    assert rejected and rejected[0].message == "max_open_positions"
    assert not [k for k in env.jsonl() if k.endswith("/rejected")]


def test_four_hour_strategy_runs_at_its_own_closes(env):
    four = strategy(
        env.tmp, HEAT.replace("name: heat", "name: slow").replace("interval: 1h", "interval: 4h"), "slow.yaml"
    )
    for sym in env.symbols:
        s = generate_series(BARS // 4, seed=9)
        s["funding.close"] = pattern(BARS // 4, 3)
        env.market.set_series(sym, "4h", s, START)
    hourly = strategy(env.tmp)

    async def main():
        runner = env.runner([hourly, four])
        reports = [await env.cycle(runner, T0 + n * H) for n in range(9)]
        await runner.aclose()
        return reports

    reports = run(main())
    assert [("slow" in r.bars) for r in reports] == [n % 4 == 0 for n in range(9)]
    assert all("heat" in r.bars for r in reports)


class SlowSource(Source):
    """An in-memory source whose fetch can take fake time (to overrun a bar), or wait for the test:
    with ``gate`` set, each fetch sets ``entered`` and waits until the test opens the gate."""

    name = "slow"

    def __init__(self, options=None, ctx=None):
        super().__init__(options, ctx)
        self.fake_delay = 0.0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.requests: list[FetchRequest] = []

    @classmethod
    def provides(cls, options):
        return frozenset({"funding.close", "price.close"})

    async def fetch(self, request):
        self.requests.append(request)
        if self.fake_delay:
            delay, self.fake_delay = self.fake_delay, 0.0
            await self.ctx.clock.sleep(delay)
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        times = np.arange(request.start, request.end + 1, H, dtype=np.int64)
        i = (times - START) // H
        return Frame(times, {"funding.close": pattern(BARS)[i], "price.close": 100.0 + i})


def slow_runner(env: Env, **options) -> tuple[Runner, SlowSource]:
    strat = strategy(env.tmp, HEAT.replace("version: 1", "version: 1\nsource: slow"))
    env.registry.sources["slow"] = SlowSource
    runner = env.runner([strat], **options)
    return runner, runner.sources["slow"]


def test_source_timeout_is_a_failure(env):
    async def main():
        runner, src = slow_runner(env, source_timeout=0.2)
        src.gate = asyncio.Event()  # never opened: the fetch outlasts the timeout
        report = await env.cycle(runner, T0)
        await runner.aclose()
        return report

    report = run(main())
    assert report.failed and "timed out after 0.2s" in report.failures[0]
    assert env.store.events() == []


def test_run_forever_aligns_to_bar_closes_and_skips_ahead_after_an_overrun(env, caplog):
    async def main():
        runner, src = slow_runner(env)
        env.clock.now = T0 / 1000 + 1234  # mid-bar: the first cycle runs at once, the next at a close
        seen = []
        await runner.run_forever(max_cycles=2, handle_signals=False, on_cycle=lambda r: seen.append(r.time))
        src.fake_delay = 2.5 * 3600  # this cycle overruns two bars
        await runner.run_forever(max_cycles=2, handle_signals=False, on_cycle=lambda r: seen.append(r.time))
        await runner.aclose()
        return seen, src.requests

    with caplog.at_level(logging.WARNING, logger="perpwatch.live.runner"):
        seen, requests = run(main())
    assert seen[0] == T0 / 1000 + 1234
    assert seen[1] == (T0 + H) / 1000 + SETTLE
    assert seen[2] == (T0 + 2 * H) / 1000 + SETTLE
    # after the overrun: one cycle straight away for the newest bar (no pile-up), catching up 2 bars
    assert seen[3] == seen[2] + 2.5 * 3600
    assert any("past the next bar close" in r.getMessage() for r in caplog.records)
    assert (
        requests[-1].end == T0 + 3 * H
        and requests[-1].end - requests[-1].start > requests[0].end - requests[0].start
    )
    assert env.store.last_processed("heat") == T0 + 3 * H


def test_stop_finishes_the_cycle_and_flushes(env):
    async def main():
        runner, src = slow_runner(env)
        src.gate = asyncio.Event()
        task = asyncio.create_task(runner.run_forever(handle_signals=False))
        await src.entered.wait()  # inside the first cycle's fetch
        runner.stop()
        src.gate.set()
        await asyncio.wait_for(task, 5)
        await runner.aclose()

    run(main())
    assert env.store.last_processed("heat") == T0 - H  # the cycle in flight completed
    assert env.store.pending_count() == 0


# --- the command line ----------------------------------------------------------------------------


NOW = T0 / 1000 + 1800  # the clock of the command-line subprocesses: half an hour into the T0 bar


def perpwatch(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``perpwatch ARGS`` in a subprocess whose clock stands still at NOW."""
    return run_perpwatch(*args, env=env, cwd=cwd, now=NOW)


@pytest.fixture
def live_market():
    """A fake market with history up to NOW (the subprocesses' clock); BTC's funding is hot at every
    bar, so the first cycle fires heat/hot for BTC at the newest closed bar, T0 - 1h."""
    with FakeMarket(api_key=KEY, clock=FakeClock(NOW)) as m:
        for k, sym in enumerate(("BTC", "ETH")):
            series = generate_series(402, seed=k)
            if sym == "BTC":
                series["funding.close"] = np.full(402, 0.1)
            m.set_series(sym, "1h", series, T0 - 400 * H)
        yield m


def write_cli_files(tmp: Path, market: FakeMarket) -> tuple[Path, Path]:
    (tmp / "heat.yaml").write_text(HEAT.replace("notify: [file, hook]", "notify: [file]"))
    cfg = tmp / "perpwatch.yaml"
    cfg.write_text(
        "symbols: [BTC, ETH]\n"
        f"state: {tmp / 'state.db'}\n"
        "sources:\n"
        f"  coinglass: {{base_url: '{market.base_url}', api_key: '${{CG_TEST_KEY}}', retries: 0}}\n"
        "notifiers:\n"
        f"  file: {{plugin: jsonl, path: '{tmp / 'events.jsonl'}'}}\n"
    )
    return tmp / "heat.yaml", cfg


def test_once_exit_codes_and_events_command(tmp_path, live_market):
    strat, cfg = write_cli_files(tmp_path, live_market)
    keyenv = {"CG_TEST_KEY": KEY}
    ok = perpwatch("run", str(strat), "--once", "--config", str(cfg), env=keyenv)
    assert ok.returncode == 0, ok.stderr
    assert "source coinglass" in ok.stderr and "state:" in ok.stderr and "1h bars" in ok.stderr
    live_market.fail("/price/history", "500", times=None)
    again = perpwatch("run", str(strat), "--once", "--config", str(cfg), env=keyenv)
    assert again.returncode == 0
    assert "nothing new" in again.stderr  # the same clock, the same bar: that bar is done, no repeat
    fresh = str(tmp_path / "other.db")
    bad = perpwatch("run", str(strat), "--once", "--config", str(cfg), "--state", fresh, env=keyenv)
    assert bad.returncode == 1
    assert "HTTP 500" in bad.stderr
    listing = perpwatch("events", "--config", str(cfg), "--json", env=keyenv)
    assert listing.returncode == 0
    rows = json.loads(listing.stdout)
    assert [(r["key"], r["message"], r["recorded_at"]) for r in rows] == [
        (f"heat/hot/BTC/{T0 - H}/fired", "BTC funding 0.100", NOW)
    ]
    assert [(d["notifier"], d["status"]) for d in rows[0]["deliveries"]] == [("file", "delivered")]


def test_bad_input_exits_2(tmp_path, live_market):
    strat, cfg = write_cli_files(tmp_path, live_market)
    (tmp_path / "broken.yaml").write_text("version: 1\nname: x\nrules: []\nbogus: 1\n")
    for args in (
        ["run", str(tmp_path / "missing.yaml"), "--once"],
        ["run", str(tmp_path / "broken.yaml"), "--once"],
        ["run", str(strat), "--once", "--config", str(tmp_path / "nope.yaml")],
        ["run", str(strat), "--once", "--param", "nope=1"],
        ["events", "--state", str(tmp_path / "none.db")],
        ["mute", "heat", "--for", "soon", "--state", str(tmp_path / "none.db")],
    ):
        result = perpwatch(*args, env={"CG_TEST_KEY": KEY})
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_mute_cli_roundtrip(tmp_path):
    db = tmp_path / "s.db"
    store = StateStore(str(db))
    from perpwatch.evaluation.rules import RuleState

    store.save_rule_state("heat", "hot", "BTC", RuleState())
    store.close()
    out = perpwatch("mute", "hot", "--symbol", "BTC", "--for", "2h", "--state", str(db))
    assert out.returncode == 0 and "muted heat/hot BTC until" in out.stdout
    store = StateStore(str(db))
    now = NOW  # the clock the mute command ran at
    assert store.is_muted("heat", "hot", "BTC", now) and not store.is_muted("heat", "hot", "ETH", now)
    assert store.is_muted("heat", "hot", "BTC", now + 7100) and not store.is_muted(
        "heat", "hot", "BTC", now + 7300
    )
    store.close()
    assert perpwatch("unmute", "heat/hot", "--state", str(db)).returncode == 0
    again = perpwatch("unmute", "heat/hot", "--state", str(db))
    assert again.returncode == 2 and "was not muted" in again.stderr


def read_until(stream, text: str) -> str:
    """The lines of ``stream`` up to the first one holding ``text`` (everything, at end of file)."""
    lines = []
    for line in iter(stream.readline, ""):
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_sigterm_and_sigint_finish_the_cycle_and_exit_0(tmp_path, live_market):
    strat, cfg = write_cli_files(tmp_path, live_market)
    for sig in (signal.SIGTERM, signal.SIGINT):
        state = tmp_path / f"{sig.name}.db"
        live_market.reset_requests()
        live_market.fail("/api/futures/", "hold", times=None)  # every fetch waits for release()
        proc = subprocess.Popen(
            [*perpwatch_command(now=NOW), "run", str(strat), "--config", str(cfg), "--state", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CG_TEST_KEY": KEY},
        )
        watchdog = threading.Timer(60, proc.kill)  # a hang fails the test rather than blocking it
        watchdog.start()
        try:
            line = proc.stderr.readline()  # the banner: the runner is built, the first cycle starts
            assert line.startswith("perpwatch run:"), line
            live_market.wait_for("/api/futures/")  # inside the first cycle's fetches
            proc.send_signal(sig)
            taken = read_until(proc.stderr, "finishing the cycle")  # the runner has the signal ...
            live_market.release()  # ... and only now do its fetches get their answers
            _, rest = proc.communicate()
        finally:
            watchdog.cancel()
        assert proc.returncode == 0, taken + rest
        assert "finishing the cycle" in taken
        store = StateStore(str(state))
        assert store.last_processed("heat") == T0 - H  # the cycle in flight completed
        store.close()


def test_default_source_and_symbols(tmp_path, monkeypatch):
    strat = strategy(tmp_path, HEAT.replace("notify: [file, hook]\n", ""))
    store = StateStore(":memory:")
    registry = load_registry()
    monkeypatch.delenv("COINGLASS_API_KEY", raising=False)
    runner = Runner.build([strat], Config(), registry, store)
    assert list(runner.sources) == ["binance"] and runner.jobs[0].symbols == ["BTC", "ETH"]
    assert list(runner.notifiers) == ["console"]
    monkeypatch.setenv("COINGLASS_API_KEY", "k")
    runner = Runner.build([strat], Config(symbols=["SOL"]), registry, store)
    assert list(runner.sources) == ["coinglass"] and runner.jobs[0].symbols == ["SOL"]
    text = HEAT.replace("notify: [file, hook]\n", "").replace("interval: 1h", "interval: 1h\nsymbols: [DOGE]")
    own = strategy(tmp_path, text, "own.yaml")
    assert Runner.build([own], Config(symbols=["SOL"]), registry, store).jobs[0].symbols == ["DOGE"]
    store.close()


def test_a_broken_evaluation_holds_only_its_symbol(env, monkeypatch):
    import perpwatch.live.stepping as stepping_module

    real = stepping_module.evaluate_last

    def flaky(strategy, frame, symbol):
        if symbol == "ETH":
            raise ZeroDivisionError("boom")
        return real(strategy, frame, symbol)

    monkeypatch.setattr(stepping_module, "evaluate_last", flaky)
    strat = strategy(env.tmp)

    async def main():
        runner = env.runner([strat])
        reports = [await env.cycle(runner, T0 + n * H) for n in range(6)]
        await runner.aclose()
        return reports

    reports = run(main())
    assert all(r.failures == ["heat ETH: evaluation failed"] for r in reports)
    assert not [e for e in env.store.events() if e.symbol == "ETH"]
    meta = [e for e in env.store.events() if e.strategy == "perpwatch"]
    assert [(e.rule, e.kind) for e in meta] == [("cycle_failed", "fired")]  # once, while it lasts
    assert [e.key for e in env.store.events() if e.strategy != "perpwatch"] == reference(
        strat, env.series["BTC"], "BTC", T0 - H, T0 + 4 * H
    )


def test_a_failed_cycle_is_rolled_back_and_retried(env, monkeypatch, caplog):
    async def main():
        runner, _ = slow_runner(env)
        real = env.store.set_processed
        calls = []

        def once_broken(*args):
            calls.append(args)
            if len(calls) == 1:
                raise OSError("disk full")
            real(*args)

        monkeypatch.setattr(env.store, "set_processed", once_broken)
        seen = []
        await runner.run_forever(max_cycles=1, handle_signals=False, on_cycle=lambda r: seen.append(r.time))
        await runner.aclose()
        return seen

    with caplog.at_level(logging.ERROR, logger="perpwatch.live.runner"):
        seen = run(main())
    assert any("rolled back (retrying in 30s): OSError: disk full" in r.getMessage() for r in caplog.records)
    assert seen == [T0 / 1000 + SETTLE + 30]
    assert env.store.last_processed("heat") == T0 - H
    assert len({e.key for e in env.store.events()}) == len(env.store.events())


def test_real_trading_layer_with_the_paper_executor(env):
    text = HEAT.replace(
        "    notify_resolved: true\n", "    notify_resolved: true\n    signal: {side: long, size_usd: 1000}\n"
    )
    strat = strategy(env.tmp, text + "execute: paper\n")

    async def main():
        runner = env.runner([strat])
        assert runner.trading is not None and list(runner.executors) == ["paper"]
        for n in range(8):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()

    run(main())
    traded = env.store.events(kind="order") + env.store.events(kind="rejected")
    fired = [e for e in env.store.events(kind="fired") if e.rule == "hot"]
    assert fired and traded
    assert {(e.symbol, e.time) for e in traded} <= {(e.symbol, e.time) for e in fired}
    assert not [k for k in env.jsonl() if k.endswith("/order") or k.endswith("/rejected")]


def test_trading_gets_price_and_funding_even_when_no_rule_names_them(env):
    """The paper executor fills at price.close and settles funding.close; the runner fetches both
    for a strategy with ``execute:`` although its rules only read open interest."""
    text = """
version: 1
name: oi-only
interval: 1h
rules:
  - name: oi_up
    when: oi.close > 0
    signal: {side: long, size_usd: 1000}
execute: paper
notify: [file]
"""
    strat = strategy(env.tmp, text, "oi-only.yaml")

    async def main():
        runner = env.runner([strat])
        for n in range(4):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()

    run(main())
    orders = env.store.events(kind="order")
    rejected = env.store.events(kind="rejected")
    assert not rejected, [e.message for e in rejected]
    assert {e.symbol for e in orders} == set(env.symbols)
    for e in orders:
        assert e.values["price"] > 1000 and e.values["fills"], e.message


# the time of the cycle for bar T0 + 2h, which ETH's failing source holds
HELD_AT = (T0 + 3 * H) / 1000 + SETTLE


async def three_good_bars_then_eth_down(env: Env, runner: Runner) -> None:
    for n in range(3):
        await env.cycle(runner, T0 + n * H)
    env.market.fail("/api/futures/", "500", times=None, symbol="ETH")


def test_held_symbols_are_retried_within_the_bar_with_growing_delays(env):
    strat, t = strategy(env.tmp), HELD_AT

    async def main():
        runner = env.runner([strat])
        await three_good_bars_then_eth_down(env, runner)
        first = await env.cycle(runner, T0 + 3 * H)
        assert first.failed and runner.next_retry(t) == t + 60
        assert env.store.load_rule_state("heat", "hot", "ETH").last_bar == T0 + H  # held
        assert env.store.load_rule_state("heat", "hot", "BTC").last_bar == T0 + 2 * H
        early = await runner.run_cycle(t + 30)
        assert early.fetches == 0 and not runner.has_work(t + 59)
        again = await runner.run_cycle(t + 60)  # still down: only ETH is fetched, the delay doubles
        assert again.fetches == 1 and again.failed and runner.next_retry(t + 60) == t + 180
        env.market.clear_faults()
        fixed = await runner.run_cycle(t + 180)
        assert fixed.fetches == 1 and not fixed.failed and fixed.bars == {"heat": T0 + 2 * H}
        assert env.store.load_rule_state("heat", "hot", "ETH").last_bar == T0 + 2 * H  # caught up in the bar
        assert runner.next_retry(t + 180) is None and not runner.has_work(t + 3000)
        for n in range(4, 8):
            await env.cycle(runner, T0 + n * H)
        await runner.aclose()

    run(main())
    expected = []
    for sym in env.symbols:
        expected += reference(strat, env.series[sym], sym, T0 - H, T0 + 6 * H)
    assert sorted(e.key for e in env.store.events()) == sorted(expected)
    assert sorted(env.jsonl()) == sorted(notified(expected))


def test_a_restart_retries_the_held_symbols_at_once(env):
    strat, t = strategy(env.tmp), HELD_AT

    async def main():
        runner = env.runner([strat])
        await three_good_bars_then_eth_down(env, runner)
        await env.cycle(runner, T0 + 3 * H)
        await runner.aclose()
        env.market.clear_faults()
        restarted = env.runner([strat])
        assert restarted.has_work(t + 1)
        report = await restarted.run_cycle(t + 1)
        await restarted.aclose()
        return report

    report = run(main())
    assert report.fetches == 1 and not report.failed
    assert env.store.load_rule_state("heat", "hot", "ETH").last_bar == T0 + 2 * H


def test_run_forever_wakes_for_the_retry(env):
    strat, t = strategy(env.tmp), HELD_AT

    async def main():
        runner = env.runner([strat])
        await three_good_bars_then_eth_down(env, runner)
        env.clock.now = t
        seen = []

        def on_cycle(report):
            seen.append((report.time, report.fetches, report.failed))
            env.market.clear_faults()

        await runner.run_forever(max_cycles=3, handle_signals=False, on_cycle=on_cycle)
        await runner.aclose()
        return seen

    assert run(main()) == [(t, 2, True), (t + 60, 1, False), (t + 3600, 2, False)]


# --- errors keep their cause: a traceback at DEBUG level, and a failed cycle (run --once exits 1) ------


class BrokenSource(SlowSource):
    """A source plugin whose constructor fails with something that is not a perpwatch error."""

    def __init__(self, options=None, ctx=None):
        raise ValueError(f"cannot use the key {KEY}")


def debug_tracebacks(caplog) -> list[type]:
    return [r.exc_info[0] for r in caplog.records if r.name == "perpwatch.live.runner" and r.exc_info]


def test_a_plugin_constructor_failure_is_logged_with_its_traceback(env, caplog):
    from perpwatch.common.errors import PerpwatchError

    strat = strategy(env.tmp, HEAT.replace("version: 1", "version: 1\nsource: broken"))
    env.registry.sources["broken"] = BrokenSource
    with (
        caplog.at_level(logging.DEBUG, logger="perpwatch.live.runner"),
        pytest.raises(PerpwatchError) as raised,
    ):
        Runner.build([strat], env.config(), env.registry, env.store, env.clock, secrets=[KEY])
    assert str(raised.value) == "source 'broken': cannot use the key ***"
    assert debug_tracebacks(caplog) == [ValueError]


def test_an_unexpected_source_exception_fails_the_cycle_with_its_traceback(env, caplog):
    async def broken_fetch(request):
        raise KeyError("funding")

    async def main():
        runner, src = slow_runner(env)
        src.fetch = broken_fetch
        report = await env.cycle(runner, T0)
        await runner.aclose()
        return report

    with caplog.at_level(logging.DEBUG, logger="perpwatch.live.runner"):
        report = run(main())
    assert report.failed and len(report.failures) == 2
    assert all("unexpected KeyError" in f for f in report.failures)
    assert debug_tracebacks(caplog) == [KeyError, KeyError]  # one per symbol
    assert env.store.events() == []


class BrokenTrading(FakeTrading):
    async def on_bar(self, strategy, symbol, bar_time, ev, i, events, exit_bars=1):
        raise RuntimeError("the executor lost track of its positions")


def test_a_trading_failure_fails_the_cycle_with_its_traceback(env, caplog):
    strat = strategy(env.tmp, HEAT + "execute: paper\n")

    async def main():
        runner = env.runner([strat])
        runner.trading = BrokenTrading(env.store)
        report = await env.cycle(runner, T0)
        await runner.aclose()
        return report

    with caplog.at_level(logging.DEBUG, logger="perpwatch.live.runner"):
        report = run(main())
    assert report.failed
    assert report.failures == ["heat BTC: trading failed", "heat ETH: trading failed"]
    assert debug_tracebacks(caplog) == [RuntimeError, RuntimeError]
    assert env.store.last_processed("heat") == T0 - H  # the rules' own work is committed
