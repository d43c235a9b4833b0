"""Secret redaction: the one function every layer uses before showing text, and the parts of a
secret that must be hidden on their own (a server that echoes a webhook URL's path quotes the
token without the host)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``.

    Longer secrets go first, so a secret that starts with another never leaves its tail visible.
    """
    for secret in sorted({s for s in secrets if s}, key=lambda s: (-len(s), s)):
        text = text.replace(secret, REDACTED)
    return text


#: Derived parts shorter than this ("/", "/api", "v=1") carry no credential, and hiding them would
#: garble ordinary text; the secret itself is always hidden, whatever its length.
MIN_PART = 6


def looks_like_a_credential(word: str) -> bool:
    """A path segment, query value or word long and random enough to be a token on its own."""
    return len(word) >= 16 or (len(word) >= 8 and any(c.isdigit() for c in word))


def secret_parts(secret: str) -> set[str]:
    """``secret`` and the parts of it that a server, proxy or library may show on their own.

    For a URL (``scheme://host/...``) whose path or query carries a credential — a query, a path
    of two or more segments, or a segment that looks like a credential (a single plain word such
    as ``/alerts`` does not): its path with query, its path, its query, each without its leading
    slash, each percent-encoded, decoded and with JSON-escaped slashes (``\\/``); each path
    segment and query value that looks like a credential; the user info and password. For other
    text, each whitespace-separated word that looks like a credential (``Bearer <token>``). The
    secret itself, and every part, also percent-encoded (``:`` as ``%3A``), decoded and with
    JSON-escaped slashes, and in its ``repr`` form (what an error quoting it with ``%r`` shows).
    """
    if not secret:
        return set()
    parts = {secret} | _forms(secret)
    try:
        url = urlsplit(secret)
    except ValueError:
        url = None
    if url is not None and url.scheme and url.netloc:
        segments = [s for s in url.path.split("/") if s]
        words = [s for s in segments if looks_like_a_credential(unquote(s))]
        words += [v for _, v in parse_qsl(url.query, keep_blank_values=True) if looks_like_a_credential(v)]
        if url.query or len(segments) > 1 or words:
            tail = secret.split(url.netloc, 1)[1].split("#", 1)[0]  # path?query as written
            for piece in (tail, url.path, url.query, url.path.lstrip("/"), tail.lstrip("/")):
                parts.update(_forms(piece))
        if url.password:
            parts.update(_forms(f"{url.username or ''}:{url.password}"))
            words.append(url.password)
        for word in words:
            parts.update(_forms(word))
    else:
        words = secret.split()
        if len(words) > 1:
            for word in filter(looks_like_a_credential, words):
                parts.update(_forms(word))
    parts |= {repr(p)[1:-1] for p in parts}
    return {p for p in parts if p == secret or len(p) >= MIN_PART}


def _forms(text: str) -> set[str]:
    """``text`` as written, percent-decoded (``+`` as space or not), percent-encoded, and each of
    those with JSON-escaped slashes; nothing when ``text`` is too short to carry a credential."""
    if len(text) < MIN_PART:
        return set()
    plain = unquote(text)
    forms = {text, plain, unquote_plus(text), quote(plain, safe="/:@!$&'()*+,;=?~"), quote(plain, safe="/")}
    return forms | {f.replace("/", "\\/") for f in forms}
