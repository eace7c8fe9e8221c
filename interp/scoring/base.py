"""What every scorer takes and returns.

A scorer judges an explanation against one held-out split of a latent (``views.HeldOut``): the test split when it
reports a score, the validation split when it judges a search's candidates; activating examples over quantiles and
the negatives (random and hard). It is never handed a whole record. It scores many latents per call so that LLM and
embedding work can be batched across them.
"""

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

from ..records import Example
from ..views import HeldOut


@dataclass
class ScoredExample:
    """One held-out example and what the scorer made of it."""

    index: int
    """The example's index in the cache (see ``records.Example.index``)."""
    label: bool
    """Does the latent fire in this example (or, for fuzzing, is this highlight the true one)?"""
    prediction: bool | None
    """The scorer's call; None when its reply could not be parsed."""
    score: float | None
    """A continuous score where the scorer has one (similarity, log-odds); None otherwise."""
    kind: str
    """test, negative or hard_negative."""
    quantile: int | None = None
    values: list[float] | None = None
    """Per-token predictions, for scorers that make them (simulation)."""


@dataclass
class ScoreResult:
    """A scorer's verdict on one explanation of one latent; a line of ``scores.jsonl``."""

    scorer: str
    coder: str
    latent: int
    explainer: str
    baseline: bool
    """True when the explanation scored is another latent's (the random-explanation baseline)."""
    explanation: str
    metrics: dict
    examples: list[ScoredExample]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def labelled_examples(record: HeldOut) -> list[tuple[Example, bool, str, int | None]]:
    """(example, fires?, kind, quantile) for every held-out example of ``record``."""
    out = [(ex, True, "test", q) for ex, q in zip(record.activating, record.quantiles, strict=True)]
    out += [(ex, False, "negative", None) for ex in record.negatives]
    out += [(ex, False, "hard_negative", None) for ex in record.hard_negatives]
    return out


class Scorer(ABC):
    """Judges explanations against held-out examples."""

    name: str

    @abstractmethod
    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        """(metrics, per-example outcomes) for each (record, explanation), in order."""
