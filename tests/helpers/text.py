"""What an explanation's text must be wherever it is read from an LLM's reply."""

import unicodedata


def is_plain_line(text: str) -> bool:
    """Non-empty, one line, no control or format character, no space but ``" "`` (never two), nothing to strip."""
    odd = [
        c
        for c in text
        if (unicodedata.category(c) in ("Cc", "Cf") and c not in "\u200c\u200d") or (c.isspace() and c != " ")
    ]
    return bool(text) and not odd and text == text.strip() and "  " not in text
