"""The shared helpers in ``perpwatch.common``: redaction, JSON-safe values, Retry-After."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import numpy as np
import pytest

from perpwatch.common.jsonsafe import finite_or_none, jsonable
from perpwatch.common.redact import REDACTED, redact
from perpwatch.common.retry_after import retry_after_seconds

NOW = 1_763_137_800.0  # 2025-11-14 16:30 UTC


# --- redaction ----------------------------------------------------------------------------------


def test_redact_replaces_every_occurrence_of_every_secret() -> None:
    assert REDACTED == "***"
    assert redact("key=k1 token=t2 again k1", ["k1", "t2"]) == "key=*** token=*** again ***"
    assert redact("nothing to hide", []) == "nothing to hide"


@pytest.mark.parametrize("order", [("abc", "abcdef"), ("abcdef", "abc")])
def test_redact_a_secret_that_starts_with_another_leaves_no_tail(order: tuple[str, str]) -> None:
    # Replacing "abc" first would leave "***def": the longer secret's tail in the clear.
    assert redact("url=/x?k=abcdef&v=abc", order) == "url=/x?k=***&v=***"


def test_redact_skips_empty_secrets() -> None:
    # "".replace("", "***") would put *** between every character.
    assert redact("plain text", ["", "text"]) == "plain ***"
    assert redact("plain text", [""]) == "plain text"


def test_redact_takes_any_iterable_of_secrets() -> None:
    assert redact("a-b-c", frozenset({"a", "c"})) == "***-b-***"
    assert redact("a-b-c", (s for s in ("b",))) == "a-***-c"


# --- JSON-safe values ---------------------------------------------------------------------------


def test_jsonable_unwraps_numpy_and_nulls_non_finite_floats() -> None:
    value = {
        "f": np.float64(1.5),
        "i": np.int64(3),
        "b": np.bool_(True),
        "nan": float("nan"),
        "inf": np.float64("inf"),
        "arr": np.array([1.0, np.nan]),
        "tuple": (1, "x", None),
        "set": {2},
        7: "key made a string",
        "other": datetime(2025, 1, 1, tzinfo=UTC),
    }
    assert jsonable(value) == {
        "f": 1.5,
        "i": 3,
        "b": True,
        "nan": None,
        "inf": None,
        "arr": [1.0, None],
        "tuple": [1, "x", None],
        "set": [2],
        "7": "key made a string",
        "other": "2025-01-01 00:00:00+00:00",
    }
    assert type(jsonable(np.int64(3))) is int and type(jsonable(np.bool_(False))) is bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.25, 1.25),
        (3, 3.0),
        ("0.01", 0.01),
        (" 2 ", 2.0),
        (np.float64(-4.0), -4.0),
        (None, None),
        (True, None),
        ("", None),
        ("n/a", None),
        ([1], None),
        (float("nan"), None),
        ("inf", None),
        (-math.inf, None),
    ],
)
def test_finite_or_none(value: object, expected: float | None) -> None:
    assert finite_or_none(value) == expected


# --- Retry-After --------------------------------------------------------------------------------


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7", NOW) == 7.0
    assert (
        retry_after_seconds(format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), NOW) == 30.0
    )
    assert retry_after_seconds("soon", NOW) is None and retry_after_seconds(None, NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" 1.5 ", 1.5),
        ("-3", 0.0),  # never a negative wait
        (4, 4.0),  # a JSON number (Telegram's and Discord's retry_after)
        (0.25, 0.25),
        (-1, 0.0),
        ("", None),
        ("nan", None),
        ("inf", None),
        (float("inf"), None),
        (True, None),
        (format_datetime(datetime.fromtimestamp(NOW - 60, UTC), usegmt=True), 0.0),  # a date in the past
    ],
)
def test_retry_after_edge_cases(value: object, expected: float | None) -> None:
    assert retry_after_seconds(value, NOW) == expected


def test_no_collection_pauses_the_collector_and_restores_it_as_it_was():
    import gc

    from perpwatch.common.collector import no_collection, without_collection

    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), no_collection():
        assert not gc.isenabled()
        _ = 1 / 0
    assert gc.isenabled()  # restored after an error too
    gc.disable()
    try:
        with no_collection():
            pass
        assert not gc.isenabled()  # was off: stays off
    finally:
        gc.enable()
    assert without_collection(gc.isenabled)() is False
    assert gc.isenabled()
