"""One side of a comparison: a coder of a run directory, its explained latents and their decoder rows.

A side is written ``RUN_DIR[:CODER]``; the coder name is the one in ``explanations.jsonl``
(``model.layers.6``, ``model.layers.6.mlp.topk-neurons``) and may be left out when the run
explained only one coder.
"""

import json
import random
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InterpError
from ..models import load_model
from ..rundir import RunDir, not_a_run
from ..subject import open_coders


class Side(NamedTuple):
    """The explained latents of one coder of one run, in latent order."""

    run_dir: Path
    coder: str
    explainer: str
    latents: list[int]
    explanations: list[str]
    explained: int
    """How many latents the run explained (``latents`` may be a sample of them)."""

    @property
    def label(self) -> str:
        """``run:coder``, as the user would write it."""
        return f"{self.run_dir}:{self.coder}"

    def sample(self, max_latents: int, seed: int) -> "Side":
        """At most ``max_latents`` of the latents, drawn with ``seed`` and kept in latent order."""
        if len(self.latents) <= max_latents:
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.latents)), max_latents))
        return self._replace(
            latents=[self.latents[i] for i in keep], explanations=[self.explanations[i] for i in keep]
        )


def parse_side(text: str) -> tuple[Path, str | None]:
    """``RUN_DIR[:CODER]`` -> (run directory, coder or None); a directory whose name holds ':' wins."""
    if Path(text).is_dir():
        return Path(text), None
    run, sep, coder = text.rpartition(":")
    if not sep or not Path(run).is_dir():
        raise InterpError(not_a_run(repr(text), "give RUN_DIR or RUN_DIR:CODER."))
    return Path(run), coder or None


def _pick(kind: str, wanted: str | None, rows: list[dict], where: str, how: str) -> str:
    """The ``kind`` (coder or explainer) ``wanted``, or the only one ``rows`` hold; errors list what there is."""
    available = Counter(name for name, _ in {(r[kind], r["latent"]) for r in rows})
    if wanted is not None:
        if wanted not in available:
            raise InterpError(
                f"{where} has no usable explanations for {kind} {wanted!r}; it has: {', '.join(sorted(available))}."
            )
        return wanted
    if len(available) > 1:
        found = ", ".join(f"{k} ({n} latents)" for k, n in sorted(available.items()))
        raise InterpError(f"{where} has explanations for several {kind}s ({found}): {how}.")
    return next(iter(available))


def load_side(text: str, explainer: str | None = None) -> Side:
    """The ``ok`` explanations of the coder ``text`` names (the last one per latent), by ``explainer``.

    ``explainer`` None takes the only explainer that explained this coder.
    """
    run_dir, coder = parse_side(text)
    with RunDir(run_dir).reading() as db:
        found = db.usable_texts()
    rows = [{"coder": c, "latent": k, "explainer": e, "explanation": t} for c, k, e, t in found if t]
    if not rows:
        raise InterpError(f"{run_dir} has no usable explanations: run `interp explain --run-dir {run_dir}` first.")
    coder = _pick("coder", coder, rows, str(run_dir), f"pick one as {run_dir}:CODER")
    rows = [r for r in rows if r["coder"] == coder]
    explainer = _pick("explainer", explainer, rows, f"{run_dir}:{coder}", "pass --explainer")
    by_latent = {r["latent"]: r["explanation"] for r in rows if r["explainer"] == explainer}
    latents = sorted(by_latent)
    return Side(run_dir, coder, explainer, latents, [by_latent[i] for i in latents], len(latents))


class Decoder(NamedTuple):
    """The decoder rows of a side's latents and where the coder writes them."""

    rows: np.ndarray
    """``[latents, d_out]`` float32, in the side's latent order."""

    hookpoint: str
    kind: str


def load_decoders(sides: list[Side]) -> list[Decoder]:
    """Each side's decoder rows, loading every run's coders the way the run did (one model load per model config)."""
    models: dict[str, object] = {}
    coders_of: dict[Path, dict] = {}
    out = []
    for side in sides:
        run_dir = side.run_dir.resolve()
        if run_dir not in coders_of:
            run = RunDir(run_dir)
            if not run.is_run():
                raise InterpError(not_a_run(str(side.run_dir), "cannot load its coders (use --no-decoders)."))
            cfg = run.read_config()
            key = json.dumps(cfg.to_dict()["model"], sort_keys=True)
            if key not in models:
                models[key] = load_model(cfg.model)
            coders_of[run_dir] = open_coders(cfg, models[key], run)
        coders = coders_of[run_dir]
        if side.coder not in coders:
            raise InterpError(
                f"{side.run_dir} has no coder {side.coder!r} in its config; it has: {', '.join(coders)}."
            )
        coder = coders[side.coder]
        rows = coder.decoder_weight().detach()[side.latents].float().cpu().numpy()
        out.append(Decoder(rows, coder.hookpoint, coder.kind))
    return out
