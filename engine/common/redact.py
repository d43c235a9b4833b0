"""Secret redaction: the one function every layer uses before showing text."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``.

    Longer secrets go first, so a secret that starts with another never leaves its tail visible.
    """
    for secret in sorted({s for s in secrets if s}, key=lambda s: (-len(s), s)):
        text = text.replace(secret, REDACTED)
    return text
