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
for 0/1 predictions this equals their AUROC, so the two are comparable).

    python benchmarks/scoring_cost.py                # ~10 minutes on 2 CPU cores
    python benchmarks/scoring_cost.py --latents 4 --texts 10
"""

import argparse
import importlib.util
import statistics
import time

import numpy as np
import torch

from interp.config import CorpusConfig, ModelConfig
from interp.corpus import corpus_windows
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
    spec = importlib.util.find_spec("delphi")
    if spec is None:
        raise SystemExit("The peer is not installed: pip install --no-deps eai-delphi")
    path = spec.submodule_search_locations[0] + "/scorers/classifier/prompts/detection_prompt.py"
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
    for (_, group), reply, k in zip(groups, replies, owners):
        labels = parse_labels(reply.text, len(group))
        for j, (_, outcome) in enumerate(group):
            outcome.prediction = None if labels is None else labels[j]
            per_latent[k].append(outcome)
    return [classification([o.label for o in os], [o.prediction for o in os]).to_dict() for os in per_latent]


def measure(name, run, client, n_latents, metric):
    client.prompt_tokens = client.decode_steps = 0
    start = time.perf_counter()
    metrics = run()
    seconds = time.perf_counter() - start
    values = [m[metric] for m in metrics if m[metric] is not None]
    failed = sum(m["failed"] for m in metrics)
    return {
        "name": name, "prompt": client.prompt_tokens / n_latents, "decode": client.decode_steps / n_latents,
        "seconds": seconds / n_latents, "metric": metric, "quality": statistics.fmean(values) if values else None,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=6, help="planted latents scored")
    parser.add_argument("--texts", type=int, default=10, help="activating and non-activating texts per latent, each")
    parser.add_argument("--batch", type=int, default=5, help="texts per generative prompt (the peer's default)")
    parser.add_argument("--max-tokens", type=int, default=32, help="decode cap per generative reply, both projects")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm = load_model(ModelConfig())
    windows = corpus_windows(CorpusConfig(ctx_len=64), lm.tokenizer, num_windows=40_000 // 64)
    planted = planted_records(windows, lm.tokenizer, n_test=args.texts, n_negatives=args.texts)[: args.latents]
    n = len(planted)
    texts = sum(len(labelled_examples(r)) for r, _ in planted)
    client = CountingClient(TransformersClient(lm=lm, batch_size=16))
    rows = []
    for kind in (DetectionScorer, FuzzingScorer):
        for mode, metric in (("logprob", "auroc"), ("generative", "balanced_accuracy")):
            scorer = kind(client, lm.tokenizer, mode=mode, batch_size=args.batch, max_tokens=args.max_tokens)
            rows.append(measure(f"ours {scorer.name}", lambda: [m for m, _ in scorer.score(planted)], client, n, metric))
    rows.append(measure(
        "eai-delphi detection", lambda: peer_detection(client, lm.tokenizer, planted, args.batch, args.max_tokens),
        client, n, "balanced_accuracy",
    ))

    print(f"\n{n} planted latents, {texts / n:.0f} texts each, SmolLM2-135M-Instruct on {torch.get_num_threads()} CPU threads")
    print("| scorer | prompt tokens / latent | decode steps / latent | seconds / latent | quality | failed texts |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        quality = "n/a" if r["quality"] is None else f"{r['metric']} {r['quality']:.3f}"
        print(f"| {r['name']} | {r['prompt']:,.0f} | {r['decode']:,.0f} | {r['seconds']:.2f} | {quality} | {r['failed']} |")
    by = {r["name"]: r for r in rows}
    for kind in ("detection", "fuzzing"):
        lp, gen = by[f"ours {kind}-logprob"], by[f"ours {kind}"]
        print(f"{kind}: generative / log-prob wall time per latent = {gen['seconds'] / lp['seconds']:.2f}x")
    peer, lp = by["eai-delphi detection"], by["ours detection-logprob"]
    print(f"detection: peer / ours (log-prob) wall time per latent = {peer['seconds'] / lp['seconds']:.2f}x, "
          f"prompt tokens {peer['prompt'] / lp['prompt']:.2f}x")


if __name__ == "__main__":
    main()
