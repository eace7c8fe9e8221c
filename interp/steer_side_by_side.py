"""Clean and steered continuations of a prompt side by side: what ``interp steer`` and the app's Intervene tab show.

>>> r = generate_side_by_side(lm, coder, "My favourite animal is", 123, target_kl=1.0)
>>> print(r.clean, "|", r.steered, r.kl)
"""

from collections.abc import Mapping
from typing import NamedTuple

from torch import nn

from .coders.base import SparseCoder
from .models import LoadedModel, resolve_hookpoint
from .steer import Edit, Mode, SteeringError, check_edits, steer
from .steer_effects import (
    TokenChange,
    calibrate_strength,
    continue_prompts,
    encode_prompts,
    kl_divergence,
    next_token_logprobs,
    top_token_changes,
)


class SideBySide(NamedTuple):
    """A prompt's clean and steered continuations, and what the steering did."""

    clean: str
    steered: str
    strength: float
    """The strength (add, clamp) used: as given, or found for ``target_kl``; 0 for ablate."""
    kl: float
    """KL(steered || clean) of the next-token distribution right after the prompt."""
    top_token_changes: list[TokenChange]
    """The next tokens whose probability rose most, largest rise first."""


def pick_coder(coders: Mapping[str, SparseCoder], which: str | None, model: nn.Module) -> tuple[str, SparseCoder]:
    """The coder named ``which``, or the one at hookpoint ``which`` (for neurons, their MLP module);
    the only coder when None.
    """
    if which in coders:
        return which, coders[which]
    listing = ", ".join(f"{name} (at {c.hookpoint})" for name, c in coders.items())
    if which is None:
        if len(coders) == 1:
            return next(iter(coders.items()))
        raise SteeringError(f"There are several coders; choose one by name or hookpoint: {listing}.")
    module = resolve_hookpoint(model, which)
    found = [(name, c) for name, c in coders.items() if module in (c.hookpoint, c.source)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SteeringError(f"No coder reads at {which!r}; the coders are: {listing}.")
    raise SteeringError(f"Several coders read at {which!r}; choose one by name: {', '.join(n for n, _ in found)}.")


def generate_side_by_side(
    lm: LoadedModel,
    coder: SparseCoder,
    prompt: str,
    latent: int,
    *,
    mode: Mode = "add",
    strength: float | None = None,
    target_kl: float | None = None,
    max_new_tokens: int = 32,
    top_k: int = 10,
) -> SideBySide:
    """Greedy continuations of ``prompt`` without and with ``latent`` steered, and the next-token changes.

    Give ``strength`` (add: amount added; clamp: value set) or ``target_kl`` (the strength is
    then calibrated on this prompt); ``ablate`` needs neither.

    >>> r = generate_side_by_side(lm, coder, "My favourite animal is", 123, strength=10.0)
    >>> print(r.clean, "|", r.steered, r.kl)
    """
    if mode == "ablate":
        strength = 0.0
    elif (strength is None) == (target_kl is None):
        raise SteeringError(f"Give either a strength or a target KL for {mode!r} steering (not both).")
    elif target_kl is not None:
        strength = calibrate_strength(lm, coder, latent, [prompt], target_kl, mode=mode).strength
    edits = check_edits(coder, [Edit(latent, mode, float(strength))])
    ids = encode_prompts(lm, [prompt], max_new_tokens)
    clean_next = next_token_logprobs(lm, ids)
    clean = continue_prompts(lm, ids, max_new_tokens)
    with steer(lm.model, coder, edits):
        steered_next = next_token_logprobs(lm, ids)
        steered = continue_prompts(lm, ids, max_new_tokens)
    decode = lm.tokenizer.decode
    return SideBySide(
        clean=decode(clean[0], skip_special_tokens=True),
        steered=decode(steered[0], skip_special_tokens=True),
        strength=float(strength),
        kl=float(kl_divergence(steered_next, clean_next)[0]),
        top_token_changes=top_token_changes(clean_next[0], steered_next[0], lm.tokenizer, top_k),
    )
