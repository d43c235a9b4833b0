"""Which config file a command reads: ``--config``, ``PERPWATCH_CONFIG``, ``./perpwatch.yaml``, then
the user's config folder (``$XDG_CONFIG_HOME/perpwatch/`` or ``~/.config/perpwatch/``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import invoke

from perpwatch.common.errors import PerpwatchError
from perpwatch.live.config import find_config, load_config, user_config_path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working folder, a home and an XDG config folder, each with its own config (symbols tell them apart)."""
    work, home, xdg = tmp_path / "work", tmp_path / "home", tmp_path / "xdg"
    for folder in (work, home / ".config" / "perpwatch", xdg / "perpwatch"):
        folder.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PERPWATCH_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    files = {
        "cwd": work / "perpwatch.yaml",
        "home": home / ".config" / "perpwatch" / "perpwatch.yaml",
        "xdg": xdg / "perpwatch" / "perpwatch.yaml",
        "env": tmp_path / "from-env.yaml",
        "flag": tmp_path / "from-flag.yaml",
    }
    for symbol, (name, path) in zip(("BTC", "ETH", "SOL", "XRP", "DOGE"), files.items(), strict=True):
        path.write_text(f"symbols: [{symbol}]\nstate: {tmp_path / name}.db\n")
    return files


def symbols(path: str | None) -> list[str]:
    return load_config(path).symbols


def test_the_lookup_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(places["xdg"].parent.parent))
    monkeypatch.setenv("PERPWATCH_CONFIG", str(places["env"]))
    assert find_config(str(places["flag"])) == str(places["flag"])  # --config first
    assert find_config(None) == str(places["env"]) and symbols(find_config(None)) == ["XRP"]
    monkeypatch.delenv("PERPWATCH_CONFIG")
    assert find_config(None) == "perpwatch.yaml" and symbols(find_config(None)) == ["BTC"]
    places["cwd"].unlink()
    assert find_config(None) == str(places["xdg"]) and symbols(find_config(None)) == ["SOL"]
    monkeypatch.delenv("XDG_CONFIG_HOME")  # unset: ~/.config
    assert find_config(None) == str(places["home"]) and symbols(find_config(None)) == ["ETH"]
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # not absolute: ignored, as the XDG spec says
    assert user_config_path() == str(places["home"])
    places["home"].unlink()
    assert find_config(None) is None and symbols(None) == ["BTC", "ETH"]  # the defaults


def test_an_empty_perpwatch_config_is_unset(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPWATCH_CONFIG", "")
    assert find_config(None) == "perpwatch.yaml"


def test_perpwatch_config_naming_no_file_is_an_error(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = os.path.join(str(places["env"].parent), "nope.yaml")
    monkeypatch.setenv("PERPWATCH_CONFIG", missing)
    with pytest.raises(PerpwatchError, match=r"PERPWATCH_CONFIG names .*nope\.yaml, which does not exist"):
        find_config(None)
    result = invoke("events")  # through a command: one line, exit 2, never the next file in the order
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: PERPWATCH_CONFIG names {missing}, which does not exist (unset it, or fix the path)\n"
    )


def test_commands_read_the_config_from_the_user_folder(places: dict[str, Path], tmp_path: Path) -> None:
    places["cwd"].unlink()
    result = invoke("events")  # reads state: from ~/.config/perpwatch/perpwatch.yaml
    assert result.exit_code == 2
    assert f"no state database at {tmp_path / 'home'}.db" in result.stderr
