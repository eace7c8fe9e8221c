"""What one latent's detection and fuzzing scores cost: log-prob mode vs generative mode vs the peer.

The same planted latents (``interp.validate``: each fires exactly on a known set of words, so
the true explanation is known) and the same held-out examples are scored by the embedded
SmolLM2 through the local batched client:

* ours, ``logprob``: one prompt per text, log P("1") - log P("0") read from one forward pass;
  the prompts of one latent share the system prompt and the explanation, which run once per
  chunk of texts (a shared key/value cache, as a server's prefix cache would);
* ours, ``generative``: 5 texts per prompt, a list of 0/1 decoded and parsed;
* the peer (eai-delphi 0.1.3): its detection prompt builder (system prompt with three few-shot
  conversations, 5 examples per prompt), loaded from its installed source file and driven
  through the same model and client, replies parsed as a list of 0/1.

Counted per latent: prompt tokens through the model, decode steps (generated tokens), wall
time; and the quality each mode reaches: AUROC (log-prob) and balanced accuracy (generative;
for 0/1 predictions this equals their AUROC, so the two are comparable). Before timing, the first
latent is scored once in each mode, untimed, so that no row pays for start-up (kernels, the
allocator, the first batch). Without eai-delphi installed, the peer's row is left out.

``--model``, ``--device`` and ``--dtype`` choose the model (the scorer LLM); the planted latents are
cut from ``--tokens`` tokens of ``--corpus`` in windows of ``--ctx-len``. Defaults: the embedded
SmolLM2 on the CPU, 40,000 builtin tokens in windows of 64, 16 prompts per forward pass.

    python benchmarks/scoring_cost.py                # ~10 minutes on 2 CPU cores
    python benchmarks/scoring_cost.py --latents 4 --texts 10
    python benchmarks/scoring_cost.py --model HuggingFaceTB/SmolLM2-1.7B-Instruct --device cuda
"""

import argparse
import importlib.util
import statistics
import time

import numpy as np

from common import add_model_args, cuda_sync, data, describe, model_config, set_threads
from interp.llm import TransformersClient
from interp.llm.base import GenerationParams
from interp.models import load_model
from interp.scoring.base import labelled_examples
from interp.scoring.classify import DetectionScorer, FuzzingScorer, parse_labels
from interp.scoring.metrics import classification
from interp.validate import planted_records


class CountingClient:
    """Wraps the local client and counts the tokens it runs: prompt tokens and decode steps."""

    def __init__(self, client: TransformersClient):
        self.client, self.model = client, client.model
        self.prompt_tokens = self.decode_steps = 0

    def generate(self, prompts, params):
        replies = self.client.generate(prompts, params)
        self.prompt_tokens += sum(r.prompt_tokens for r in replies)
        self.decode_steps += sum(r.completion_tokens for r in replies)
        return replies

    def answer_logprobs(self, prompts, answers):
        before = self.client.forward_tokens
        out = self.client.answer_logprobs(prompts, answers)
        self.prompt_tokens += self.client.forward_tokens - before  # a shared prefix counts once
        return out


def peer_detection_prompt():
    """eai-delphi's detection prompt builder, read from its source file (its package imports vLLM)."""
    path = (
        importlib.util.find_spec("delphi").submodule_search_locations[0]
        + "/scorers/classifier/prompts/detection_prompt.py"
    )
    module_spec = importlib.util.spec_from_file_location("delphi_detection_prompt", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.prompt


def peer_detection(client, tokenizer, planted, batch: int, max_tokens: int) -> list[dict]:
    """The peer's detection prompts for each planted latent, through ``client``; metrics per latent."""
    prompt = peer_detection_prompt()
    scorer = DetectionScorer(client, tokenizer, mode="generative")  # for the same texts in the same order
    groups, owners = [], []
    for k, (record, expl) in enumerate(planted):
        cases = scorer.cases(record, np.random.default_rng([scorer.seed, record.latent]))
        for i in range(0, len(cases), batch):
            group = cases[i : i + batch]
            examples = "\n".join(f"Example {j}: {text}" for j, (text, _) in enumerate(group))
            groups.append((tuple(prompt(examples=examples, explanation=expl)), group))
            owners.append(k)
    replies = client.generate([p for p, _ in groups], GenerationParams(max_tokens=max_tokens))
    per_latent: list[list] = [[] for _ in planted]
    for (_, group), reply, k in zip(groups, replies, owners, strict=True):
        labels = parse_labels(reply.text, len(group))
        for j, (_, outcome) in enumerate(group):
            outcome.prediction = None if labels is None else labels[j]
            per_latent[k].append(outcome)
    return [classification([o.label for o in os], [o.prediction for o in os]).to_dict() for os in per_latent]


def warm_up(client, tokenizer, planted, batch: int, max_tokens: int) -> None:
    """Score the first planted latent once in each mode, untimed, so that no timed row pays for start-up."""
    for mode in ("logprob", "generative"):
        DetectionScorer(client, tokenizer, mode=mode, batch_size=batch, max_tokens=max_tokens).score(planted[:1])


def measure(name, run, client, n_latents, metric):
    """Run ``run()`` (metrics per latent); its cost per latent and mean quality."""
    client.prompt_tokens = client.decode_steps = 0
    device = client.client.lm.device
    cuda_sync(device)
    start = time.perf_counter()
    metrics = run()
    cuda_sync(device)
    seconds = time.perf_counter() - start
    values = [m[metric] for m in metrics if m[metric] is not None]
    failed = sum(m["failed"] for m in metrics)
    return {
        "name": name,
        "prompt": client.prompt_tokens / n_latents,
        "decode": client.decode_steps / n_latents,
        "seconds": seconds / n_latents,
        "metric": metric,
        "quality": statistics.fmean(values) if values else None,
        "failed": failed,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(
        parser, tokens=40_000, ctx_len=64, batch_size=16, batch_help="prompts per forward pass of the local client"
    )
    parser.add_argument("--latents", type=int, default=6, help="planted latents scored")
    parser.add_argument("--texts", type=int, default=10, help="activating and non-activating texts per latent, each")
    parser.add_argument("--batch", type=int, default=5, help="texts per generative prompt (the peer's default)")
    parser.add_argument("--max-tokens", type=int, default=32, help="decode cap per generative reply, both projects")
    return parser.parse_args(argv)


def print_report(rows: list[dict], header: str) -> None:
    """The table, then how the modes and the peer compare."""
    print(f"\n{header}\n")
    print("| scorer | prompt tokens / latent | decode steps / latent | seconds / latent | quality | failed texts |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        quality = "n/a" if r["quality"] is None else f"{r['metric']} {r['quality']:.3f}"
        print(
            f"| {r['name']} | {r['prompt']:,.0f} | {r['decode']:,.0f} | {r['seconds']:.2f} "
            f"| {quality} | {r['failed']} |"
        )
    by = {r["name"]: r for r in rows}
    for kind in ("detection", "fuzzing"):
        lp, gen = by[f"ours {kind}-logprob"], by[f"ours {kind}"]
        print(f"\n{kind}: generative / log-prob wall time per latent = {gen['seconds'] / lp['seconds']:.2f}x")
    if "eai-delphi detection" not in by:
        print("\nNote: eai-delphi is not installed (pip install --no-deps eai-delphi): the peer's row is left out.")
        return
    peer, lp = by["eai-delphi detection"], by["ours detection-logprob"]
    print(
        f"\ndetection: peer / ours (log-prob) wall time per latent = {peer['seconds'] / lp['seconds']:.2f}x, "
        f"prompt tokens {peer['prompt'] / lp['prompt']:.2f}x"
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    cfg = model_config(args)
    lm = load_model(cfg)
    windows = data(args).windows(lm.tokenizer)
    planted = planted_records(windows, lm.tokenizer, n_test=args.texts, n_negatives=args.texts)[: args.latents]
    if not planted:
        raise SystemExit(
            f"No planted latent fires often enough in {args.tokens:,} tokens of {args.corpus}: give more --tokens."
        )
    n = len(planted)
    texts = sum(len(labelled_examples(r)) for r, _ in planted)
    client = CountingClient(TransformersClient(lm=lm, batch_size=args.batch_size))
    warm_up(client, lm.tokenizer, planted, args.batch, args.max_tokens)
    rows = []
    for kind in (DetectionScorer, FuzzingScorer):
        for mode, metric in (("logprob", "auroc"), ("generative", "balanced_accuracy")):
            scorer = kind(client, lm.tokenizer, mode=mode, batch_size=args.batch, max_tokens=args.max_tokens)
            rows.append(
                measure(
                    f"ours {scorer.name}",
                    lambda scorer=scorer: [m for m, _ in scorer.score(planted)],
                    client,
                    n,
                    metric,
                )
            )
    if importlib.util.find_spec("delphi") is not None:
        rows.append(
            measure(
                "eai-delphi detection",
                lambda: peer_detection(client, lm.tokenizer, planted, args.batch, args.max_tokens),
                client,
                n,
                "balanced_accuracy",
            )
        )
    print_report(
        rows,
        f"{n} planted latents, {texts / n:.0f} texts each, {describe(lm, cfg)}, "
        f"{args.batch_size} prompts per forward pass, warmed up on one latent",
    )


if __name__ == "__main__":
    main()
