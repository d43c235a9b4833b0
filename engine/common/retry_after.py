"""``Retry-After``: how long a server asks us to wait, from a header or a JSON field."""

from __future__ import annotations

import email.utils
import math


def retry_after_seconds(value: object, now: float) -> float | None:
    """Seconds to wait from ``now`` (epoch seconds) for a Retry-After value, or None if it says nothing usable.

    ``value`` is a number of seconds (a number or a numeric string) or an HTTP date; negative waits
    and dates in the past give 0. Empty, unparsable and non-finite values, and booleans, give None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value)) if math.isfinite(value) else None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None
