"""Steering: change chosen latents of a sparse coder while the model runs, and see what it says.

At the coder's hookpoint the hidden state is encoded, the chosen latents are changed (``add`` a
strength, ``clamp`` to a value, or ``ablate`` to zero), decoded, and the coder's reconstruction
error is added back, so only the chosen latents change. Since decoding is linear in the
latents, that is the same as adding ``(new - old) · W_dec[latent]`` to the tensor the coder
writes; that is what the hook computes, exactly, with no reconstruction error of its own.

Where the coder writes: SAEs reconstruct what they read (a module's output, or its input for
resid_pre / mlp_in SAEs); transcoders and MLP neurons read a module's input and write its
output. ``writes`` says which.

>>> with steer(lm.model, coder, [Edit(latent=123, mode="add", value=8.0)]):
...     out = lm.model.generate(...)
>>> result = generate_side_by_side(lm, coder, "My favourite animal is", 123, target_kl=1.0)
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn

from .coders.base import SparseCoder
from .coders.neurons import NeuronCoder
from .errors import CoderShapeError, InterpError
from .hooks import Reads, _first_tensor, _module_input, hooks_removed
from .models import LoadedModel, resolve_hookpoint
from .prompts import template

Mode = Literal["add", "clamp", "ablate"]
MODES: tuple[Mode, ...] = ("add", "clamp", "ablate")
MIN_STRENGTH, MAX_STRENGTH = 1e-4, 1e5
"""The range the KL search looks in; past it a latent is taken to be unable to reach the target."""


class SteeringError(InterpError, ValueError):
    """An intervention that cannot be made: unknown latent or mode, a strength that breaks the model, a prompt too long."""


class Edit(NamedTuple):
    """One change to one latent."""

    latent: int
    mode: Mode = "add"
    value: float = 0.0
    """add: the amount added to the latent; clamp: the value it is set to; ablate: ignored (set to 0)."""


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


def writes(coder: SparseCoder) -> Reads:
    """The side of its hookpoint module that ``coder`` decodes into.

    Coders reading a module's output reconstruct that output. A coder reading the input writes
    the output when it transcodes (sparsify transcoders, MLP neurons, any decoder whose width
    differs from its input) and the input otherwise (resid_pre or mlp_in SAEs).
    """
    if coder.reads == "output":
        return "output"
    transcodes = (
        isinstance(coder, NeuronCoder)
        or bool(coder.describe().get("transcode"))
        or coder.decoder_weight().shape[-1] != coder.d_in
    )
    return "output" if transcodes else "input"


def check_edits(coder: SparseCoder, edits: Sequence[Edit]) -> list[Edit]:
    """``edits`` as ``Edit``s, or a ``SteeringError`` naming what is wrong with them."""
    out = [e if isinstance(e, Edit) else Edit(*e) for e in edits]
    if not out:
        raise SteeringError("Nothing to steer: give at least one latent to change.")
    for e in out:
        if e.mode not in MODES:
            raise SteeringError(f"Unknown steering mode {e.mode!r}: use {', '.join(MODES)}.")
        if not 0 <= e.latent < coder.num_latents:
            raise SteeringError(
                f"Latent {e.latent} does not exist: the {coder.kind} coder at {coder.hookpoint} "
                f"has {coder.num_latents} latents (0-{coder.num_latents - 1})."
            )
        if not math.isfinite(e.value):
            raise SteeringError(f"Steering strength {e.value} for latent {e.latent} is not a finite number.")
    latents = [e.latent for e in out]
    if len(set(latents)) != len(latents):
        raise SteeringError(f"Latents {latents} are listed more than once; give each one edit.")
    return out


def latent_values(coder: SparseCoder, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """``[tokens, len(latents)]``: each latent's current value in the coder's code of ``x``.

    A latent outside a TopK coder's active set is 0 in its code (its share of ``x`` sits in the
    reconstruction error), so clamping it adds ``value · W_dec``. MLP neurons are read straight
    from ``x``: every neuron, negative ones included, is an exact part of the MLP's output.
    """
    if isinstance(coder, NeuronCoder):
        return x.float()[:, latents]
    code = coder.encode(x)
    match = code.indices.unsqueeze(-1) == latents
    return (code.acts.float().unsqueeze(-1) * match).sum(1)


def edit_delta(coder: SparseCoder, x: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """``[tokens, d_out]``: what ``edits`` add to the tensor the coder writes, for inputs ``x`` (``[tokens, d_in]``)."""
    if x.shape[-1] != coder.d_in:
        raise CoderShapeError(
            f"The {coder.kind} coder at {coder.hookpoint} expects width {coder.d_in}, but the model's "
            f"{coder.reads} there has width {x.shape[-1]}."
        )
    x = x.to(coder.device)
    latents = torch.tensor([e.latent for e in edits], device=coder.device)
    values = torch.tensor([e.value for e in edits], device=coder.device, dtype=torch.float32)
    change = values.expand(len(x), -1)  # add: the change is the strength itself, whatever the latent's value
    needs_current = torch.tensor([e.mode != "add" for e in edits], device=coder.device)
    if needs_current.any():
        current = latent_values(coder, x, latents)
        target = torch.where(torch.tensor([e.mode == "clamp" for e in edits], device=coder.device), values, 0.0)
        change = torch.where(needs_current, target - current, change)
    return change @ coder.decoder_weight()[latents].float()


def _add(base: torch.Tensor, delta: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    new = base + delta.to(device=base.device, dtype=base.dtype).reshape(base.shape)
    if not torch.isfinite(new).all() and torch.isfinite(base).all():
        values = ", ".join(f"{e.mode} {e.value:g} on latent {e.latent}" for e in edits)
        raise SteeringError(f"Steering ({values}) overflows the model's {base.dtype} hidden state to NaN/inf; use a smaller strength.")
    return new


def _with_output(output, new: torch.Tensor):
    return (new, *output[1:]) if isinstance(output, tuple) else new


def _with_input(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with the tensor ``hooks._module_input`` reads replaced by ``new``."""
    if args:
        return (new, *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
    return args, {**kwargs, key: new}


def _unwrap(model) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


@contextmanager
def steer(model: nn.Module | LoadedModel, coder: SparseCoder, edits: Sequence[Edit]) -> Iterator[list[Edit]]:
    """While inside, every forward pass of ``model`` has ``edits`` applied at ``coder``'s hookpoint.

    Every position is steered (the prompt and each generated token). The hook is removed on
    exit, also when the body or the forward pass raises. A strength that overflows the hidden
    state raises ``SteeringError`` from the forward pass.

    >>> with steer(lm.model, coder, [Edit(7, "clamp", 20.0), Edit(9, "ablate")]):
    ...     logits = lm.model(input_ids).logits
    """
    edits = check_edits(coder, edits)
    model = _unwrap(model)
    module = model.get_submodule(resolve_hookpoint(model, coder.hookpoint))
    side = writes(coder)

    def delta_for(x: torch.Tensor) -> torch.Tensor:
        return edit_delta(coder, x.reshape(-1, x.shape[-1]), edits)

    if side == "input":

        def pre_hook(mod, args, kwargs):
            x = _module_input(args, kwargs)
            return _with_input(args, kwargs, _add(x, delta_for(x), edits))

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def hook(mod, args, kwargs, output):
            out = _first_tensor(output)
            x = out if coder.reads == "output" else _module_input(args, kwargs)
            return _with_output(output, _add(out, delta_for(x), edits))

        handle = module.register_forward_hook(hook, with_kwargs=True)
    with hooks_removed([handle]):
        yield edits


# --------------------------------------------------------------------------- prompts and passes


def encode_prompts(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 0) -> list[list[int]]:
    """Token ids of each prompt; a ``SteeringError`` if one is empty or, with ``max_new_tokens``, too long for the model."""
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
    """Greedy continuation (new token ids, cut before end-of-sequence) of each prompt, under whatever steering is active.

    Greedy so that a clean and a steered run differ only by the steering. Rows are left-padded;
    ``generate`` counts positions from the attention mask, so a row continues as it would alone.
    """
    width = max(map(len, ids))
    pad = lm.pad_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=lm.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=lm.device)
    stop = lm.eos_ids
    out = lm.model.generate(
        input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=pad, eos_token_id=sorted(stop), return_dict_in_generate=True, output_logits=True,
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
            jump = (log_target - log_kl) / 2 if math.isfinite(log_kl) else (math.log(16) if kl < target_kl else -math.log(16))
            moved = min(max(log_s + min(max(jump, -math.log(16)), math.log(16)), math.log(MIN_STRENGTH)), math.log(MAX_STRENGTH))
            if moved == log_s:  # already at the edge of the range
                break
            log_s = moved
    return Calibration(best[1], best[2], False, step)


# --------------------------------------------------------------------------- what steering does


def top_token_changes(next_clean: torch.Tensor, next_steered: torch.Tensor, tokenizer, k: int = 10) -> list[TokenChange]:
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
    return [PromptEffect(p, top_token_changes(c, s, lm.tokenizer, k)) for p, c, s in zip(prompts, clean, steered)]


def latent_effects(
    lm: LoadedModel, coder: SparseCoder, latent: int, prompts: Sequence[str], target_kl: float, k: int = 5
) -> tuple[Calibration, list[PromptEffect]]:
    """Steer ``latent`` (add) at the strength that reaches ``target_kl`` and report the tokens it promotes after each prompt."""
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


def pick_coder(coders: Mapping[str, SparseCoder], which: str | None, model: nn.Module) -> tuple[str, SparseCoder]:
    """The coder named ``which``, or the one at hookpoint ``which`` (for neurons, their MLP module); the only coder when None."""
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
