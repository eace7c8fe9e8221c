"""Surprisal scorer: does reading the explanation first make the activating texts easier to predict?

For each held-out example, a base language model's mean loss on the example's tokens is
measured after a prefix stating the explanation and after a neutral prefix of the same form.
The example's score is the loss improvement; the metric is the AUROC of that improvement for
activating vs non-activating examples (a good explanation helps only where the latent fires).
Exact tokens are kept: examples are never re-tokenized.
"""

import torch

from ..models import LoadedModel
from ..prompts import render
from ..views import HeldOut
from .base import ScoredExample, Scorer, labelled_examples
from .metrics import auroc


class SurprisalScorer(Scorer):
    """AUROC of the loss improvement an explanation prefix gives each example."""

    name = "surprisal"

    def __init__(self, lm: LoadedModel, batch_size: int = 16):
        self.lm = lm
        self.batch_size = batch_size

    def _prefix(self, text: str) -> list[int]:
        return self.lm.tokenizer(text + "\n", add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def losses(self, prefixes: list[list[int]], bodies: list[list[int]]) -> list[float]:
        """Mean next-token loss on each body after its prefix, batched with right padding."""
        out: list[float] = []
        pad = self.lm.tokenizer.pad_token_id or 0
        for start in range(0, len(bodies), self.batch_size):
            pre, body = prefixes[start : start + self.batch_size], bodies[start : start + self.batch_size]
            seqs = [p + b for p, b in zip(pre, body, strict=True)]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(seqs):
                ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
            logits = self.lm.model(input_ids=ids.to(self.lm.device), attention_mask=mask.to(self.lm.device)).logits
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(logits.device), reduction="none"
            ).cpu()
            for i, (p, b) in enumerate(zip(pre, body, strict=True)):
                out.append(float(nll[i, len(p) - 1 : len(p) + len(b) - 1].mean()))
        return out

    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        neutral = self._prefix(render("surprisal_neutral"))
        cases = [
            (i, ex, label, kind, q) for i, (r, _) in enumerate(items) for ex, label, kind, q in labelled_examples(r)
        ]
        prefixes = [self._prefix(render("surprisal_prefix", explanation=items[i][1])) for i, *_ in cases]
        bodies = [ex.tokens for _, ex, *_ in cases]
        explained = self.losses(prefixes, bodies)
        unique = list(dict.fromkeys(tuple(b) for b in bodies))  # the baseline and the true explanation share examples
        plain_of = dict(zip(unique, self.losses([neutral] * len(unique), [list(b) for b in unique]), strict=True))
        plain = [plain_of[tuple(b)] for b in bodies]
        results: list[list[ScoredExample]] = [[] for _ in items]
        for (i, ex, label, kind, q), a, b in zip(cases, explained, plain, strict=True):
            results[i].append(ScoredExample(ex.index, label, None, b - a, kind, q))
        out = []
        for outcomes in results:
            labels = [o.label for o in outcomes]
            metrics = {
                "auroc": auroc(labels, [o.score for o in outcomes]),
                "positives": sum(labels),
                "negatives": len(labels) - sum(labels),
            }
            out.append((metrics, outcomes))
        return out
