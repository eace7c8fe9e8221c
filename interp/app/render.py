"""Token-level HTML and Markdown for the app: text from the corpus, an LLM, a run's files or a user, always escaped.

Every piece of text goes through ``html.escape`` before it is placed in markup, so an example
or an explanation that holds ``<script>`` or an ``onerror=`` attribute shows as text. Braces
are escaped too: Gradio fills its HTML template as a JavaScript template string. Names put in
Markdown (runs, coders, explainers) are escaped for Markdown as well (``markdown_text``).
"""

import html
import re
from collections.abc import Sequence

COLOUR = "255, 122, 0"
"""RGB of the highlight; its opacity is the activation over the strongest one shown."""


def escape(text: str) -> str:
    """``text`` safe inside HTML elements and attributes, and inert in Gradio's template filling."""
    return html.escape(text, quote=True).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
"""Characters that start Markdown emphasis, code, links, tables or strikethrough anywhere in a line."""


def markdown_text(text: str) -> str:
    """``text`` (a name from a run's files, or a message quoting what a user typed) shown as itself in Markdown.

    HTML is escaped, Markdown punctuation backslash-escaped and line breaks flattened, so a run
    or explainer called ``<img onerror=...>`` or ``[x](javascript:...)`` is shown, not rendered;
    ``$`` is escaped too, so no LaTeX is typeset.
    """
    flat = html.escape(" ".join(str(text).splitlines()), quote=False).replace("$", "&#36;")
    return MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def markdown_code(text: str) -> str:
    """``text`` as an inline code span in Markdown: nothing inside it is read as Markdown or HTML.

    The fence is one backtick longer than any run of backticks in ``text``, so a name cannot close it early.
    """
    flat = " ".join(str(text).splitlines())
    fence = "`" * (max(map(len, re.findall("`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _visible(piece: str) -> str:
    """A token's text with line breaks and tabs shown as symbols, so a reader sees where they are."""
    return piece.replace("\n", "↵").replace("\t", "⇥")


def tokens_html(pieces: Sequence[str], acts: Sequence[float], top: float) -> str:
    """One ``<span>`` per token, shaded by its activation relative to ``top``; hovering shows the value."""
    top = top if top > 0 else 1.0
    spans = []
    for piece, act in zip(pieces, acts, strict=True):
        text = escape(_visible(piece))
        if act > 0:
            alpha = min(1.0, 0.15 + 0.85 * act / top)
            spans.append(
                f'<span class="tok on" data-act="{act:.4g}" title="{act:.4g}" '
                f'style="background: rgba({COLOUR}, {alpha:.2f})">{text}</span>'
            )
        else:
            spans.append(f'<span class="tok">{text}</span>')
    return "".join(spans)


def examples_html(
    examples: Sequence[tuple[str, Sequence[str], Sequence[float]]], top: float, empty: str = "No examples."
) -> str:
    """A list of (caption, token texts, activations), each as one shaded line."""
    if not examples:
        return f'<p class="empty">{escape(empty)}</p>'
    rows = [
        f'<div class="example"><span class="caption">{escape(caption)}</span>'
        f'<span class="text">{tokens_html(pieces, acts, top)}</span></div>'
        for caption, pieces, acts in examples
    ]
    return '<div class="examples">' + "".join(rows) + "</div>"


CSS = """
.examples .example { margin: 4px 0; line-height: 1.7; }
.examples .caption { display: inline-block; min-width: 9em; color: #777; font-size: 0.85em; }
.examples .text { white-space: pre-wrap; font-family: ui-monospace, monospace; }
.examples .tok.on { border-radius: 3px; cursor: help; }
"""
"""Style of the example lines (given to Gradio at launch)."""
