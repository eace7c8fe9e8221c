"""Name the sites where coders read, capture activations there, and stop the forward pass once all are captured.

A site is a module and a side: ``model.layers.2.self_attn.o_proj:input`` is the tensor that
enters the attention output projection (the concatenated heads). TransformerLens hook names
(``blocks.2.attn.hook_z``), which SAELens configs use, map onto such sites.

Layers after the deepest hookpoint never run: caching layer 6 of a 30-layer model costs
about a fifth of a full forward pass.
"""

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
from torch import nn

from .errors import UnknownHookpointError
from .models import layer_hookpoints

Reads = Literal["input", "output"]
SIDES: tuple[Reads, ...] = ("input", "output")


class Site(NamedTuple):
    """Where a tensor is read: a module name and whether its input or its output."""

    module: str
    reads: Reads = "output"


def parse_site(text: str) -> tuple[str, Reads | None]:
    """Split a hookpoint ``MODULE[:input|:output]`` into the module and the side it names (None if none).

    Without a side each coder reads its own default (SAEs the output, transcoders the input).
    """
    module, colon, side = text.rpartition(":")
    if not colon:
        return text, None
    if side not in SIDES or not module:
        raise UnknownHookpointError(
            f"Hookpoint {text!r} is not MODULE, MODULE:input or MODULE:output "
            "(e.g. model.layers.2.self_attn.o_proj:input)."
        )
    return module, side


TL_SIDES: dict[str, Reads] = {
    "hook_resid_pre": "input",
    "hook_resid_mid": "input",
    "hook_mlp_in": "input",
    "hook_resid_post": "output",
    "hook_attn_out": "output",
    "hook_mlp_out": "output",
    "attn.hook_z": "input",
    "mlp.hook_in": "input",
    "mlp.hook_out": "output",
}
"""TransformerLens hooks (``blocks.N.<hook>``) that are a Hugging Face module's input or output, and which side."""

TL_NAMES = "blocks.N." + "{" + ", ".join(TL_SIDES) + "}"


def tl_hook(name: str | None) -> tuple[int, str] | None:
    """``(layer, hook)`` of a supported TransformerLens name such as ``blocks.2.attn.hook_z``; None otherwise."""
    m = re.fullmatch(r"blocks\.(\d+)\.([\w.]+)", name or "")
    return (int(m.group(1)), m.group(2)) if m and m.group(2) in TL_SIDES else None


def _tl_module(block: str, hook: str, gemma_style: bool) -> str:
    """The module of ``block`` whose input or output TransformerLens hook ``hook`` reads.

    Gemma 2/3 blocks normalise attention and MLP outputs before adding them to the residual
    stream; TransformerLens' ``hook_*_out`` read after those norms. ``hook_resid_mid`` and
    ``hook_mlp_in`` are the same tensor: the residual stream between attention and MLP, the
    input of the norm in front of the MLP. ``attn.hook_z`` is the concatenated heads, the input
    of the attention output projection.
    """
    mlp_norm = "pre_feedforward_layernorm" if gemma_style else "post_attention_layernorm"
    relative = {
        "hook_resid_pre": "",
        "hook_resid_post": "",
        "hook_resid_mid": mlp_norm,
        "hook_mlp_in": mlp_norm,
        "hook_attn_out": "post_attention_layernorm" if gemma_style else "self_attn",
        "hook_mlp_out": "post_feedforward_layernorm" if gemma_style else "mlp",
        "attn.hook_z": "self_attn.o_proj",
        "mlp.hook_in": "mlp",
        "mlp.hook_out": "mlp",
    }[hook]
    return f"{block}.{relative}" if relative else block


def tl_site(model: nn.Module, name: str | None) -> Site | None:
    """The site of ``model`` that TransformerLens hook ``name`` reads; None if ``name`` is not a TransformerLens name.

    A ``blocks.N.…`` name that is not supported, or a layer the model lacks, is an error listing what is.
    """
    parsed = tl_hook(name)
    if parsed is None:
        if re.match(r"blocks\.\d+\.", name or ""):
            raise UnknownHookpointError(
                f"TransformerLens hook {name!r} is no Hugging Face module's input or output; "
                f"supported: {TL_NAMES}, or give MODULE[:input|:output]."
            )
        return None
    layer, hook = parsed
    blocks = layer_hookpoints(model)
    if layer >= len(blocks):
        raise UnknownHookpointError(
            f"TransformerLens hook {name!r} names layer {layer}, "
            f"but the model has {len(blocks)} (0-{len(blocks) - 1})."
        )
    gemma_style = hasattr(model.get_submodule(blocks[layer]), "pre_feedforward_layernorm")
    return Site(_tl_module(blocks[layer], hook, gemma_style), TL_SIDES[hook])


def reads_attention_heads(site: Site) -> bool:
    """Whether ``site`` is the input of an attention output projection: the concatenated heads (``hook_z``)."""
    return (
        site.reads == "input"
        and re.search(r"(attn|attention)\.(o_proj|out_proj|c_proj|dense)$", site.module) is not None
    )


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; caught by ``capture``."""


def first_tensor(value) -> torch.Tensor:
    """``value`` itself, or its first element when a module returns (or is called with) a tuple."""
    return value[0] if isinstance(value, tuple) else value


def module_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The tensor a module was called with: its first positional argument, or ``hidden_states`` if passed by name."""
    if args:
        return first_tensor(args)
    return kwargs.get("hidden_states", next(iter(kwargs.values())))


@contextmanager
def hooks_removed(handles: list) -> Iterator[list]:
    """Yield ``handles`` and remove every one on exit, even on error."""
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


def capture(model: nn.Module, sites: Iterable[Site], run, *, stop: bool = True) -> dict[Site, torch.Tensor]:
    """Call ``run()`` (a forward pass of ``model``) and return the tensors at ``sites``.

    With ``stop`` the pass ends as soon as the last site has been read.
    """
    sites = list(dict.fromkeys(sites))
    found: dict[Site, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def make_hook(site: Site):
        def hook(module, args, kwargs, output):
            value = module_input(args, kwargs) if site.reads == "input" else output
            found[site] = first_tensor(value).detach()
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
