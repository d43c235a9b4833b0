"""Response bodies read with a byte limit, for the HTTP sources (``_http.HttpClient``).

A server decides how much it sends, and a compressed body can decode to a thousand times its
size (a gzip bomb). :func:`read_body` reads a streamed ``httpx`` response piece by piece and
stops with a :class:`BodyError` as soon as either count passes the limit:

* the bytes on the wire (raw), which also bounds bodies that decode to nothing (empty deflate
  blocks sent forever), and an announced ``Content-Length`` is refused before anything is read;
* the decoded bytes: ``gzip`` and ``deflate`` (zlib-wrapped or raw) are decoded here with zlib's
  ``max_length``, so no single piece decodes past the limit either (httpx would decode each piece
  whole). Other encodings are refused; :data:`ACCEPT_ENCODING` asks for these two only.

A limit is one per-request size for a whole response body; time is bounded by the caller.
"""

from __future__ import annotations

import zlib

import httpx

#: The ``Accept-Encoding`` of every request: what :func:`read_body` can decode with a limit.
ACCEPT_ENCODING = "gzip, deflate"


class BodyError(Exception):
    """The body is over the limit or cannot be decoded; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Inflater:
    """Incremental ``gzip``/``deflate`` decoding that never yields more than asked for."""

    def __init__(self, encoding: str) -> None:
        self.gzip = encoding in ("gzip", "x-gzip")
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if self.gzip else zlib.MAX_WBITS)
        self._first = True

    def decode(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        """(at most ``room`` decoded bytes, the input not consumed yet)."""
        try:
            out = self._z.decompress(data, room)
        except zlib.error as exc:
            if self._first and not self.gzip:  # "deflate" sent raw, without the zlib wrapper
                self._first = False
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.decode(data, room)
            raise BodyError(f"the compressed body is corrupt ({exc})", retryable=True) from None
        self._first = False
        return out, self._z.unconsumed_tail


def _decoder(response: httpx.Response) -> _Inflater | None:
    """The decoder of the response's ``Content-Encoding`` (None: identity)."""
    given = response.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in given.split(",") if c.strip().lower() not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(codings[0])
    raise BodyError(f"unsupported Content-Encoding {given!r} (asked for {ACCEPT_ENCODING})", retryable=False)


def _over(limit: int, what: str = "body", name: str = "max_response_bytes") -> BodyError:
    return BodyError(f"{what} over the limit of {limit} bytes ({name})", retryable=False)


async def read_body(response: httpx.Response, limit: int, name: str = "max_response_bytes") -> bytes:
    """The decoded body of a streamed ``response``, at most ``limit`` bytes raw and decoded.

    ``name`` is what the limit is called in the error (an option a user can change, say).

    Raises :class:`BodyError`: over the limit (not retryable: the same request gets the same
    answer), an unsupported encoding, or corrupt compressed data (retryable).
    """
    if response.is_stream_consumed:  # read before it reached here (a mock transport): decoded already
        if len(response.content) > limit:
            raise _over(limit, "decompressed body", name)
        return response.content
    announced = response.headers.get("content-length", "")
    if announced.strip().isdigit() and int(announced) > limit:
        raise _over(limit, "body", name)
    decoder = _decoder(response)
    pieces: list[bytes] = []
    raw = decoded = 0
    async for chunk in response.aiter_raw():
        raw += len(chunk)
        if raw > limit:
            raise _over(limit, "body", name)
        if decoder is None:
            decoded = raw
            pieces.append(chunk)
            continue
        while chunk:
            out, chunk = decoder.decode(chunk, limit - decoded + 1)
            decoded += len(out)
            if decoded > limit:
                raise _over(limit, "decompressed body", name)
            pieces.append(out)
    return b"".join(pieces)
