"""``perpwatch fetch`` against the local fake market: chunked requests, replay files that match what
the source returned, --metrics, and clean errors (exit 2 for bad input, 1 for a failed source)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from fakes.market import FakeMarket
from helpers import invoke

from perpwatch.api.interfaces import FetchRequest
from perpwatch.common.timeutil import HOUR, parse_time
from perpwatch.evaluation.frame import Frame
from perpwatch.plugins import replay_fetch as fetchcmd
from perpwatch.plugins.coinglass import CoinGlassSource
from perpwatch.plugins.replay import ReplaySource, load_replay_file

H4 = 4 * HOUR
T0 = parse_time("2025-01-01")
BARS = 300  # 2025-01-01 .. 2025-02-19
KEY = "cg-SECRET-0123456789"


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    with FakeMarket(api_key=KEY) as m:
        m.generate("BTC", "4h", T0, BARS, seed=1)
        m.generate("ETH", "4h", T0, BARS, seed=2)
        yield m


@pytest.fixture
def config(tmp_path: Path, market: FakeMarket, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("PERPWATCH_PLUGINS", "PERPWATCH_DISABLE_PLUGINS", "COINGLASS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CG_KEY", KEY)
    path = tmp_path / "perpwatch.yaml"
    path.write_text(
        "sources:\n"
        f"  coinglass: {{base_url: '{market.base_url}', api_key: '${{CG_KEY}}', plan: professional, retries: 0}}\n"
        f"  nokey: {{plugin: coinglass, base_url: '{market.base_url}', retries: 0}}\n"
        f"  binance: {{base_url: '{market.base_url}', retries: 0}}\n"
    )
    return path


def run(*args: str) -> Result:
    return invoke("fetch", *args)


def test_fetch_writes_replay_files_equal_to_the_source(
    tmp_path: Path, config: Path, market: FakeMarket
) -> None:
    out = tmp_path / "data"
    args = ["--source", "coinglass", "--symbols", "BTC,ETH", "--interval", "4h", "--from", "2025-01-01"]
    result = run(
        *args, "--to", "2025-02-01", "--out", str(out), "--config", str(config), "--chunk-bars", "50"
    )
    assert result.exit_code == 0, result.output
    assert (
        f"wrote {out / 'BTC_4h.csv'}: 186 bars 2025-01-01T00:00:00Z .. 2025-01-31T20:00:00Z, 23 metrics"
        in result.stdout
    )
    assert (out / "ETH_4h.csv").exists()
    price_pages = market.seen("/api/futures/price/history")
    assert len(price_pages) == 2 * 4  # 186 bars in chunks of 50, per symbol
    assert {int(s.params["limit"]) for s in price_pages} == {50, 36}
    assert KEY not in result.output

    # the file holds exactly what the source returns for the same range
    async def direct_fetch() -> Frame:
        source = CoinGlassSource({"base_url": market.base_url, "api_key": KEY, "plan": "professional"})
        try:
            request = FetchRequest("BTC", "4h", source.provides(), T0, parse_time("2025-02-01") - 1)
            return await source.fetch(request)
        finally:
            await source.aclose()

    direct = asyncio.run(direct_fetch())
    saved = load_replay_file(out / "BTC_4h.csv")
    assert np.array_equal(saved.times, direct.times)
    assert "funding.max" not in saved.columns  # a current snapshot only: no history to write
    for name, col in saved.columns.items():
        assert np.array_equal(col, direct.columns[name], equal_nan=True), name

    # ... and a backtest reads it offline through the replay source
    replay = ReplaySource({"path": str(out)})
    assert replay.provides() >= {"price.close", "oi.close", "liq.total_usd", "taker.buy_pct"}
    bars = asyncio.run(replay.fetch(FetchRequest("ETH", "4h", frozenset({"oi.close"}), T0, T0 + 5 * H4)))
    assert len(bars) == 6 and not np.isnan(bars.columns["oi.close"]).any()


def test_metrics_subset_and_default_symbols(tmp_path: Path, config: Path) -> None:
    result = run(
        "--source", "binance", "--interval", "4h", "--from", "2025-01-10", "--to", "2025-01-11",
        "--metrics", "price.close,taker.buy_pct", "--out", str(tmp_path), "--config", str(config),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for coin in ("BTC", "ETH"):  # the config's default symbols
        text = (tmp_path / f"{coin}_4h.csv").read_text().splitlines()
        assert text[0] == "time,price.close,taker.buy_pct"
        assert len(text) == 1 + 6 and text[1].startswith("2025-01-10T00:00:00Z,")


def test_a_failing_endpoint_exits_1_and_keeps_the_rest(
    tmp_path: Path, config: Path, market: FakeMarket
) -> None:
    market.fail("/open-interest/", "500", times=None)
    result = run(
        "--source", "coinglass", "--symbols", "BTC", "--interval", "4h", "--from", "2025-01-01",
        "--to", "2025-01-03", "--out", str(tmp_path), "--config", str(config),
    )  # fmt: skip
    assert result.exit_code == 1
    assert (
        "error: BTC: 2025-01-01T00:00:00Z .. 2025-01-02T20:00:00Z: coinglass /api/futures/open-interest/"
        in result.stderr
    )
    assert "HTTP 500" in result.stderr and "oi.close" in result.stderr
    saved = load_replay_file(tmp_path / "BTC_4h.csv")
    assert "oi.close" not in saved.columns and len(saved.columns["price.close"]) == 12


def test_a_source_that_cannot_answer_exits_1(tmp_path: Path, config: Path, market: FakeMarket) -> None:
    result = run(
        "--source", "nokey", "--symbols", "BTC", "--interval", "4h", "--from", "2025-01-01",
        "--to", "2025-01-03", "--out", str(tmp_path), "--config", str(config),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "coinglass needs an API key" in result.stderr
    assert not (tmp_path / "BTC_4h.csv").exists()
    market.fail("/api/", "bad_key", times=None)
    result = run(
        "--source", "coinglass", "--symbols", "BTC", "--interval", "4h", "--from", "2025-01-01",
        "--to", "2025-01-03", "--out", str(tmp_path), "--config", str(config),
    )  # fmt: skip
    assert result.exit_code == 1 and "Invalid API key" in result.stderr and KEY not in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "coinglas"], "no source 'coinglas' (did you mean: coinglass"),
        (
            ["--source", "binance", "--metrics", "oi.closee"],
            "does not provide 'oi.closee' (did you mean: oi.close?)",
        ),
        (
            ["--source", "binance", "--metrics", "liq.total_usd"],
            "source 'binance' does not provide 'liq.total_usd'",
        ),
        (["--source", "binance", "--from", "last tuesday"], "'last tuesday' is not a time"),
        (["--source", "binance", "--to", "2024-12-01"], "--to must be after --from"),
        (["--source", "binance", "--interval", "2h"], "'2h' is not one of"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, config: Path, extra: list[str], message: str) -> None:
    args = {"--interval": "4h", "--from": "2025-01-01", "--to": "2025-01-02", "--out": str(tmp_path)}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        args[flag] = value
    result = run(*[x for kv in args.items() for x in kv], "--config", str(config))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_config_errors_are_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    bad = tmp_path / "perpwatch.yaml"
    bad.write_text("sources:\n  coinglass: {api_key: '${NO_SUCH_VAR}'}\n")
    result = run("--source", "coinglass", "--interval", "4h", "--from", "2025-01-01", "--out", str(tmp_path),
                 "--config", str(bad))  # fmt: skip
    assert result.exit_code == 2
    assert f"{bad}:2:25: error: environment variable NO_SUCH_VAR is not set" in result.stderr


def test_bar_chunks() -> None:
    assert fetchcmd.bar_chunks(T0 + 1, T0 + 10 * H4, H4, 4) == [
        (T0 + H4, T0 + 4 * H4),
        (T0 + 5 * H4, T0 + 8 * H4),
        (T0 + 9 * H4, T0 + 10 * H4),
    ]
    assert fetchcmd.bar_chunks(T0, T0 + H4 - 1, H4, 1000) == [(T0, T0)]
    assert fetchcmd.bar_chunks(T0 + 1, T0 + 2, H4, 10) == []
