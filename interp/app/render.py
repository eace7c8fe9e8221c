"""Token-level HTML for the app: text from the corpus, an LLM or a user, always escaped.

Every piece of text goes through ``html.escape`` before it is placed in markup, so an example
or an explanation that holds ``<script>`` or an ``onerror=`` attribute shows as text. Braces
are escaped too: Gradio fills its HTML template as a JavaScript template string.
"""

import html
from collections.abc import Sequence

COLOUR = "255, 122, 0"
"""RGB of the highlight; its opacity is the activation over the strongest one shown."""


def escape(text: str) -> str:
    """``text`` safe inside HTML elements and attributes, and inert in Gradio's template filling."""
    return html.escape(text, quote=True).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def _visible(piece: str) -> str:
    """A token's text with line breaks and tabs shown as symbols, so a reader sees where they are."""
    return piece.replace("\n", "↵").replace("\t", "⇥")


def tokens_html(pieces: Sequence[str], acts: Sequence[float], top: float) -> str:
    """One ``<span>`` per token, shaded by its activation relative to ``top``; hovering shows the value."""
    top = top if top > 0 else 1.0
    spans = []
    for piece, act in zip(pieces, acts):
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


def examples_html(examples: Sequence[tuple[str, Sequence[str], Sequence[float]]], top: float, empty: str = "No examples.") -> str:
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
