"""The Intervene panel: clean and steered continuations of a prompt, through ``interp.steer``."""

import math
from typing import NamedTuple

from ..errors import InterpError
from ..steer import MODES
from ..steer_side_by_side import SideBySide, generate_side_by_side
from .explore import Table
from .render import markdown_code
from .session import OpenRun

MAX_NEW_TOKENS = 128
"""Most tokens one request may generate: a shared server should answer everyone quickly."""
MAX_PROMPT_CHARS = 2048
"""Longest prompt steered: calibrating a strength runs the model on it up to 30 times while other users wait."""
CHANGE_HEADERS = ["next token", "token id", "clean p", "steered p", "change"]


class Steered(NamedTuple):
    """A side-by-side result and its next-token changes as a table."""

    result: SideBySide
    summary: str
    """Markdown: what was done and the next-token KL it caused."""
    changes: Table


def steer_prompt(
    run: OpenRun,
    coder: str,
    latent: int,
    prompt: str,
    *,
    mode: str = "add",
    strength: float | None = None,
    target_kl: float | None = None,
    max_new_tokens: int = 32,
    top_k: int = 10,
) -> Steered:
    """Continue ``prompt`` greedily without and with ``latent`` of ``coder`` steered
    (``steer_side_by_side.generate_side_by_side``).
    """
    if mode not in MODES:
        raise InterpError(f"Unknown steering mode {mode!r}: use {', '.join(MODES)}.")
    if not (math.isfinite(max_new_tokens) and 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS):
        raise InterpError(f"Ask for 1 to {MAX_NEW_TOKENS} new tokens, not {max_new_tokens}.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InterpError(f"The prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}. Shorten it.")
    lm = run.model().lm
    with run.lock:  # the steering hook lives on the shared model while this runs
        result = generate_side_by_side(
            lm,
            run.coder(coder),
            prompt,
            int(latent),
            mode=mode,
            strength=strength,
            target_kl=target_kl,
            max_new_tokens=int(max_new_tokens),
            top_k=top_k,
        )
    how = "ablate (set to 0)" if mode == "ablate" else f"{mode} {result.strength:.4g}"
    how += f" (found for a target KL of {target_kl:g})" if target_kl is not None and mode != "ablate" else ""
    summary = f"**{markdown_code(coder)} latent {int(latent)}**: {how} · next-token KL **{result.kl:.4g}** nats"
    rows = [[c.token, c.token_id, c.clean, c.steered, c.delta] for c in result.top_token_changes]
    return Steered(result, summary, Table(CHANGE_HEADERS, rows))
