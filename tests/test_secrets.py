"""Secrets from ``${ENV}`` never show: a full ``perpwatch run`` with faults that tempt a leak, then a
grep of everything it left (stdout, stderr, log file, state database dump, jsonl file, events)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
from fakes.hooks import FakeHooks
from fakes.market import FakeMarket, generate_series
from helpers import H, run_perpwatch

from perpwatch.common.clock import FakeClock

NOW_BAR = 1_722_470_400_000  # 2024-08-01T00:00Z: the bar open at NOW
NOW = NOW_BAR / 1000 + 1800  # the clock of the market and of every perpwatch subprocess
CG_KEY = "cgkey-5e3c1d9a7b2f4e60a1c8"
BOT_TOKEN = "777000111:AAHsecretTOKENvalue_x9"
HOOK_SECRET = "hdr-7f1e2d3c4b5a"

STRATEGY = """
version: 1
name: leaky
interval: 1h
symbols: [BTC, ETH]
rules:
  - name: hot
    when: funding.close > 0.05
    severity: high
    message: "{symbol} funding {funding.close:.3f}"
    notify_resolved: true
notify: [console, file, tg, hook]
"""


def perpwatch(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """``perpwatch ARGS`` in a subprocess whose clock stands still at NOW."""
    return run_perpwatch(*args, env=env, cwd=cwd, now=NOW, timeout=300)


def test_no_secret_in_any_output_of_a_full_run(tmp_path):
    now_bar = NOW_BAR
    start = now_bar - 300 * H
    with (
        FakeMarket(api_key=CG_KEY, clock=FakeClock(NOW)) as market,
        FakeHooks(telegram_token=BOT_TOKEN) as hooks,
    ):
        for k, sym in enumerate(("BTC", "ETH")):
            s = generate_series(302, seed=k)
            s["funding.close"] = np.array([0.1 if i % 5 in (1, 2) else 0.01 for i in range(302)])
            market.set_series(sym, "1h", s, start)
        # faults whose messages could carry the key or the token
        market.fail("/oi-weight-history", "envelope", times=2, code="400", msg=f"bad key {CG_KEY}")
        market.fail("/price/history", "500", times=3, symbol="ETH")
        hooks.telegram_fail(times=2, error_code=429, retry_after=1, path=f"/bot{BOT_TOKEN}")
        hooks.fail(times=2, status=500, body=f"echo {HOOK_SECRET} {BOT_TOKEN}", path="/hook")
        (tmp_path / "leaky.yaml").write_text(STRATEGY)
        (tmp_path / "perpwatch.yaml").write_text(
            "state: state.db\n"
            "sources:\n"
            f"  coinglass: {{base_url: '{market.base_url}', api_key: '${{COINGLASS_API_KEY}}', retries: 0}}\n"
            "notifiers:\n"
            "  console: {}\n"
            "  file: {plugin: jsonl, path: events.jsonl}\n"
            f"  tg: {{plugin: telegram, token: '${{TELEGRAM_BOT_TOKEN}}', chat_id: '42', base_url: '{hooks.base_url}'}}\n"
            f"  hook: {{plugin: webhook, url: '{hooks.url('/hook')}', headers: {{X-Auth: '${{HOOK_SECRET}}'}}}}\n"
        )
        env = {"COINGLASS_API_KEY": CG_KEY, "TELEGRAM_BOT_TOKEN": BOT_TOKEN, "HOOK_SECRET": HOOK_SECRET}
        sim_from = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now_bar - 30 * H) / 1000))
        sim_to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now_bar - 2 * H) / 1000))
        outputs = []
        sim = ["--simulate-from", sim_from, "--simulate-to", sim_to, "-v", "--log-file", "run.log"]
        result = perpwatch("run", "leaky.yaml", *sim, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
        once = perpwatch("run", "leaky.yaml", "--once", env=env, cwd=tmp_path)  # NOW's newest bar
        assert once.returncode == 0, once.stderr
        outputs += [once.stdout, once.stderr]
        # a bad key: the source's error is shown, the key is not
        market.fail("/api/futures/", "bad_key", times=None)
        bad = perpwatch("run", "leaky.yaml", "--once", "--state", "other.db", env=env, cwd=tmp_path)
        assert bad.returncode == 1
        outputs += [bad.stdout, bad.stderr]
        listing = perpwatch("events", "--json", "--limit", "1000", env=env, cwd=tmp_path)
        outputs += [listing.stdout, listing.stderr]
        outputs.append(perpwatch("events", "--limit", "1000", env=env, cwd=tmp_path).stdout)
        delivered_tg = hooks.telegram_texts()
        hook_requests = [r for r in hooks.requests if r.path == "/hook"]

    assert "(code 400: Invalid API key provided)" in bad.stderr  # the provider's answer, shown
    assert "HTTP 500" in result.stderr and "retry" in result.stderr.lower()
    rows = json.loads(listing.stdout)
    assert rows and any(
        d["notifier"] == "tg" and d["status"] == "delivered" for r in rows for d in r["deliveries"]
    )
    assert delivered_tg and hook_requests  # the secrets were really used
    assert all(r.headers.get("x-auth") == HOOK_SECRET for r in hook_requests)
    outputs.append((tmp_path / "run.log").read_text())
    outputs.append((tmp_path / "events.jsonl").read_text())
    for db in ("state.db", "other.db"):
        con = sqlite3.connect(tmp_path / db)
        outputs.append("\n".join(con.iterdump()))
        con.close()
    everything = "\n".join(outputs)
    assert "funding 0.100" in everything and "source coinglass" in everything
    assert "bad key ***" in everything  # the key was in an error message, and was hidden
    for secret in (CG_KEY, BOT_TOKEN, HOOK_SECRET):
        assert secret not in everything
    assert BOT_TOKEN.split(":")[1] not in everything
