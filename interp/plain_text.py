"""One line of plain text from whatever an LLM replied: no control characters, no odd whitespace.

An explanation reaches later prompts, the app and a published dataset, so it must not carry a
control character (``\\x1f``, ``\\x00``), an invisible format character (a zero-width space, a
bidirectional mark) or an exotic space (``\\u3000``, ``\\xa0``) that Python's ``str.strip``
treats differently from ``" "``.
"""

import re
import unicodedata

KEPT_FORMAT = {"\u200c", "\u200d"}
"""Zero-width (non-)joiners: parts of emoji sequences and of words in several scripts."""
SPACES = re.compile(r" {2,}")


def _plain(char: str) -> str:
    if char.isspace() or unicodedata.category(char) == "Cc":
        return " "
    if unicodedata.category(char) == "Cf" and char not in KEPT_FORMAT:
        return ""
    return char


def plain_line(text: str) -> str:
    """``text`` with every control character and Unicode space as one ``" "``, format characters dropped, stripped.

    >>> plain_line("0\\x1f_ \\u3000cats\\u200b")
    '0 _ cats'
    """
    if not text.isprintable():  # the common case, printable text, needs no look at each character
        text = "".join(_plain(char) for char in text)
    return SPACES.sub(" ", text).strip()
