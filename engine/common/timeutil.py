"""Bar intervals, durations and timestamps (all times are integer milliseconds, UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

#: The strategy language's intervals, in milliseconds.
INTERVALS: dict[str, int] = {
    "1m": MINUTE,
    "3m": 3 * MINUTE,
    "5m": 5 * MINUTE,
    "15m": 15 * MINUTE,
    "30m": 30 * MINUTE,
    "1h": HOUR,
    "4h": 4 * HOUR,
    "6h": 6 * HOUR,
    "8h": 8 * HOUR,
    "12h": 12 * HOUR,
    "1d": DAY,
}

_UNITS = {"s": 1000, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*\Z")  # ASCII digits: \d would take "１h"


def interval_ms(interval: str) -> int:
    """Milliseconds in one bar of ``interval`` (KeyError for an unknown interval)."""
    return INTERVALS[interval]


def parse_duration(text: str) -> int:
    """``"90m"`` -> milliseconds. Raises ValueError with the accepted forms."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration; write a whole number and a unit: 30s, 15m, 2h, 1d, 1w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_time(value: object) -> int:
    """An ISO 8601 string (``Z`` or an offset; naive means UTC), a datetime or epoch ms -> ms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a time; write ISO 8601 such as 2024-08-05T00:00:00Z, or epoch milliseconds"
            ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_time(ms: int) -> str:
    """Epoch ms -> ``2024-08-05T04:00:00Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_to_bar(ms: int, step: int) -> int:
    """The open time of the bar that contains ``ms``."""
    return ms - ms % step
