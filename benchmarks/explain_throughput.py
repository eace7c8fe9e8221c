"""Latents explained per minute with the local client on the embedded default: batched vs one at a time.

Builds a small cached run (top-k neurons of SmolLM2-135M at layer 3, so no SAE training is
needed), then explains the same latents twice with the embedded SmolLM2 as explainer: once with
``explain_batch=1`` (one prompt per ``generate`` call, as a sequential client would) and once
batched. The response cache is off for both, so every explanation is generated. Prints both
rates and the ratio.

    python benchmarks/explain_throughput.py               # ~5 minutes on 2 CPU cores
    python benchmarks/explain_throughput.py --latents 32 --batch 16
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from interp.config import CoderConfig, CorpusConfig, ExplainConfig, RunConfig
from interp.llm import TransformersClient
from interp.models import load_model
from interp.stages import run_cache, run_explain


def explain_rate(cfg: RunConfig, run_dir: Path, batch: int, client: TransformersClient) -> tuple[float, int]:
    """(latents per minute, latents explained) for one pass with ``batch`` latents per call."""
    (run_dir / "explanations.jsonl").unlink(missing_ok=True)
    cfg.explain.explain_batch = batch
    client.batch_size = batch
    start = time.perf_counter()
    summary = run_explain(cfg, run_dir, client=client, progress=False)
    elapsed = time.perf_counter() - start
    n = sum(summary["explanations"].values())
    return 60 * n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=16, help="latents explained per pass")
    parser.add_argument("--batch", type=int, default=8, help="latents per batched generate call")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg = RunConfig(
            corpus=CorpusConfig(num_tokens=16384),
            coders=CoderConfig(coders=["topk-neurons@model.layers.3.mlp"]),
            explain=ExplainConfig(
                explainer="default", latents=f"sample:{args.latents}", max_new_tokens=args.max_new_tokens
            ),
        )
        run_cache(cfg, run_dir, progress=False)
        client = TransformersClient(lm=load_model(cfg.model))
        rows = [
            ("one at a time", *explain_rate(cfg, run_dir, 1, client)),
            (f"batched ({args.batch})", *explain_rate(cfg, run_dir, args.batch, client)),
        ]

    print(f"\nexplainer: embedded SmolLM2-135M-Instruct, {args.max_new_tokens} new tokens, {args.threads} threads")
    print(f"{'mode':<16}{'latents':>8}{'latents/min':>14}")
    for mode, rate, n in rows:
        print(f"{mode:<16}{n:>8}{rate:>14.1f}")
    print(f"{'ratio':<16}{'':>8}{rows[1][1] / rows[0][1]:>13.2f}x")


if __name__ == "__main__":
    main()
