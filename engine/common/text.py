"""Text safe to show on a terminal or in a log: :func:`printable`.

Messages, labels, error bodies and file contents may come from a strategy author, a data file or a
server; written to a terminal as they are, their control characters could move the cursor, clear
the screen, retitle the window, forge log lines or hide text (bidirectional overrides). Every
human-facing output of perpwatch passes such text through :func:`printable`; JSON output does not
(it is data, and ``json.dumps`` escapes control characters itself).
"""

from __future__ import annotations

import re

#: Whole terminal escape sequences, removed: CSI (``ESC [`` … final byte, or the one-byte C1 CSI),
#: OSC, DCS, SOS, PM and APC strings (up to BEL or ``ESC \``, or the end of the text), and the
#: other ``ESC`` forms (intermediate bytes, then one final byte). Each alternative scans forward
#: only, and its last part is optional: no backtracking, linear in the text's length.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)

#: What is left to replace: C0 controls (tab and newline included), DEL, C1 controls, the line and
#: paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")

#: Lone surrogates (from ``\ud800`` in JSON, say) cannot be encoded for output at all.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` without escape sequences, each run of other control characters one space.

    With ``multiline`` the newlines stay (and only they: a ``\\r`` cannot rewrite a line); use it
    only for output that is several lines on purpose (a report, a traceback), never for a value
    that is meant to be one line, where a newline could forge the next line of the output.
    """
    if multiline:
        return "\n".join(printable(line) for line in text.replace("\r\n", "\n").split("\n"))
    return _CONTROL.sub(" ", _SURROGATE.sub("\ufffd", _ESCAPE.sub("", text)))
