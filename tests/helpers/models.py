"""Tiny random models that share the embedded model's tokenizer: built in milliseconds, real transformers inside."""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interp.models import LoadedModel

TEXT = "The quick brown fox jumps over the lazy dog, and sparse autoencoders find its features."
"""A sentence to run a tiny model on."""
D_MODEL, D_MLP = 32, 64
"""The tiny models' residual-stream and MLP widths."""


def tiny_llama(tokenizer, seed: int = 0, layers: int = 4, hidden: int = D_MODEL) -> LoadedModel:
    """A randomly initialised 4-layer Llama sharing the embedded model's tokenizer."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-llama")


def tiny_gemma2(tokenizer) -> LoadedModel:
    """A random 4-layer Gemma 2: unlike Llama it normalises attention and MLP outputs before adding them."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    )
    model = Gemma2ForCausalLM(cfg).eval().requires_grad_(False)
    with torch.no_grad():  # Gemma norms scale by (1 + weight); make them visibly non-trivial
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-gemma2")


def save_tiny_model(folder: Path, tokenizer) -> Path:
    """A 4-layer random Llama with the embedded model's tokenizer, saved as safetensors: a real
    model folder for ``--model``.
    """
    lm = tiny_llama(tokenizer)
    lm.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
