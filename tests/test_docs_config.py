"""docs/config.md stays true: its example config loads and checks, and it documents every option of
every built-in plugin and of ``runner:``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import ROOT

from perpwatch.api.registry import load_registry
from perpwatch.live.config import load_config

DOC = (ROOT / "docs" / "config.md").read_text()
BUILTIN = {
    "sources": ("coinglass", "binance", "replay"),
    "notifiers": ("console", "jsonl", "webhook", "telegram"),
    "executors": ("paper",),
}


def test_the_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = re.search(r"```yaml\n(.*?)```", DOC, re.S).group(1)
    for var in ("COINGLASS_API_KEY", "SLACK_WEBHOOK_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID"):
        monkeypatch.setenv(var, "https://hooks.example.net/x" if var == "SLACK_WEBHOOK_URL" else "12345:abc")
    path = tmp_path / "perpwatch.yaml"
    path.write_text(example)
    cfg = load_config(str(path), load_registry())
    assert cfg.symbols == ["BTC", "ETH", "SOL"]
    assert {n: i.plugin for n, i in cfg.sources.items()} == {
        "coinglass": "coinglass",
        "binance": "binance",
        "history": "replay",
    }
    assert {n: i.plugin for n, i in cfg.notifiers.items()} == {
        "console": "console",
        "log": "jsonl",
        "slack": "slack",
        "phone": "telegram",
        "am": "webhook",
    }
    assert cfg.route["routes"][0]["receivers"] == ["phone", "log"] and cfg.notify["repeat"]["high"] == "30m"
    assert "your-check-uuid" in " ".join(cfg.secrets)
    assert cfg.default_source() == "coinglass"
    assert "12345:abc" in cfg.secrets


@pytest.mark.parametrize("kind,name", [(k, n) for k, names in BUILTIN.items() for n in names])
def test_every_option_is_documented(kind: str, name: str) -> None:
    cls = getattr(load_registry(), kind)[name]
    options = cls.options_schema.get("properties", {})
    assert options, f"{name} declares no options"
    missing = [o for o in options if f"`{o}`" not in DOC]
    assert not missing, f"docs/config.md does not document {name}'s options {missing}"


def test_runner_options_are_documented() -> None:
    schema = json.loads((ROOT / "schemas" / "config.schema.json").read_text())
    options = schema["properties"]["runner"]["properties"]
    assert [o for o in options if f"`{o}`" not in DOC] == []
