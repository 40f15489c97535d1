"""Text that is safe to show: what a message or an answer quotes from a document, a file name or a request."""

from __future__ import annotations

import re

# C0/C1 controls (ESC starts every terminal escape sequence) and the bidi overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text safe to print on a terminal: control characters become visible escapes (\\x1b), so a document
    cannot clear the screen, retitle the window or plant a hidden link. Newlines and tabs stay."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def json_safe(text: str) -> str:
    """JSON text with every control character as a \\u escape: json escapes only C0 controls, and a C1 control
    (\\x9b is a CSI) or a bidi override would reach the terminal. The same JSON value (they occur only in strings)."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_ANY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def one_line(text: str) -> str:
    """A name or label as one line: every control character escaped, newlines and tabs too (a file name with a
    newline in it must not print a second, forged hit line)."""
    return _ANY_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def valid_text(text: str) -> str:
    """The text with each lone surrogate (an undecodable byte in argv, a \\ud800 escape in JSON or YAML) replaced
    by U+FFFD: the tokenizer, tantivy and Chroma are native code that refuses them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text
