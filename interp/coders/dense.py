"""Coders whose encoder is a dense affine map and a ReLU, JumpReLU or TopK: SAELens and Gemma Scope.

Their activations are sparse after the nonlinearity; ``encode`` keeps only the active ones.
"""

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import CoderFormatError
from ..hooks import Reads
from .base import Latents, SparseCoder, active_rows
from .source import fetch

ACTIVATIONS = ("relu", "jumprelu", "topk")


class DenseEncoderCoder(SparseCoder):
    """``acts = f(W_enc (x - b_dec·apply) + b_enc)`` with f one of ReLU, JumpReLU(threshold), TopK(k)."""

    def __init__(
        self,
        *,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        activation: str,
        hookpoint: str,
        reads: Reads,
        source: str,
        kind: str,
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = False,
    ):
        d_in, n = W_enc.shape
        super().__init__(hookpoint=hookpoint, reads=reads, num_latents=n, d_in=d_in, source=source)
        if activation not in ACTIVATIONS:
            raise CoderFormatError(f"Unsupported activation {activation!r}; supported: {', '.join(ACTIVATIONS)}.")
        if activation == "jumprelu" and threshold is None:
            raise CoderFormatError(f"JumpReLU coder {source!r} has no threshold parameter.")
        if activation == "topk" and not k:
            raise CoderFormatError(f"TopK coder {source!r} does not say its k.")
        if W_dec.shape != (n, d_in) or b_enc.shape != (n,) or b_dec.shape != (d_in,):
            raise CoderFormatError(
                f"Inconsistent shapes in {source!r}: W_enc {tuple(W_enc.shape)}, W_dec {tuple(W_dec.shape)}, "
                f"b_enc {tuple(b_enc.shape)}, b_dec {tuple(b_dec.shape)}."
            )
        self.kind = kind
        self.activation = activation
        self.k = k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.W_enc = nn.Parameter(W_enc.float(), requires_grad=False)
        self.b_enc = nn.Parameter(b_enc.float(), requires_grad=False)
        self.W_dec = nn.Parameter(W_dec.float(), requires_grad=False)
        self.b_dec = nn.Parameter(b_dec.float(), requires_grad=False)
        self.threshold = None if threshold is None else nn.Parameter(threshold.float(), requires_grad=False)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before the nonlinearity, ``[tokens, num_latents]``."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> Latents:
        pre = self.pre_acts(x)
        if self.activation == "topk":
            values, indices = pre.topk(self.k, dim=-1, sorted=False)
            return Latents(values.relu(), indices)
        if self.activation == "jumprelu":
            pre = pre * (pre > self.threshold)
        return active_rows(pre.relu())

    def decoder_weight(self) -> torch.Tensor:
        return self.W_dec

    def decoder_bias(self) -> torch.Tensor:
        return self.b_dec

    def describe(self) -> dict:
        return {**super().describe(), "activation": self.activation, "k": self.k}


TL_HOOKS = {
    "hook_resid_post": ("model.layers.{}", "output"),
    "hook_resid_pre": ("model.layers.{}", "input"),
    "hook_mlp_out": ("model.layers.{}.mlp", "output"),
    "hook_mlp_in": ("model.layers.{}.mlp", "input"),
    "hook_attn_out": ("model.layers.{}.self_attn", "output"),
}
"""TransformerLens hook names (used by SAELens) -> Hugging Face module and side."""


def translate_tl_hook(name: str) -> tuple[str, Reads] | None:
    """``blocks.6.hook_resid_post`` -> (``model.layers.6``, 'output'); None if not a known name."""
    m = re.fullmatch(r"blocks\.(\d+)\.(hook_\w+)", name)
    if not m or m.group(2) not in TL_HOOKS:
        return None
    module, reads = TL_HOOKS[m.group(2)]
    return module.format(m.group(1)), reads  # type: ignore[return-value]


def _saelens_activation(cfg: dict) -> tuple[str, int | None]:
    arch = cfg.get("architecture", "standard")
    fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    k = (cfg.get("activation_fn_kwargs") or {}).get("k") or cfg.get("k")
    if arch == "jumprelu":
        return "jumprelu", None
    if arch == "topk" or fn == "topk":
        return "topk", k
    if arch == "standard" and fn == "relu":
        return "relu", None
    raise CoderFormatError(f"SAELens architecture {arch!r} with activation {fn!r} is not supported (relu, jumprelu, topk are).")


def load_saelens(source: str, hookpoint: str | None = None) -> DenseEncoderCoder:
    """Load a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``).

    The hookpoint comes from ``hookpoint`` or from the config's TransformerLens hook name.
    """
    folder = fetch(source)
    if not (folder / "cfg.json").is_file() or not (folder / "sae_weights.safetensors").is_file():
        raise CoderFormatError(f"No SAELens coder at {folder}: expected cfg.json and sae_weights.safetensors.")
    cfg = json.loads((folder / "cfg.json").read_text())
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise CoderFormatError(
            f"SAELens coder {source!r} normalizes activations ({cfg['normalize_activations']}); only 'none' is supported."
        )
    w = load_file(folder / "sae_weights.safetensors")
    if "log_threshold" in w and "threshold" not in w:
        w["threshold"] = w["log_threshold"].exp()
    activation, k = _saelens_activation(cfg)
    reads: Reads = "output"
    tl_name = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
    translated = translate_tl_hook(tl_name) if tl_name else None
    if hookpoint is None:
        if translated is None:
            raise CoderFormatError(f"Cannot map SAELens hook {tl_name!r} to a module; give it as saelens:{source}@MODULE.")
        hookpoint, reads = translated
    elif translated is not None:
        reads = translated[1]
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(w)
    if missing:
        raise CoderFormatError(f"SAELens weights at {folder} lack {', '.join(sorted(missing))}.")
    return DenseEncoderCoder(
        W_enc=w["W_enc"], b_enc=w["b_enc"], W_dec=w["W_dec"], b_dec=w["b_dec"],
        threshold=w.get("threshold"), activation=activation, k=k,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", False)),
        hookpoint=hookpoint, reads=reads, source=source, kind="saelens",
    )


def _gemmascope_hookpoint(path: str) -> tuple[str, Reads] | None:
    """Guess the module from a Gemma Scope path such as ``gemma-scope-2b-pt-mlp/layer_12/...``."""
    m = re.search(r"layer_(\d+)", path)
    if not m:
        return None
    layer = m.group(1)
    if "-mlp" in path:
        return f"model.layers.{layer}.mlp", "output"
    if "-att" in path:
        return f"model.layers.{layer}.self_attn", "output"
    return f"model.layers.{layer}", "output"


def load_gemmascope(source: str, hookpoint: str | None = None) -> DenseEncoderCoder:
    """Load Gemma Scope JumpReLU parameters (``params.npz`` with W_enc, W_dec, b_enc, b_dec, threshold)."""
    path = fetch(source)
    npz = path / "params.npz" if path.is_dir() else path
    if not npz.is_file():
        raise CoderFormatError(f"No Gemma Scope params.npz at {path}.")
    with np.load(npz, allow_pickle=False) as data:
        w = {name: torch.from_numpy(data[name].astype(np.float32)) for name in data.files}
    missing = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"} - set(w)
    if missing:
        raise CoderFormatError(f"Gemma Scope file {npz} lacks {', '.join(sorted(missing))}.")
    reads: Reads = "output"
    if hookpoint is None:
        guessed = _gemmascope_hookpoint(source)
        if guessed is None:
            raise CoderFormatError(f"Cannot tell the layer of {source!r}; give it as gemmascope:{source}@model.layers.N.")
        hookpoint, reads = guessed
    return DenseEncoderCoder(
        W_enc=w["W_enc"], b_enc=w["b_enc"], W_dec=w["W_dec"], b_dec=w["b_dec"], threshold=w["threshold"],
        activation="jumprelu", hookpoint=hookpoint, reads=reads, source=source, kind="gemmascope",
    )
