"""Terminal safety: text from strategy files, data and servers reaches no human-facing output with
its control characters (``perpwatch.common.text.printable``), while JSON output keeps it exact."""

from __future__ import annotations

import json
import logging
import random
import re
import time
from pathlib import Path

import pytest
from helpers import invoke

from perpwatch.common.text import printable
from perpwatch.evaluation.events import Event
from perpwatch.live.state import StateStore

#: Clears the screen, retitles the window, paints red, moves the cursor: what a hostile server sends.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m\x9b1A\rover\x08\x00\u202egnp.exe\u2028next"
#: Anything of these in a line of output means a control character got through.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def assert_clean(text: str) -> None:
    assert not CONTROL.search(text), f"a control character in {text!r}"


# --- the helper ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, 0.05% > 1.5x!", "plain text, 0.05% > 1.5x!"),
        ("\x1b[1;31mred\x1b[0m", "red"),  # CSI sequences go whole, not leaving "[31m"
        ("\x1b]0;title\x07after", "after"),  # OSC (window title), BEL-terminated
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST-terminated
        ("\x1bPq#0;2;0\x1b\\x", "x"),  # DCS (sixel)
        ("\x1b(Bx\x1bcy\x1b7z", "xyz"),  # charset designation, reset, save cursor
        ("\x9b2Jx", "x"),  # the one-byte C1 CSI
        ("two\nlines", "two lines"),
        ("a\r\n\t\x00\x7fb", "a b"),  # a run of controls is one space
        ("over\rwrite", "over write"),
        ("bi\u202edi\u2066x\u2069", "bi di x "),
        ("line\u2028sep", "line sep"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("BTC · 資金 🚀 é", "BTC · 資金 🚀 é"),  # printable Unicode stays
        ("trailing escape \x1b", "trailing escape "),
    ],
)
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_multiline_keeps_only_the_newlines() -> None:
    assert printable("a\x1b[31m\nb\r\nc\rd", multiline=True) == "a\nb\nc d"
    assert printable(HOSTILE, multiline=True).count("\n") == 0  # U+2028 is no newline here


def test_no_control_character_survives_random_text() -> None:
    rng = random.Random(12)
    alphabet = [chr(c) for c in range(0, 0xA0)] + ["\u202e", "\u2066", "\u2028", "\ud800", "é", "資"]
    for _ in range(2000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        shown = printable(raw)
        assert_clean(shown)
        assert "\n" not in shown
        assert printable(shown) == shown  # idempotent: clean text is left alone
        multi = printable(raw, multiline=True)
        assert_clean(multi)
        assert multi.count("\n") == raw.replace("\r\n", "\n").count("\n")


def test_long_unterminated_sequences_stay_linear() -> None:
    """Each pattern scans forward only: two megabytes of half-open sequences take one pass (a
    backtracking pattern would take hours here; the bound is CPU time, generous on any machine)."""
    text = ("\x1b[" + "1;" * 1000 + "\x1b]" + "x" * 1000 + "\x9b" + "0" * 1000) * 700
    start = time.process_time()
    assert printable(text) == ""  # everything here was part of an escape sequence
    assert printable(text.replace("\x1b", "\x07"), multiline=True).startswith(" [1;1;")
    assert time.process_time() - start < 5


# --- perpwatch events --------------------------------------------------------------------------------


def hostile_event(**changes: object) -> Event:
    fields: dict = dict(
        kind="fired",
        strategy="s",
        rule="r",
        symbol="BTC",
        time=1_722_830_400_000,
        severity="high",
        message=f"funding max on {HOSTILE}",
        values={"funding.max_exchange": HOSTILE},
        signal=None,
        interval="1h",
    )
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


def test_events_text_is_printable_and_json_is_exact(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    store = StateStore(db)
    event_id = store.record_event(hostile_event())
    assert event_id is not None
    store.enqueue(event_id, "hook", now=0)
    store.mark_failed(event_id, "hook", f"HTTP 500: {HOSTILE}", now=0)
    store.close()

    shown = invoke("events", "--state", db)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) == 2  # the event and its one delivery: nothing forged a line
    for line in lines:
        assert_clean(line)
    assert "funding max on red over gnp.exe next" in lines[0]
    assert "HTTP 500: red over gnp.exe next" in lines[1]

    data = invoke("events", "--state", db, "--json")
    rows = json.loads(data.output)
    assert rows[0]["message"] == f"funding max on {HOSTILE}"  # data stays exact
    assert rows[0]["values"]["funding.max_exchange"] == HOSTILE
    assert rows[0]["deliveries"][0]["last_error"] == f"HTTP 500: {HOSTILE}"
    assert "\x1b" not in data.output  # json.dumps escapes it


# --- test and explain --------------------------------------------------------------------------------

STRATEGY = """\
version: 1
name: ex
interval: 1h
symbols: [BTC]
rules:
  - name: spread
    when: funding.max > 0.01 and not is_missing(funding.max_exchange)
    message: "short {funding.max_exchange}"
"""

TESTFILE = """\
strategy: ex.yaml
tests:
  - name: "hostile \\e[2J labels"
    series:
      funding.max: "0.02x3"
      funding.max_exchange: ["Bybit", "\\e[2J\\e]0;pwned\\aBinance\\r\\nforged line", "OKX"]
    expect:
      - at: 1
        values: {funding.max_exchange: "\\e[31mBybit\\nforged"}
"""


def write_test_files(tmp_path: Path) -> Path:
    (tmp_path / "ex.yaml").write_text(STRATEGY)
    path = tmp_path / "ex.test.yaml"
    path.write_text(TESTFILE)
    return path


def test_test_failures_are_printable(tmp_path: Path) -> None:
    path = write_test_files(tmp_path)
    result = invoke("test", path)
    assert result.exit_code == 1, result.output
    for line in result.output.splitlines():
        assert_clean(line)
    assert not any(line.startswith("forged") for line in result.output.splitlines())
    assert "expected: Bybit forged" in result.output
    assert "actual:   Binance forged line" in result.output


def test_explain_is_printable(tmp_path: Path) -> None:
    path = write_test_files(tmp_path)
    result = invoke("explain", path, "--at", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for line in lines:
        assert_clean(line)
    assert "  funding.max_exchange = Binance forged line" in lines
    assert not any(line.startswith("forged") for line in lines)


# --- log lines and the console notifier ------------------------------------------------------------


def test_run_log_lines_are_printable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perpwatch.cli.run import setup_logging

    handlers = setup_logging(frozenset({"sekrit"}), str(tmp_path / "run.log"), False)
    try:
        log = logging.getLogger("perpwatch.live.runner")
        log.warning("notifier %s: not delivered: %s", "hook", f"HTTP 502 sekrit {HOSTILE}\n2024 INFO forged")
        try:
            raise ValueError(f"bad {HOSTILE}")
        except ValueError:
            log.error("cycle failed: %s", "boom\x1b[2J", exc_info=True)
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
    for text in (capsys.readouterr().err, (tmp_path / "run.log").read_text()):
        assert "sekrit" not in text
        lines = text.splitlines()
        for line in lines:
            assert_clean(line)
        assert not any(line.startswith("2024 INFO forged") for line in lines)
        assert "HTTP 502 *** red over gnp.exe next 2024 INFO forged" in text
        assert "Traceback (most recent call last):" in lines  # a traceback stays multi-line
        assert any(line.startswith("ValueError: bad red over") for line in lines)


def test_console_notifier_uses_the_same_helper(capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from perpwatch.plugins.console import ConsoleNotifier

    notifier = ConsoleNotifier()
    asyncio.run(notifier.deliver(hostile_event(symbol="BTC\x1b[2J")))
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert_clean(out.rstrip("\n"))
    assert "funding max on red over gnp.exe next" in out


def test_plugin_load_errors_are_printable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad \\x1b]0;pwned\\x07\\x1b[2Jplugin\\nforged line')\n")
    for args in (("plugins",), ("plugins", "-v")):
        text = invoke("--plugin", str(broken), *args)
        assert text.exit_code == 1, text.output  # a plugin failed to load (it is listed all the same)
        lines = text.stdout.splitlines()
        for line in lines:
            assert_clean(line)
        assert "  error: failed to load: RuntimeError: bad plugin forged line" in lines
        assert not any(line.startswith("forged") for line in lines)
