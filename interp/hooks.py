"""Capture activations at hookpoints and stop the forward pass once all are captured.

Layers after the deepest hookpoint never run: caching layer 6 of a 30-layer model costs
about a fifth of a full forward pass.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
from torch import nn

Reads = Literal["input", "output"]


class Site(NamedTuple):
    """Where a tensor is read: a module name and whether its input or its output."""

    module: str
    reads: Reads = "output"


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; caught by ``capture``."""


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def _module_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The first positional tensor, or ``hidden_states`` when the caller passed it by name."""
    if args:
        return _first_tensor(args)
    return kwargs.get("hidden_states", next(iter(kwargs.values())))


@contextmanager
def hooks_removed(handles: list) -> Iterator[list]:
    """Yield ``handles`` and remove every one on exit, even on error."""
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


def capture(
    model: nn.Module, sites: Iterable[Site], run, *, stop: bool = True
) -> dict[Site, torch.Tensor]:
    """Call ``run()`` (a forward pass of ``model``) and return the tensors at ``sites``.

    With ``stop`` the pass ends as soon as the last site has been read.
    """
    sites = list(dict.fromkeys(sites))
    found: dict[Site, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def make_hook(site: Site):
        def hook(module, args, kwargs, output):
            value = _module_input(args, kwargs) if site.reads == "input" else output
            found[site] = _first_tensor(value).detach()
            if stop and len(found) == len(sites):
                raise StopForward

        return hook

    handles = [modules[s.module].register_forward_hook(make_hook(s), with_kwargs=True) for s in sites]
    with hooks_removed(handles):
        try:
            run()
        except StopForward:
            pass
    missing = [s for s in sites if s not in found]
    if missing:
        raise RuntimeError(f"The forward pass never reached {missing}.")
    return found


@torch.inference_mode()
def capture_tokens(
    model: nn.Module, input_ids: torch.Tensor, sites: Iterable[Site], *, stop: bool = True
) -> dict[Site, torch.Tensor]:
    """Run ``model`` on ``input_ids`` and return the activations at ``sites``."""
    return capture(model, sites, lambda: model(input_ids=input_ids, use_cache=False), stop=stop)


def site_widths(model: nn.Module, sites: Iterable[Site], device) -> dict[Site, int]:
    """Width (last dimension) of the tensor at each site, from a two-token forward pass."""
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    return {s: t.shape[-1] for s, t in capture_tokens(model, ids, sites).items()}
