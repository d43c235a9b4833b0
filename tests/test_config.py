"""The config file: ``${ENV}`` substitution and secrets, instances, and located errors for missing
variables, unknown plugins and bad plugin options."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpwatch.api.registry import Registry, load_registry
from perpwatch.common.errors import ErrorList, LocatedError, PerpwatchError
from perpwatch.live.config import DEFAULT_STATE, DEFAULT_SYMBOLS, Config, find_config, load_config

CG_KEY = "cg-0123456789abcdef"
TG_TOKEN = "123456:telegram-token-XYZ"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry()


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CG_KEY", CG_KEY)
    monkeypatch.setenv("TG_TOKEN", TG_TOKEN)
    monkeypatch.setenv("HOOK_HOST", "hooks.example.net")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.delenv("COINGLASS_API_KEY", raising=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "perpwatch.yaml"
    path.write_text(text)
    return str(path)


def errors_of(excinfo: pytest.ExceptionInfo) -> list[str]:
    e = excinfo.value
    return [err.format() for err in e.errors] if isinstance(e, ErrorList) else [e.format()]


def test_env_substitution_instances_and_secrets(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        """\
symbols: [BTC, SOL]
state: data/state.db
sources:
  coinglass: {api_key: "${CG_KEY}", exchanges: [Binance, OKX]}
  history: {plugin: replay, path: data/}
notifiers:
  ops: {plugin: telegram, token: "${TG_TOKEN}", chat_id: "42"}
  hook: {plugin: webhook, url: "https://${HOOK_HOST}/perpwatch"}
""",
    )
    cfg = load_config(path, registry)
    assert cfg.file == path and cfg.symbols == ["BTC", "SOL"] and cfg.state == "data/state.db"
    assert cfg.sources["coinglass"].options == {"api_key": CG_KEY, "exchanges": ["Binance", "OKX"]}
    history = cfg.source("history")
    assert (history.plugin, history.options) == ("replay", {"path": "data/"})
    assert cfg.notifiers["ops"].plugin == "telegram" and cfg.notifiers["ops"].options["token"] == TG_TOKEN
    assert cfg.notifiers["hook"].options["url"] == "https://hooks.example.net/perpwatch"
    # every value read from the environment, and every option marked secret (the webhook's url),
    # in the forms an echo may take; a one-word path like /perpwatch is no credential of its own
    assert cfg.secrets >= {CG_KEY, TG_TOKEN, "hooks.example.net", "https://hooks.example.net/perpwatch"}
    assert all("hooks.example.net" in s or "telegram-token" in s or s == CG_KEY for s in cfg.secrets)
    assert cfg.redact(f"GET /x?key={CG_KEY} token {TG_TOKEN}") == "GET /x?key=*** token ***"
    assert str(cfg.sources["history"].loc) == f"{path}:5:3"
    assert cfg.source("binance").plugin == "binance"  # an instance named like a plugin needs no entry


def test_no_config_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None) is None
    cfg = load_config(None)
    assert (cfg.symbols, cfg.state, cfg.sources) == (DEFAULT_SYMBOLS, DEFAULT_STATE, {})
    assert cfg.default_source() == "binance"
    monkeypatch.setenv("COINGLASS_API_KEY", CG_KEY)
    assert cfg.default_source() == "coinglass"
    (tmp_path / "perpwatch.yaml").write_text("symbols: [ETH]\n")
    assert find_config(None) == "perpwatch.yaml" and load_config(find_config(None)).symbols == ["ETH"]
    assert find_config("other.yaml") == "other.yaml"
    assert Config(sources={"only": None}).default_source() == "only"  # type: ignore[dict-item]


def test_a_missing_env_var_is_a_located_error(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "sources:\n  coinglass:\n    api_key: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(LocatedError) as e:
        load_config(path, registry)
    assert errors_of(e) == [
        f"{path}:3:14: error: environment variable NOT_SET_ANYWHERE is not set (it is used as ${{NOT_SET_ANYWHERE}})"
    ]


def test_bad_plugin_options_are_located(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        """\
sources:
  coinglass: {api_key: "${CG_KEY}", plan: gold}
  history: {plugin: replay, folder: data/}
  binance: {timeout: -1}
notifiers:
  ops: {plugin: telegramm, token: "${TG_TOKEN}"}
""",
    )
    with pytest.raises(ErrorList) as e:
        load_config(path, registry)
    lines = errors_of(e)
    assert lines[0].startswith(
        f"{path}:2:43: error: sources.coinglass.plan: 'gold' is not valid; choose one of: "
    )
    assert lines[1] == f"{path}:3:29: error: unknown key 'folder' in sources.history (valid keys: path)"
    assert lines[2] == f"{path}:4:22: error: sources.binance.timeout: -1 is out of range; it must be > 0"
    assert lines[3] == f"{path}:6:17: error: no notifier plugin named 'telegramm' (did you mean: telegram?)"
    assert len(lines) == 4
    assert not any(CG_KEY in line or TG_TOKEN in line for line in lines)


def test_an_option_error_never_shows_a_secret(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, 'sources:\n  coinglass: {api_key: "${CG_KEY}", plan: "${CG_KEY}"}\n')
    with pytest.raises(ErrorList) as e:
        load_config(path, registry)
    (line,) = errors_of(e)
    assert CG_KEY not in line and "'***' is not valid" in line


def test_schema_errors_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, "symbols: BTC\nstate: 5\nsourcez: {}\n")
    with pytest.raises(PerpwatchError) as e:
        load_config(path)
    lines = errors_of(e)
    assert f"{path}:1:10: error: symbols must be a list, not 'BTC'" in lines
    assert f"{path}:2:8: error: state must be a string, not 5" in lines
    assert any(line.startswith(f"{path}:3:1: error: unknown key 'sourcez'") for line in lines)
    not_a_mapping = write(tmp_path, "- BTC\n")
    with pytest.raises(LocatedError, match=r":1:1: error: a config file must be a YAML mapping"):
        load_config(not_a_mapping)
