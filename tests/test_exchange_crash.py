"""SIGKILL at seeded random points of an entry-with-stop sequence (issue 15 #5): a child process sends
the entry and its protective exits to the Binance USD-M stand-in and is killed while the stand-in
holds request k (carried out with its answer lost, or never carried out: a seeded draw); a second process on the
same journal then reconciles and acts on the same event again. Whatever k, the exchange never holds
a position without its stop, and no order is ever sent twice. The points: every request that
changes the account (leverage, margin type, entry, stop, take-profit) and ``POINTS`` more drawn with
``SEED`` from the whole request log; the synchronisation is the stand-in holding request k, no sleeps."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from fakes.binance_usdm import FakeBinanceUSDM

KEY = "crashkey-5d1c0e9a7b"
SECRET = "crashsecret-93f0a1b2c4d6"
SEED = 15
POINTS = 4

CHILD = r"""
import asyncio, json, sys
from perpwatch.api.interfaces import PluginContext
from perpwatch.evaluation.events import ExitDistance, OrderIntent
from perpwatch.plugins.exchange import ExchangeExecutor

async def main():
    urls, journal = json.loads(sys.argv[1]), sys.argv[2]
    ex = ExchangeExecutor(
        {"network": "testnet", "key_env": "PW_CRASH_KEY", "secret_env": "PW_CRASH_SECRET", "api_urls": urls,
         "leverage": 2, "journal": journal, "request_timeout_seconds": 60},
        PluginContext(state_path=None),
    )
    try:
        notices = await ex.reconcile()
        print(json.dumps({"notices": [(n.message, n.halt) for n in notices]}), flush=True)
        intent = OrderIntent("long", 1000.0, stop_loss=ExitDistance("pct", 2.0), take_profit=ExitDistance("pct", 5.0))
        fills = await ex.submit_once("trend/go_long/BTC/1700000000000/fired", "trend", "BTC", intent, 50000.0, 1)
        print(json.dumps({"fills": [(f.qty, f.info.get("exits_pending")) for f in fills]}), flush=True)
    finally:
        await ex.aclose()

asyncio.run(main())
"""


def child(fake: FakeBinanceUSDM, journal: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PW_CRASH_KEY": KEY, "PW_CRASH_SECRET": SECRET}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(fake.api_urls()), str(journal)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return out


def test_a_sigkill_anywhere_never_leaves_a_position_unprotected_nor_sends_twice(tmp_path: Path) -> None:
    with FakeBinanceUSDM(KEY, SECRET) as fake:  # the whole sequence once, to count its requests
        finish(child(fake, tmp_path / "count.sqlite"))
        total = len(fake.requests)
        assert fake.position("BTCUSDT") and len(fake.open_orders("BTCUSDT", algo=True)) == 2
        sends = [i + 1 for i, (m, _, _) in enumerate(fake.requests) if m == "POST"]
    rng = random.Random(SEED)
    # every request that changes the account (setup, entry, exits), plus seeded random others
    points = sorted(set(sends) | set(rng.sample(range(1, total + 1), POINTS)))
    for n, k in enumerate(points):
        carry_out = rng.random() < 0.7
        with FakeBinanceUSDM(KEY, SECRET) as fake:
            journal = tmp_path / f"journal-{n}.sqlite"
            fake.hold_at(k, carry_out=carry_out)
            proc = child(fake, journal)
            assert fake.held.wait(120), f"request {k} never came"
            held = fake.requests[k - 1][:2]
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
            fake.release()
            out = finish(child(fake, journal))  # the restart: reconcile, then the same event again
            where = f"killed at request {k} ({held}, carried out: {carry_out}); restart said {out}"
            sent = Counter(o.client_id for o in fake.orders)
            assert all(c == 1 for c in sent.values()), f"an order was sent twice: {sent}; {where}"
            entries = [o for o in fake.orders if o.client_id.startswith("pwe-")]
            assert len(entries) == 1, where
            position = fake.position("BTCUSDT")
            assert position == entries[0].executed, where
            if position:
                stops = {o.type: o for o in fake.open_orders("BTCUSDT", algo=True)}
                assert set(stops) == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}, where
                assert all(o.qty == position and o.reduce_only for o in stops.values()), where
            assert '"notices": []' in out or "true]" not in out.split("\n")[0], where  # no halt on restart
