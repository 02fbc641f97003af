"""core/text.py: text from the network cannot drive a terminal or forge a log line."""

from __future__ import annotations

import json
import logging
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from zswarm.core.text import printable


def _unsafe(ch: str) -> bool:
    return (unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029\ufeff"
            or "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069")


@given(st.text())
def test_no_control_character_survives(text):
    out = printable(text)
    assert not any(_unsafe(ch) for ch in out)
    lines = printable(text, keep_lines=True)
    assert not any(_unsafe(ch) and ch not in "\n\t" for ch in lines)
    assert lines.count("\n") == text.count("\n")


@given(st.text())
def test_safe_text_is_left_alone_and_escapes_stay_readable_json(text):
    if not any(_unsafe(ch) for ch in text):
        assert printable(text) == text
    # an escaped string inside a JSON document is still that JSON (\\uXXXX is JSON's)
    doc = json.dumps({"name": text}, ensure_ascii=False)
    assert json.loads(printable(doc, keep_lines=True)) == json.loads(doc)


def test_the_known_attacks_are_defused():
    osc52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # writes the user's clipboard
    assert "\x1b" not in printable(osc52) and "\\u001b]52" in printable(osc52)
    forged = "b\n2026-11-30 06:00:00 ERROR zswarm: DUPLICATE NODE ID"
    assert "\n" not in printable(forged)
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"


def test_the_cli_log_formatter_keeps_one_line_per_record(capsys):
    from zswarm.cli.common import SafeFormatter as _SafeFormatter
    record = logging.LogRecord("zswarm.x", logging.INFO, __file__, 1, "peer %s joined",
                               ("b\nFAKE LINE\x1b[2J",), None)
    line = _SafeFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO peer b\\u000aFAKE LINE\\u001b[2J joined"
