"""Train the default TopK SAE with eai-sparsify, running the model only up to the hookpoint.

No pretrained SAE exists offline for the embedded model, so the default run trains one.
sparsify's trainer calls the whole model each step; ``Truncated`` ends each pass right after
the hooked module, which makes training at layer 6 of 30 several times faster.
"""

import json
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import torch
from datasets import Dataset
from torch import nn

from ..atomic import write_json_atomic
from ..config import TrainConfig
from ..hooks import Site, capture, capture_tokens
from ..models import LoadedModel, resolve_hookpoint
from .sparsify_coder import SparsifyCoder, load_sparsify


class Truncated(nn.Module):
    """A causal LM whose forward stops after ``stop_at``; looks like the model to sparsify."""

    def __init__(self, model: nn.Module, stop_at: str):
        super().__init__()
        self.inner = model
        self.stop_at = stop_at

    @property
    def base_model(self) -> nn.Module:
        return self.inner.base_model

    @property
    def config(self):
        return self.inner.config

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def dummy_inputs(self) -> dict:
        return {"input_ids": torch.tensor([[0, 1, 2]])}

    def forward(self, input_ids: torch.Tensor, **_) -> None:
        # Registered here, after sparsify's own hooks, so theirs still run on the stop module.
        capture(self.inner, [Site(self.stop_at)], lambda: self.inner(input_ids=input_ids, use_cache=False))


def special_tokens(tokenizer) -> list[int]:
    """BOS/EOS ids: attention sinks with residual norms ~8x the rest, left out of training and FVU."""
    return sorted({t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None})


def heldout_quality(coder: SparsifyCoder, lm: LoadedModel, windows: torch.Tensor) -> tuple[float, float]:
    """Fraction of variance unexplained and fraction of never-firing latents on ``windows``.

    Special tokens are left out, as in training: their huge norms would dominate the variance.
    """
    ids = windows.long().to(lm.device)
    x = capture_tokens(lm.model, ids, [coder.site])[coder.site]
    keep = ~torch.isin(ids, torch.tensor(special_tokens(lm.tokenizer), device=ids.device))
    x = x[keep].float()
    with torch.inference_mode():
        fvu = (x - coder.reconstruct(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        _, indices = coder.encode(x)
    fired = torch.zeros(coder.num_latents, dtype=torch.bool)
    fired[indices.flatten().cpu()] = True
    return float(fvu), float((~fired).float().mean())


def train_default_sae(
    lm: LoadedModel, windows: torch.Tensor, heldout: torch.Tensor, out_dir: Path, cfg: TrainConfig
) -> dict:
    """Train a TopK SAE on ``windows`` at ``cfg.train_hookpoint`` and save it in sparsify's format.

    Returns (and writes to ``train.json``) the held-out fraction of variance unexplained and
    the fraction of latents that never fired on the held-out windows.
    """
    from sparsify import SaeConfig, Trainer
    from sparsify import TrainConfig as SparsifyTrainConfig

    hookpoint = resolve_hookpoint(lm.model, cfg.train_hookpoint)
    base_name = hookpoint.removeprefix(lm.model.base_model_prefix + ".")
    out_dir = Path(out_dir)
    scratch = out_dir.with_name(out_dir.name + ".training")
    shutil.rmtree(scratch, ignore_errors=True)
    train_cfg = SparsifyTrainConfig(
        SaeConfig(expansion_factor=cfg.expansion_factor, k=cfg.k),
        batch_size=cfg.train_batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        lr_warmup_steps=0,
        hookpoints=[base_name],
        init_seeds=[cfg.train_seed],
        log_to_wandb=False,
        save_dir=str(scratch),
        run_name="sae",
        save_every=10**9,
        exclude_tokens=special_tokens(lm.tokenizer),
    )
    data = Dataset.from_dict({"input_ids": windows.long().tolist()}).with_format("torch")
    torch.manual_seed(cfg.train_seed)
    log = StringIO()
    with redirect_stdout(log):  # sparsify prints set-up chatter; its tqdm bar still shows
        trainer = Trainer(train_cfg, data, Truncated(lm.model, hookpoint))
        trainer.fit()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.move(str(scratch / "sae" / base_name), out_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    coder = load_sparsify(str(out_dir), hookpoint).to(lm.device)
    fvu, dead = heldout_quality(coder, lm, heldout)
    report = {
        "hookpoint": hookpoint,
        "train_tokens": int(windows.numel()),
        "heldout_tokens": int(heldout.numel()),
        "num_latents": coder.num_latents,
        "k": cfg.k,
        "heldout_fvu": fvu,
        "heldout_dead_fraction": dead,
    }
    write_json_atomic(out_dir / "train.json", report)
    return report


def load_train_report(out_dir: Path) -> dict | None:
    """The report of an earlier training into ``out_dir``, if it finished."""
    path = Path(out_dir) / "train.json"
    return json.loads(path.read_text()) if path.is_file() else None
