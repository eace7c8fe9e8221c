"""The one small interface every sparse coder (SAE, transcoder, neurons) implements."""

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import nn

from ..errors import CoderShapeError
from ..hooks import Reads, Site


class Latents(NamedTuple):
    """The active latents of a batch of tokens, never densified to ``[tokens, num_latents]``."""

    acts: torch.Tensor
    """``[tokens, k]`` activation values; zero where a row has fewer than k active latents."""

    indices: torch.Tensor
    """``[tokens, k]`` latent indices matching ``acts``."""


class SparseCoder(nn.Module, ABC):
    """Reads a tensor at a hookpoint and maps it to a few active latents and back.

    ``reads`` says whether the coder sees the hookpoint module's input (transcoders, MLP
    neurons, resid_pre and attention-head SAEs) or its output (residual-stream and MLP-output SAEs).
    """

    kind: str = "sparse-coder"
    reads_heads: bool | None = None
    """Whether the coder's own files say it reads the concatenated attention heads (TransformerLens
    ``hook_z``); None when they do not say. Lets ``load_coder`` refuse a site whose width matches only by accident."""
    writes_at: str | None = None
    """For a transcoder, the TransformerLens hook its files name as its output (SAELens ``hook_name_out``), if any."""
    origin: dict | None = None
    """Where a coder named through a registry came from (a SAELens release: its id, repo, folder and
    Neuronpedia id), recorded in ``describe``; None for a coder given by its folder."""

    def __init__(self, *, hookpoint: str, reads: Reads, num_latents: int, d_in: int, source: str):
        super().__init__()
        self.hookpoint = hookpoint
        self.reads: Reads = reads
        self.num_latents = num_latents
        self.d_in = d_in
        self.source = source

    @property
    def site(self) -> Site:
        """Where in the model this coder reads its input."""
        return Site(self.hookpoint, self.reads)

    @property
    def device(self) -> torch.device:
        """Where this coder's weights live; inputs are moved here before encoding."""
        return self.decoder_weight().device

    @abstractmethod
    def encode(self, x: torch.Tensor) -> Latents:
        """The active latents of each row of ``x`` (``[tokens, d_in]``)."""

    @abstractmethod
    def decoder_weight(self) -> torch.Tensor:
        """``[num_latents, d_out]``: the direction each latent writes."""

    def decoder_bias(self) -> torch.Tensor | None:
        """Bias added to every reconstruction, if the coder has one."""
        return None

    def decode(self, latents: Latents) -> torch.Tensor:
        """Map active latents back to ``[tokens, d_out]``."""
        w = self.decoder_weight()
        out = nn.functional.embedding_bag(latents.indices, w, per_sample_weights=latents.acts.to(w.dtype), mode="sum")
        bias = self.decoder_bias()
        return out if bias is None else out + bias

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the encoding of ``x``: the coder's estimate of its target at this site."""
        return self.decode(self.encode(x))

    def describe(self) -> dict:
        """What identifies this coder, for ``coder.json`` beside its cache."""
        return {
            "kind": self.kind,
            "source": self.source,
            "hookpoint": self.hookpoint,
            "reads": self.reads,
            "num_latents": self.num_latents,
            "d_in": self.d_in,
            **(self.origin or {}),
        }

    def check_width(self, width: int, model_name: str) -> None:
        """Fail with both numbers when the model's width at the site differs from ``d_in``."""
        if width != self.d_in:
            raise CoderShapeError(
                f"{self.kind} coder from {self.source!r} expects d_in={self.d_in}, but the "
                f"{self.reads} of {self.hookpoint} in model {model_name!r} has width {width}. "
                "Check that the coder was trained on this model and hookpoint."
            )


def active_rows(acts: torch.Tensor) -> Latents:
    """Sparse ``Latents`` of a dense ``[tokens, n]`` activation matrix (ReLU-like coders).

    k is the largest number of nonzero activations in any row of this batch.
    """
    k = max(int((acts > 0).sum(dim=-1).max()), 1) if acts.numel() else 1
    values, indices = acts.topk(k, dim=-1, sorted=False)
    return Latents(values.clamp_min(0), indices)
