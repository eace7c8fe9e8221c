"""Steering's hook mechanics: change chosen latents of a sparse coder while the model runs.

At the coder's hookpoint the hidden state is encoded, the chosen latents are changed (``add`` a
strength, ``clamp`` to a value, or ``ablate`` to zero), decoded, and the coder's reconstruction
error is added back, so only the chosen latents change. Since decoding is linear in the
latents, that is the same as adding ``(new - old) · W_dec[latent]`` to the tensor the coder
writes; that is what the hook computes, exactly, with no reconstruction error of its own.

Where the coder writes: SAEs reconstruct what they read (a module's output, or its input for
resid_pre / mlp_in SAEs); transcoders and MLP neurons read a module's input and write its
output. ``writes`` says which.

What steering does to the model's next token (and the strength that reaches a target KL) is in
``steer_effects``; clean and steered continuations side by side, for the CLI and the app, in
``steer_side_by_side``.

>>> with steer(lm.model, coder, [Edit(latent=123, mode="add", value=8.0)]):
...     out = lm.model.generate(...)
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
from torch import nn

from .coders.base import SparseCoder
from .coders.neurons import NeuronCoder
from .errors import CoderShapeError, InterpError
from .hooks import Reads, first_tensor, hooks_removed, module_input
from .models import LoadedModel, resolve_hookpoint

Mode = Literal["add", "clamp", "ablate"]
MODES: tuple[Mode, ...] = ("add", "clamp", "ablate")


class SteeringError(InterpError, ValueError):
    """An intervention that cannot be made: unknown latent or mode, a strength that breaks the
    model, a prompt too long.
    """


class Edit(NamedTuple):
    """One change to one latent."""

    latent: int
    mode: Mode = "add"
    value: float = 0.0
    """add: the amount added to the latent; clamp: the value it is set to; ablate: ignored (set to 0)."""


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
    """``[tokens, d_out]``: what ``edits`` add to the tensor the coder writes, for inputs ``x``
    (``[tokens, d_in]``).
    """
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
        raise SteeringError(
            f"Steering ({values}) overflows the model's {base.dtype} hidden state to NaN/inf; use a smaller strength."
        )
    return new


def _with_output(output, new: torch.Tensor):
    return (new, *output[1:]) if isinstance(output, tuple) else new


def _with_input(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with the tensor ``hooks.module_input`` reads replaced by ``new``."""
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
            x = module_input(args, kwargs)
            return _with_input(args, kwargs, _add(x, delta_for(x), edits))

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def hook(mod, args, kwargs, output):
            out = first_tensor(output)
            x = out if coder.reads == "output" else module_input(args, kwargs)
            return _with_output(output, _add(out, delta_for(x), edits))

        handle = module.register_forward_hook(hook, with_kwargs=True)
    with hooks_removed([handle]):
        yield edits
