"""EleutherAI sparsify coders (TopK SAEs and transcoders): ``cfg.json`` + ``sae.safetensors``.

The weights and the encoder are sparsify's own; this module only adapts them to our interface.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CoderFormatError
from .base import Latents, SparseCoder
from .source import fetch

if TYPE_CHECKING:
    from sparsify import SparseCoder as SparsifyModule


class SparsifyCoder(SparseCoder):
    """A sparsify ``SparseCoder``; transcoders read their module's input."""

    kind = "sparsify"

    def __init__(self, sae: "SparsifyModule", *, hookpoint: str, source: str):
        super().__init__(
            hookpoint=hookpoint,
            reads="input" if sae.cfg.transcode else "output",
            num_latents=sae.num_latents,
            d_in=sae.d_in,
            source=source,
        )
        self.sae = sae

    def encode(self, x: torch.Tensor) -> Latents:
        acts, indices, _ = self.sae.encode(x.to(self.sae.dtype))
        return Latents(acts, indices)

    def decoder_weight(self) -> torch.Tensor:
        return self.sae.W_dec

    def decoder_bias(self) -> torch.Tensor:
        return self.sae.b_dec

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        if self.sae.W_skip is not None:
            out = out + x.to(self.sae.dtype) @ self.sae.W_skip.mT
        return out

    def describe(self) -> dict:
        return {**super().describe(), "k": self.sae.cfg.k, "transcode": self.sae.cfg.transcode}


def _candidates(hookpoint: str) -> list[str]:
    """Folder names sparsify may have used for ``hookpoint`` (it names them relative to the base model)."""
    if hookpoint.startswith("model."):
        return [hookpoint, hookpoint.removeprefix("model.")]
    return [hookpoint, f"model.{hookpoint}"]


def load_sparsify(source: str, hookpoint: str | None = None) -> SparsifyCoder:
    """Load a sparsify coder from a folder holding ``cfg.json``, or from one of its hookpoint subfolders.

    >>> load_sparsify("EleutherAI/sae-llama-3-8b-32x", "layers.10")
    >>> load_sparsify("runs/demo/coders/model.layers.6")

    sparsify is imported here, not with this module: its import pulls in transformers' modeling code (about 4 s),
    which commands that never open a sparsify coder (``interp summary``, ``publish --dry-run``) need not pay.
    """
    from sparsify import SparseCoder as SparsifyModule

    # Hub repos name their folders relative to the base model (layers.6)
    hub_folder = hookpoint.removeprefix("model.") if hookpoint and not Path(source).exists() else None
    root = fetch(source, hub_folder)
    folder = root
    if not (root / "cfg.json").is_file():
        subs = [root / name for name in _candidates(hookpoint or "") if (root / name / "cfg.json").is_file()]
        if not subs:
            available = sorted(p.name for p in root.iterdir() if (p / "cfg.json").is_file()) if root.is_dir() else []
            raise CoderFormatError(
                f"No sparsify coder (cfg.json + sae.safetensors) at {root}"
                + (f" for hookpoint {hookpoint!r}; available: {', '.join(available)}" if available else "")
                + "."
            )
        folder = subs[0]
    if not (folder / "sae.safetensors").is_file():
        raise CoderFormatError(
            f"{folder} has cfg.json but no sae.safetensors; is it a SAELens folder? Use saelens:{source}"
        )
    try:
        cfg = json.loads((folder / "cfg.json").read_text())
        sae = SparsifyModule.load_from_disk(folder)
    except (KeyError, json.JSONDecodeError, RuntimeError) as e:
        raise CoderFormatError(f"Cannot read sparsify coder at {folder}: {e}") from e
    sae = sae.to(torch.float32)
    sae.requires_grad_(False)
    return SparsifyCoder(sae, hookpoint=hookpoint or cfg.get("hookpoint") or folder.name, source=source)
