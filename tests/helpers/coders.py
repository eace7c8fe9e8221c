"""Sparse coders made for tests: random weights in each library's on-disk layout, and coders built in memory.

``random_dense_weights`` draws SAELens / Gemma Scope weights for the tiny models' width, which
``write_saelens`` and ``write_gemmascope`` lay out as those tools do; ``random_sae`` is a random
sparsify TopK SAE; ``planted_word_coder`` has one latent that makes a model say a chosen word.
"""

import json

import numpy as np
import torch
from safetensors.torch import save_file
from sparsify import SaeConfig
from sparsify import SparseCoder as SparsifyModule

from interp.coders.dense import DenseEncoderCoder
from interp.coders.sparsify_coder import SparsifyCoder
from tests.helpers.models import D_MODEL

D_SAE = 128
"""Latents of the random SAELens / Gemma Scope coders."""


def random_dense_weights(x: torch.Tensor, *, seed: int = 0, threshold: bool = False) -> dict[str, torch.Tensor]:
    """SAELens / Gemma Scope weights scaled so that pre-activations on ``x`` are O(1) and sparse after ReLU."""
    g = torch.Generator().manual_seed(seed)
    scale = x.norm(dim=-1).mean()
    w = {
        "W_enc": torch.randn(D_MODEL, D_SAE, generator=g) / scale,
        "W_dec": torch.randn(D_SAE, D_MODEL, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g) * 0.5 - 1.0,
        "b_dec": torch.randn(D_MODEL, generator=g) * x.std(),
    }
    if threshold:
        w["threshold"] = torch.rand(D_SAE, generator=g)
    return w


def write_saelens(
    folder,
    w,
    *,
    architecture="standard",
    k=None,
    hook_name="blocks.2.hook_resid_post",
    apply_b_dec_to_input=True,
    normalize_activations="none",
):
    """``w`` saved as SAELens saves an SAE: ``cfg.json`` and ``sae_weights.safetensors`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "architecture": architecture,
        "hook_name": hook_name,
        "apply_b_dec_to_input": apply_b_dec_to_input,
        "normalize_activations": normalize_activations,
        "activation_fn_kwargs": {"k": k} if k else {},
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({name: t.contiguous() for name, t in w.items()}, folder / "sae_weights.safetensors")
    return folder


def write_gemmascope(folder, w):
    """``w`` saved as Gemma Scope publishes an SAE: one ``params.npz`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **{name: t.numpy() for name, t in w.items()})
    return folder


def random_sae(d_in: int, hookpoint: str, seed: int = 0, k: int = 6, bias_std: float = 0.1) -> SparsifyCoder:
    """A sparsify TopK SAE at ``hookpoint`` with random weights and a random encoder bias (std ``bias_std``)."""
    torch.manual_seed(seed)
    sae = SparsifyModule(d_in, SaeConfig(expansion_factor=4, k=k))
    sae.encoder.bias.data.normal_(0, bias_std)
    return SparsifyCoder(sae.requires_grad_(False), hookpoint=hookpoint, source="random")


def planted_word_coder(lm, word: str = " cat", hookpoint: str = "model.layers.24") -> DenseEncoderCoder:
    """A coder whose latent 0 writes the (unit) input embedding of ``word``: steering it makes the model say the word.

    SmolLM2 ties its input and output embeddings, so the direction also raises the word's logit.
    The encoder never fires (bias -1, zero weights): the latent matters only through its output.
    """
    token = lm.tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(token) == 1, f"{word!r} is not one token"
    d = lm.model.config.hidden_size
    direction = lm.model.get_input_embeddings().weight[token[0]].detach().float()
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(4, d, generator=g) / d**0.5
    W_dec[0] = direction / direction.norm()
    return DenseEncoderCoder(
        W_enc=torch.zeros(d, 4),
        b_enc=-torch.ones(4),
        W_dec=W_dec,
        b_dec=torch.zeros(d),
        activation="relu",
        hookpoint=hookpoint,
        reads="output",
        source="planted",
        kind="saelens",
    )
