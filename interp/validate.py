"""Scorer validity on planted latents: does a true explanation beat a random one?

A planted latent fires exactly on a chosen set of words (1.0 on each of their tokens,
0 elsewhere), so its true explanation is known. Records are cut from the run's corpus with
the same example length, test set and negatives a real latent would have, and every scorer
scores the true explanation and a random one (another planted latent's). A scorer worth
trusting gives the true explanation the higher score, by a clear margin.
"""

import random
import statistics
from dataclasses import dataclass

from tqdm.auto import tqdm

from .config import RunConfig
from .corpus import corpus_windows
from .explain import TokenText
from .llm import run_client
from .models import LoadedModel, load_model
from .records import Example
from .scoring.base import Scorer
from .scoring.registry import make_scorers, needs_llm
from .scoring.results import main_metric
from .views import HeldOut

PLANTED: dict[str, tuple[str, ...]] = {
    'the words "king", "queen" or "crown"': ("king", "queen", "crown", "kings", "queens"),
    'the word "love" and its forms': ("love", "loves", "loved", "lover", "loving"),
    'the words "death", "die" or "dead"': ("death", "die", "dead", "dies", "died"),
    'the word "return" (Python)': ("return", "returns", "returned"),
    'the words "sword" or "blood"': ("sword", "swords", "blood", "bloody"),
    'the words "class" or "object" (Python)': ("class", "classes", "object", "objects"),
    'the word "night"': ("night", "nights", "tonight"),
    'the words "father" or "mother"': ("father", "mother", "fathers", "mothers"),
}
"""Explanation -> the words on which its planted latent fires (as whole tokens, case-insensitive)."""


@dataclass
class PlantedResult:
    """One scorer's verdict over all planted latents."""

    scorer: str
    metric: str
    true_mean: float | None
    random_mean: float | None
    wins: int
    """Planted latents whose true explanation scored higher than its random one."""
    latents: int
    """Planted latents where both scores are defined."""

    @property
    def margin(self) -> float | None:
        """Mean true score minus mean random score."""
        if self.true_mean is None or self.random_mean is None:
            return None
        return self.true_mean - self.random_mean


def planted_records(
    windows, tokenizer, *, example_len: int = 32, n_test: int = 20, n_negatives: int = 20, seed: int = 0
) -> list[tuple[HeldOut, str]]:
    """(test split, true explanation) for each planted latent with at least 4 activating examples in ``windows``."""
    pieces = TokenText(tokenizer)
    examples = []
    for row in windows.tolist():
        for start in range(0, len(row) - example_len + 1, example_len):
            tokens = row[start : start + example_len]
            examples.append((len(examples), tokens, [p.strip().lower() for p in pieces(tokens)]))
    rng = random.Random(seed)
    out = []
    for latent, (explanation, words) in enumerate(PLANTED.items()):
        fires = [
            Example(tokens, [1.0 if w in words else 0.0 for w in text], index)
            for index, tokens, text in examples
            if any(w in words for w in text)
        ]
        quiet = [
            Example(tokens, [0.0] * len(tokens), index)
            for index, tokens, text in examples
            if not any(w in words for w in text)
        ]
        if len(fires) < 4:
            continue
        test = rng.sample(fires, min(n_test, len(fires)))
        negatives = rng.sample(quiet, min(n_negatives, len(quiet)))
        out.append((HeldOut("planted", latent, "ok", "test", test, [0] * len(test), negatives), explanation))
    return out


def validate_scorers(
    scorers: list[Scorer], planted: list[tuple[HeldOut, str]], *, progress: bool = True
) -> list[PlantedResult]:
    """Score each planted latent's true explanation and a random one (the next latent's) with every scorer."""
    shuffled = [planted[(i + 1) % len(planted)][1] for i in range(len(planted))]
    results = []
    for scorer in tqdm(scorers, desc="validating scorers", unit="scorer", disable=not progress):
        metric = main_metric(scorer.name)
        # One call for both, so work shared by a record's two explanations (surprisal's neutral losses) is done once.
        scored = scorer.score(
            [*planted, *((record, other) for (record, _), other in zip(planted, shuffled, strict=True))]
        )
        true, rand = scored[: len(planted)], scored[len(planted) :]
        pairs = [(t[0].get(metric), r[0].get(metric)) for t, r in zip(true, rand, strict=True)]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        results.append(
            PlantedResult(
                scorer=scorer.name,
                metric=metric,
                true_mean=statistics.fmean(a for a, _ in pairs) if pairs else None,
                random_mean=statistics.fmean(b for _, b in pairs) if pairs else None,
                wins=sum(a > b for a, b in pairs),
                latents=len(pairs),
            )
        )
    return results


def run_validation(cfg: RunConfig, *, lm: LoadedModel | None = None, progress: bool = True) -> list[PlantedResult]:
    """Planted latents cut from ``cfg``'s corpus (``num_tokens`` of it), scored by ``cfg.score.scorers``.

    The LLM is ``cfg.explain.llm`` (no response cache: every answer is fresh).
    """
    lm = lm or load_model(cfg.model)
    client = run_client(cfg, lm, None) if needs_llm(cfg.score.scorers) else None
    windows = corpus_windows(cfg.corpus, lm.tokenizer)
    planted = planted_records(
        windows, lm.tokenizer, example_len=cfg.records.example_len, seed=cfg.records.records_seed
    )
    return validate_scorers(make_scorers(cfg, client, lm), planted, progress=progress)


def format_validation(results: list[PlantedResult]) -> str:
    """A table: each scorer's mean score for true and random explanations, the margin and the wins."""
    lines = [f"{'scorer':<20} {'metric':<18} {'true':>6} {'random':>7} {'margin':>7}  wins"]
    for r in results:
        cells = [_fmt(v) for v in (r.true_mean, r.random_mean, r.margin)]
        lines.append(f"{r.scorer:<20} {r.metric:<18} {cells[0]:>6} {cells[1]:>7} {cells[2]:>7}  {r.wins}/{r.latents}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
