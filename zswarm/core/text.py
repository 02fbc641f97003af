"""Text from the network made safe for a terminal or a log line: one function, ``printable``.

Peer names, TXT fields, error details and answers come from outside. Written raw, an
ESC or OSC sequence would drive the user's terminal (OSC 52 writes the clipboard), a
carriage return or newline would forge a log line, and bidirectional controls would
show text in another order than it is stored. ``printable`` replaces every such
character with its ``\\uXXXX`` escape (still valid inside a JSON string). The CLI's
output and the node's log formatter pass everything through it, once.
"""

from __future__ import annotations

import re

# C1 controls, line/paragraph separators, bidi embeddings, overrides and isolates, and
# the byte-order mark (zero-width no-break space)
_WIDE = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
#: every C0 control too
_ANY = re.compile(f"[\\x00-\\x1f{_WIDE}]")
#: every C0 control but tab (\x09) and newline (\x0a)
_BUT_LINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f{_WIDE}]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control character escaped; ``keep_lines`` keeps newline and tab
    (an answer's own lines; never for names or log fields)."""
    return (_BUT_LINES if keep_lines else _ANY).sub(_escape, text)
