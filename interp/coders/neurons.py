"""MLP neurons as a baseline coder: raw (every positive neuron) or top-k sparsified.

A neuron is the input of the MLP's output projection; its decoder direction is the matching
column of that projection, so neurons plug into every stage like an SAE would.
"""

import torch
from torch import nn

from ..errors import CoderFormatError, CoderShapeError
from ..models import resolve_hookpoint
from .base import Latents, SparseCoder, active_rows

OUTPUT_PROJECTIONS = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "fc_out")
"""Names architectures give the MLP's output projection (Llama, GPT-2, NeoX, OPT, ...)."""


class NeuronCoder(SparseCoder):
    """The MLP's hidden activations; ``k=None`` keeps every positive neuron, else the k largest."""

    def __init__(self, projection: nn.Module, *, hookpoint: str, k: int | None, source: str):
        weight = projection.weight
        n = weight.shape[1] if isinstance(projection, nn.Linear) else weight.shape[0]
        super().__init__(hookpoint=hookpoint, reads="input", num_latents=n, d_in=n, source=source)
        if k is not None and not 1 <= k <= n:
            raise CoderShapeError(
                f"k={k} top neurons asked of {source}, which has {n}: use --neuron-k between 1 and {n}."
            )
        self.kind = "neurons" if k is None else "topk-neurons"
        self.k = k
        self._projection = [projection]  # a list keeps the model's weights out of this module's state

    def encode(self, x: torch.Tensor) -> Latents:
        x = x.float()
        if self.k is None:
            return active_rows(x)
        values, indices = x.topk(self.k, dim=-1, sorted=False)
        return Latents(values, indices)

    def decoder_weight(self) -> torch.Tensor:
        proj = self._projection[0]
        w = proj.weight.float()
        return w.T if isinstance(proj, nn.Linear) else w

    def decoder_bias(self) -> torch.Tensor | None:
        bias = getattr(self._projection[0], "bias", None)
        return None if bias is None else bias.float()

    def describe(self) -> dict:
        return {**super().describe(), "k": self.k}


def load_neurons(model: nn.Module, mlp: str, k: int | None) -> NeuronCoder:
    """Neurons of the MLP module ``mlp`` (e.g. ``model.layers.6.mlp``) of ``model``."""
    mlp = resolve_hookpoint(model, mlp)
    module = model.get_submodule(mlp)
    for name in OUTPUT_PROJECTIONS:
        if hasattr(module, name):
            return NeuronCoder(getattr(module, name), hookpoint=f"{mlp}.{name}", k=k, source=mlp)
    raise CoderFormatError(
        f"{mlp} has no MLP output projection ({', '.join(OUTPUT_PROJECTIONS)}); point neurons@ at an MLP module."
    )
