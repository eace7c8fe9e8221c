"""Sparse coders behind one interface, loaded from a spec ``KIND[:SOURCE][@HOOKPOINT]``.

>>> spec = CoderSpec.parse("sparsify:EleutherAI/sae-llama-3-8b-32x@layers.10")
>>> spec = CoderSpec.parse("topk-neurons@model.layers.6.mlp")
"""

from dataclasses import dataclass

from torch import nn

from ..errors import CoderFormatError
from ..models import resolve_hookpoint
from .base import Latents, SparseCoder
from .dense import load_gemmascope, load_saelens, tl_site
from .neurons import load_neurons
from .sparsify_coder import load_sparsify

FILE_KINDS = {"sparsify": load_sparsify, "saelens": load_saelens, "gemmascope": load_gemmascope}
NEURON_KINDS = ("neurons", "topk-neurons")
KINDS = (*FILE_KINDS, *NEURON_KINDS, "default")

__all__ = ["CoderSpec", "Latents", "SparseCoder", "load_coder", "KINDS"]


@dataclass(frozen=True)
class CoderSpec:
    """A parsed coder spec: what kind, from where, at which hookpoint."""

    kind: str
    source: str | None = None
    hookpoint: str | None = None

    @classmethod
    def parse(cls, text: str) -> "CoderSpec":
        """Parse ``KIND[:SOURCE][@HOOKPOINT]``; the hookpoint is the part after the last '@'."""
        body, _, hookpoint = text.rpartition("@") if "@" in text else (text, "", "")
        kind, _, source = body.partition(":")
        if kind not in KINDS:
            raise CoderFormatError(f"Unknown coder kind {kind!r} in {text!r}; use one of {', '.join(KINDS)}.")
        if kind in FILE_KINDS and not source:
            raise CoderFormatError(f"{kind} coders need a source: {kind}:PATH_OR_HUB_ID[@HOOKPOINT].")
        if kind in NEURON_KINDS and not hookpoint:
            raise CoderFormatError(f"{kind} needs the MLP module: {kind}@model.layers.N.mlp.")
        return cls(kind, source or None, hookpoint or None)


def load_coder(spec: CoderSpec, model: nn.Module, *, neuron_k: int = 32) -> SparseCoder:
    """Load the coder ``spec`` names, with its hookpoint resolved against ``model``."""
    if spec.kind in NEURON_KINDS:
        return load_neurons(model, spec.hookpoint, None if spec.kind == "neurons" else neuron_k)
    if spec.kind not in FILE_KINDS:
        raise CoderFormatError(f"Coder kind {spec.kind!r} is not loaded from files.")
    coder = FILE_KINDS[spec.kind](spec.source, spec.hookpoint)
    site = tl_site(model, coder.hookpoint)
    if site is not None:
        coder.hookpoint, coder.reads = site
    coder.hookpoint = resolve_hookpoint(model, coder.hookpoint)
    return coder
