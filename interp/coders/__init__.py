"""Sparse coders behind one interface, loaded from a spec ``KIND[:SOURCE][@HOOKPOINT]``.

A hookpoint is a module, optionally with the side read (``MODULE:input`` or ``MODULE:output``),
or a TransformerLens hook name such as ``blocks.2.attn.hook_z``.

>>> spec = CoderSpec.parse("sparsify:EleutherAI/sae-llama-3-8b-32x@layers.10")
>>> spec = CoderSpec.parse("saelens:./attn-sae@model.layers.2.self_attn.o_proj:input")
>>> spec = CoderSpec.parse("saelens:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")
>>> spec = CoderSpec.parse("topk-neurons@model.layers.6.mlp")
"""

from dataclasses import dataclass

from torch import nn

from ..errors import CoderFormatError, CoderShapeError, UnknownHookpointError
from ..hooks import Reads, Site, parse_site, reads_attention_heads, tl_site
from ..models import resolve_hookpoint
from .base import Latents, SparseCoder
from .dense import load_gemmascope, load_saelens
from .neurons import load_neurons
from .saelens_registry import load_registered, lookup
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


def load_coder(
    spec: CoderSpec, model: nn.Module, *, neuron_k: int = 32, saelens_registry: str | None = None
) -> SparseCoder:
    """Load the coder ``spec`` names, with its hookpoint resolved against ``model``.

    A ``saelens:RELEASE/SAE_ID`` source is looked up in ``saelens_registry`` (a file in SAELens'
    ``pretrained_saes.yaml`` schema; by default the installed sae-lens's own).
    """
    if spec.kind in NEURON_KINDS:
        if parse_site(spec.hookpoint)[1]:
            raise CoderFormatError(
                f"{spec.kind}@ takes the MLP module without a side: {spec.kind}@model.layers.N.mlp."
            )
        return load_neurons(model, spec.hookpoint, None if spec.kind == "neurons" else neuron_k)
    if spec.kind not in FILE_KINDS:
        raise CoderFormatError(f"Coder kind {spec.kind!r} is not loaded from files.")
    module, side = parse_site(spec.hookpoint) if spec.hookpoint else (None, None)
    entry = lookup(spec.source, saelens_registry) if spec.kind == "saelens" else None
    coder = load_registered(entry, module) if entry else FILE_KINDS[spec.kind](spec.source, module)
    try:
        _place(coder, model, side)
    except UnknownHookpointError as e:
        if spec.hookpoint:
            raise
        raise UnknownHookpointError(
            f"The {spec.kind} coder {spec.source!r} does not name a module of this model "
            f"({coder.hookpoint!r} is a guess from its files): "
            f"add @MODULE, e.g. {spec.kind}:{spec.source}@model.layers.6. {e}"
        ) from None
    return coder


def _transcodes(coder: SparseCoder) -> bool:
    """Whether ``coder`` reads its module's input and writes that module's output."""
    return bool(coder.describe().get("transcode"))


def _place(coder: SparseCoder, model: nn.Module, side: Reads | None = None) -> None:
    """Resolve ``coder``'s hookpoint (a module or TransformerLens name) against ``model``, reading ``side`` if given.

    Refuses a site the coder's own files contradict: a transcoder whose input and output are not
    one module's, or attention-head coders off the heads (and others on them), whose width would
    match only by accident.
    """
    site = tl_site(model, coder.hookpoint)
    if site is not None and side:
        raise CoderFormatError(f"TransformerLens hook {coder.hookpoint!r} already says what it reads; drop ':{side}'.")
    if site is not None:
        _check_transcoder_output(coder, model, site)
        coder.hookpoint, coder.reads = site
    coder.hookpoint = resolve_hookpoint(model, coder.hookpoint)
    if side == "output" and _transcodes(coder):
        raise CoderFormatError(
            f"{coder.kind} transcoder {coder.source!r} reads its module's input and writes its output; drop ':output'."
        )
    coder.reads = side or coder.reads
    _check_heads(coder)


def _check_transcoder_output(coder: SparseCoder, model: nn.Module, read: Site) -> None:
    """A transcoder must read a module's input and write the same module's output (its files' ``hook_name_out``)."""
    if not _transcodes(coder):
        return
    written = tl_site(model, coder.writes_at) if coder.writes_at else Site(read.module, "output")
    if read.reads != "input" or written != Site(read.module, "output"):
        raise CoderFormatError(
            f"{coder.kind} transcoder {coder.source!r} reads hook_name={coder.hookpoint!r} "
            f"({read.module}:{read.reads}) and writes hook_name_out={coder.writes_at!r} "
            f"({written.module}:{written.reads}); only transcoders that read "
            "a module's input and write that module's output are supported: give @MODULE to choose one."
        )


def _check_heads(coder: SparseCoder) -> None:
    """Refuse an attention-head coder off the concatenated heads, or another coder on them."""
    on_heads = reads_attention_heads(coder.site)
    if coder.reads_heads is None or coder.reads_heads == on_heads:
        return
    if coder.reads_heads:
        raise CoderShapeError(
            f"{coder.kind} coder {coder.source!r} reads the concatenated attention heads (hook_z), but "
            f"{coder.hookpoint}:{coder.reads} is not an attention output projection's input, so its width would match "
            "only by accident; use @model.layers.N.self_attn.o_proj:input."
        )
    raise CoderShapeError(
        f"{coder.kind} coder {coder.source!r} was not trained on attention heads, but {coder.hookpoint}:{coder.reads} "
        "is the concatenated heads, whose width would match only by accident; give the module it was trained on."
    )
