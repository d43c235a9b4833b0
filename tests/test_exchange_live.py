"""The ``exchange`` executor inside ``perpwatch run``'s cycle (Runner): a fired signal becomes an
order on the Binance USD-M stand-in with its stop, reconciliation runs before the signals of every
cycle, and a position opened by hand halts trading with a recorded, critical event."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from fakes.binance_usdm import FakeBinanceUSDM
from helpers import H, write_csv

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.risk import halted
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore
from perpwatch.plugins.exchange_orders import client_order_id, exit_id

KEY, SECRET = "livekey-0a9b8c7d6e", "livesecret-1f2e3d4c5b6a"
T0 = 1_704_067_200_000
STEP = 4 * H
STRATEGY = (
    "version: 1\nname: prot\ninterval: 4h\nexecute: binance\nnotify: [log]\nrules:\n"
    "  - name: enter\n    when: oi.close == 1\n    signal:\n      side: long\n      size_usd: 1000\n"
    "      stop_loss: 2%\n"
)


def test_a_signal_trades_on_the_exchange_and_a_manual_position_halts(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("PW_LIVE_KEY", KEY)
    monkeypatch.setenv("PW_LIVE_SECRET", SECRET)
    bars = 5
    data = tmp_path / "data"
    data.mkdir()
    write_csv(
        data / "BTC_4h.csv",
        {
            "price.open": [50_000.0] * bars,
            "price.high": [50_100.0] * bars,
            "price.low": [49_900.0] * bars,
            "price.close": [50_000.0] * bars,
            "oi.close": [1.0 if i == 1 else 0.0 for i in range(bars)],
            "funding.close": [0.0] * bars,
        },
        T0,
        STEP,
    )
    (tmp_path / "prot.yaml").write_text(STRATEGY)

    async def go(fake: FakeBinanceUSDM) -> Any:
        store = StateStore(str(tmp_path / "live.db"))
        clock = FakeClock((T0 + 2 * STEP) / 1000)
        options = {
            "network": "testnet",
            "key_env": "PW_LIVE_KEY",
            "secret_env": "PW_LIVE_SECRET",
            "api_urls": fake.api_urls(),
            "leverage": 2,
        }
        cfg = Config(
            symbols=["BTC"],
            sources={"replay": Instance("replay", "replay", {"path": str(data)})},
            executors={"binance": Instance("binance", "exchange", options)},
            notifiers={"log": Instance("log", "jsonl", {"path": str(tmp_path / "alerts.jsonl")})},
        )
        runner = Runner.build(
            [load_strategy(str(tmp_path / "prot.yaml"))],
            cfg,
            load_registry(),
            store,
            clock,
            options=RunnerOptions(settle_seconds=0),
        )
        try:
            first = await runner.run_cycle(clock.now)  # bar 1 closed: the signal
            orders = [e for e in store.events() if e.kind == "order"]
            fake.open_by_hand("ETHUSDT", 2.0)
            clock.now = (T0 + 3 * STEP) / 1000
            second = await runner.run_cycle(clock.now)
            await runner.flush(30)
            return first, second, orders, store.events(), halted(store)
        finally:
            await runner.aclose()

    with FakeBinanceUSDM(KEY, SECRET) as fake:
        first, second, orders, events, note = asyncio.run(go(fake))
        assert not first.failures and not second.failures, (first.failures, second.failures)
        [order] = orders
        key = f"prot/enter/BTC/{T0 + STEP}/fired"
        entry = client_order_id("exchange", key, "entry")
        assert (
            order.values["fills"][0]["client_order_id"] == entry and order.values["fills"][0]["qty"] == 0.02
        )
        assert len(fake.orders_with(entry)) == 1 and fake.position("BTCUSDT") == Decimal("0.02")
        [stop] = fake.open_orders("BTCUSDT", algo=True)
        assert stop.client_id == exit_id(entry, "stop_loss") and stop.stop_price == Decimal("49000")
        [halt] = [e for e in events if e.kind == "halted"]
        assert (
            halt.rule == "reconcile:binance"
            and halt.severity == "critical"
            and "ETH/USDT:USDT" in halt.message
        )
        assert note is not None and "position mismatch on ETH/USDT:USDT" in note
        sent = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
        assert [e["kind"] for e in sent if e["kind"] == "halted"] == ["halted"]  # notified
        for blob in [str(e.to_dict()) for e in events] + [(tmp_path / "alerts.jsonl").read_text()]:
            assert KEY not in blob and SECRET not in blob
