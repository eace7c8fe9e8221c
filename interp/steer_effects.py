"""What steering a latent does to the next token, and the strength at which it does enough.

Used by the intervention explainer and scorer (on disjoint prompts: ``explainer_steer_prompts``), and by the
side-by-side view: encode prompts,
read the next-token distribution and greedy continuations under whatever steering is active,
measure KL(steered || clean), calibrate a latent's strength to a target KL (the same strength
means different things for different latents), and list the tokens steering promotes.

>>> cal, effects = latent_effects(lm, coder, 123, load_steer_prompts(n=8), target_kl=1.0)
>>> [c.token for c in effects[0].changes]
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from .coders.base import SparseCoder
from .models import LoadedModel
from .prompts import template
from .steer import Edit, Mode, SteeringError, check_edits, steer

MIN_STRENGTH, MAX_STRENGTH = 1e-4, 1e5
"""The range the KL search looks in; past it a latent is taken to be unable to reach the target."""


class Calibration(NamedTuple):
    """The strength that moves the next-token distribution by a target KL divergence."""

    strength: float
    kl: float
    """Mean KL(steered || clean) of the next-token distribution over the prompts at ``strength``."""
    reached: bool
    """False when no strength within [MIN_STRENGTH, MAX_STRENGTH] got within tolerance of the target."""
    steps: int
    """Forward passes the search took."""


class TokenChange(NamedTuple):
    """How steering changed the probability of one next token."""

    token_id: int
    token: str
    clean: float
    steered: float

    @property
    def delta(self) -> float:
        """``steered - clean`` probability."""
        return self.steered - self.clean


# --------------------------------------------------------------------------- prompts and passes


def encode_prompts(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 0) -> list[list[int]]:
    """Token ids of each prompt; a ``SteeringError`` if one is empty or, with ``max_new_tokens``,
    too long for the model.
    """
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    out = []
    for prompt in prompts:
        ids = lm.tokenizer(prompt)["input_ids"]
        if not ids:
            raise SteeringError("An empty prompt cannot be steered: give some text.")
        if limit is not None and len(ids) + max_new_tokens > limit:
            raise SteeringError(
                f"The prompt has {len(ids)} tokens; with {max_new_tokens} new tokens that exceeds the model's "
                f"context of {limit}. Shorten the prompt or ask for fewer tokens."
            )
        out.append(ids)
    return out


def _finite(logits: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(logits).all():
        raise SteeringError("Steering made the model's outputs NaN or infinite; use a smaller strength.")
    return logits


@torch.inference_mode()
def next_token_logprobs(lm: LoadedModel, ids: list[list[int]]) -> torch.Tensor:
    """``[prompts, vocab]`` float32 log-probs of the token after each prompt (under whatever steering is active).

    Rows are right-padded: a causal model's real tokens never see the padding after them.
    """
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), lm.pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    logits = lm.model(input_ids=input_ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False).logits
    last = torch.tensor([len(r) - 1 for r in ids], device=logits.device)
    return _finite(logits[torch.arange(len(ids), device=logits.device), last].float()).log_softmax(-1).cpu()


def kl_divergence(steered: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-row KL(steered || clean) of two ``[rows, vocab]`` log-prob tensors, in nats."""
    return (steered.exp() * (steered - clean)).sum(-1).clamp_min(0.0)


@torch.inference_mode()
def continue_prompts(lm: LoadedModel, ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation (new token ids, cut before end-of-sequence) of each prompt, under
    whatever steering is active.

    Greedy so that a clean and a steered run differ only by the steering. Rows are left-padded;
    ``generate`` counts positions from the attention mask, so a row continues as it would alone.
    """
    width = max(map(len, ids))
    pad = lm.pad_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=lm.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=lm.device)
    stop = lm.eos_ids
    out = lm.model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
        eos_token_id=sorted(stop),
        return_dict_in_generate=True,
        output_logits=True,
    )
    _finite(torch.stack(out.logits))
    rows = []
    for row in out.sequences[:, width:].tolist():
        end = next((k for k, t in enumerate(row) if t in stop), len(row))
        rows.append(row[:end])
    return rows


# --------------------------------------------------------------------------- calibration


def calibrate_strength(
    lm: LoadedModel,
    coder: SparseCoder,
    latent: int,
    prompts: Sequence[str],
    target_kl: float,
    *,
    mode: Mode = "add",
    tolerance: float = 0.1,
    max_steps: int = 30,
) -> Calibration:
    """The strength at which steering ``latent`` moves the next-token distribution by ``target_kl``.

    The same strength means different things for different latents (decoder norms and
    downstream sensitivity differ by orders of magnitude), so interventions are compared at
    equal effect instead: the mean KL(steered || clean) of the next token over ``prompts``.

    A bracketing search in log space: from strength 1, steps of at most 16x up or down
    (guided by KL growing like strength² for small strengths) until the target is bracketed,
    then bisection of the bracket in log space, each cut placed by log-log interpolation and
    kept inside the middle 80% so it always shrinks. Stops when the KL is within
    ``tolerance`` (relative) of the target. Strengths are positive (``add`` pushes along the
    decoder direction, ``clamp`` sets a positive value).

    >>> cal = calibrate_strength(lm, coder, 123, ["I think", "The best"], target_kl=1.0)
    >>> cal.strength, cal.kl, cal.reached
    """
    if mode == "ablate":
        raise SteeringError("Ablation has no strength to calibrate: it sets the latent to zero.")
    if not (target_kl > 0 and math.isfinite(target_kl)):
        raise SteeringError(f"The target KL must be a positive number of nats, got {target_kl}.")
    check_edits(coder, [Edit(latent, mode, 1.0)])
    ids = encode_prompts(lm, prompts)
    clean = next_token_logprobs(lm, ids)
    log_target = math.log(target_kl)
    lo = hi = None  # (log strength, log kl) on each side of the target
    best = (math.inf, 1.0, 0.0)  # (distance to the target, strength, kl)
    log_s = 0.0
    for step in range(1, max_steps + 1):
        strength = math.exp(log_s)
        try:
            with steer(lm.model, coder, [Edit(latent, mode, strength)]):
                kl = float(kl_divergence(next_token_logprobs(lm, ids), clean).mean())
        except SteeringError:  # so strong that the model overflows: far above any sensible target
            kl = math.inf
        if abs(kl - target_kl) < best[0]:
            best = (abs(kl - target_kl), strength, kl)
        if abs(kl - target_kl) <= tolerance * target_kl:
            return Calibration(strength, kl, True, step)
        log_kl = math.log(kl) if kl > 0 else -math.inf
        if kl < target_kl:
            lo = (log_s, log_kl)
        else:
            hi = (log_s, log_kl)
        if lo is not None and hi is not None:
            t = (log_target - lo[1]) / (hi[1] - lo[1]) if math.isfinite(lo[1]) and math.isfinite(hi[1]) else 0.5
            log_s = lo[0] + min(max(t, 0.1), 0.9) * (hi[0] - lo[0])
        else:
            # KL ~ strength^2 while the push is small: aim straight at the target, at most 16x away
            jump = (
                (log_target - log_kl) / 2
                if math.isfinite(log_kl)
                else (math.log(16) if kl < target_kl else -math.log(16))
            )
            moved = min(
                max(log_s + min(max(jump, -math.log(16)), math.log(16)), math.log(MIN_STRENGTH)),
                math.log(MAX_STRENGTH),
            )
            if moved == log_s:  # already at the edge of the range
                break
            log_s = moved
    return Calibration(best[1], best[2], False, step)


# --------------------------------------------------------------------------- what steering does


def top_token_changes(
    next_clean: torch.Tensor, next_steered: torch.Tensor, tokenizer, k: int = 10
) -> list[TokenChange]:
    """The ``k`` next tokens (of one ``[vocab]`` log-prob pair) whose probability rose most, largest first."""
    clean, steered = next_clean.exp(), next_steered.exp()
    rise = (steered - clean).topk(k)
    return [
        TokenChange(int(t), tokenizer.decode([int(t)]), float(clean[t]), float(steered[t]))
        for t in rise.indices
        if steered[t] > clean[t]
    ]


class PromptEffect(NamedTuple):
    """What steering a latent did to the next token after one prompt (what the intervention explainer reads)."""

    prompt: str
    changes: list[TokenChange]


def steering_effects(
    lm: LoadedModel, coder: SparseCoder, edits: Sequence[Edit], prompts: Sequence[str], k: int = 5
) -> list[PromptEffect]:
    """For each prompt, the ``k`` next tokens whose probability ``edits`` raised most."""
    ids = encode_prompts(lm, prompts)
    clean = next_token_logprobs(lm, ids)
    with steer(lm.model, coder, edits):
        steered = next_token_logprobs(lm, ids)
    return [
        PromptEffect(p, top_token_changes(c, s, lm.tokenizer, k))
        for p, c, s in zip(prompts, clean, steered, strict=True)
    ]


def latent_effects(
    lm: LoadedModel, coder: SparseCoder, latent: int, prompts: Sequence[str], target_kl: float, k: int = 5
) -> tuple[Calibration, list[PromptEffect]]:
    """Steer ``latent`` (add) at the strength that reaches ``target_kl`` and report the tokens it
    promotes after each prompt.
    """
    cal = calibrate_strength(lm, coder, latent, prompts, target_kl)
    return cal, steering_effects(lm, coder, [Edit(latent, "add", cal.strength)], prompts, k)


def load_steer_prompts(path: str | None = None, n: int | None = None) -> list[str]:
    """The first ``n`` non-blank lines of ``path``, or of the builtin neutral prompts when ``path`` is None."""
    if path is None:
        text = template("intervention_prompts").template
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise SteeringError(f"Cannot read steering prompts from {path}: {e.strerror or e}.") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise SteeringError(f"{path or 'The builtin prompt file'} holds no prompts: write one per line.")
    return prompts[:n] if n else prompts


def explainer_steer_prompts(path: str | None = None, n: int = 8) -> list[str]:
    """The intervention explainer's prompts: up to ``n`` of the pool (``path``, or the builtin prompts) after the first
    ``n``, which are the intervention scorer's (``load_steer_prompts(path, n)``). The explainer is never told what
    steering does after a prompt that is then scored; a pool with nothing after the scorer's is refused in one line."""
    pool = load_steer_prompts(path)
    own = pool[n : 2 * n]
    if not own:
        raise SteeringError(
            f"{path or 'The builtin prompt file'} holds {len(pool)} steering prompts and the intervention scorer "
            f"steers after the first {n} (--num-steer-prompts): the intervention explainer needs prompts of its own "
            "after those. Add lines to the file or lower --num-steer-prompts."
        )
    return own
