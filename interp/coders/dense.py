"""Coders whose encoder is a dense affine map and a ReLU, JumpReLU or TopK: SAELens and Gemma Scope.

Their activations are sparse after the nonlinearity; ``encode`` keeps only the active ones.
"""

import json
import re

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import CoderFormatError
from ..hooks import Reads
from ..hooks import Site
from ..models import layer_hookpoints
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


TL_SIDES: dict[str, Reads] = {
    "hook_resid_pre": "input",
    "hook_resid_post": "output",
    "hook_attn_out": "output",
    "hook_mlp_in": "input",
    "hook_mlp_out": "output",
}
"""TransformerLens hook names (used by SAELens) that map onto Hugging Face modules, and the side read."""


def _tl_parts(name: str) -> tuple[int, str] | None:
    m = re.fullmatch(r"blocks\.(\d+)\.(hook_\w+)", name or "")
    return (int(m.group(1)), m.group(2)) if m and m.group(2) in TL_SIDES else None


def tl_site(model: nn.Module, name: str) -> Site | None:
    """The module and side of ``model`` that TransformerLens hook ``name`` reads; None if not one.

    Gemma 2/3 blocks normalise attention and MLP outputs before adding them to the residual
    stream; TransformerLens' ``hook_*_out`` read after those norms, and ``hook_mlp_in`` reads
    before the pre-MLP norm.
    """
    parts = _tl_parts(name)
    if parts is None:
        return None
    layer, hook = parts
    block_name = layer_hookpoints(model)[layer]
    block = model.get_submodule(block_name)
    gemma_style = hasattr(block, "pre_feedforward_layernorm")
    module = {
        "hook_resid_pre": block_name,
        "hook_resid_post": block_name,
        "hook_attn_out": f"{block_name}.post_attention_layernorm" if gemma_style else f"{block_name}.self_attn",
        "hook_mlp_in": f"{block_name}.pre_feedforward_layernorm" if gemma_style else f"{block_name}.post_attention_layernorm",
        "hook_mlp_out": f"{block_name}.post_feedforward_layernorm" if gemma_style else f"{block_name}.mlp",
    }[hook]
    return Site(module, TL_SIDES[hook])


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
    tl_name = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
    parts = _tl_parts(tl_name)
    if hookpoint is None and parts is None:
        raise CoderFormatError(f"Cannot map SAELens hook {tl_name!r} to a module; give it as saelens:{source}@MODULE.")
    reads: Reads = TL_SIDES[parts[1]] if parts else "output"
    # A TransformerLens name stays as the hookpoint until load_coder resolves it against the model.
    hookpoint = hookpoint or tl_name
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
    """Guess the site from a Gemma Scope path such as ``gemma-scope-2b-pt-mlp/layer_12/...``.

    The layer is the last ``layer_N`` folder; the release folder says residual, MLP or attention.
    Attention SAEs read the concatenated heads (``hook_z``): the input of ``o_proj``.
    """
    parts = re.split(r"[/\\]", path)
    layers = [int(m.group(1)) for p in parts if (m := re.fullmatch(r"layer_(\d+)", p))]
    if not layers:
        return None
    layer = layers[-1]
    release = next((p for p in reversed(parts) if "gemma-scope" in p), "")
    if release.endswith("-mlp"):
        return f"blocks.{layer}.hook_mlp_out", "output"
    if release.endswith("-att"):
        return f"model.layers.{layer}.self_attn.o_proj", "input"
    return f"blocks.{layer}.hook_resid_post", "output"


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
