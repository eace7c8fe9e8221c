"""What each reader of a latent may see: its explainer, the judge that chooses among explanations, its scorers.

A ``LatentRecord`` holds every split of a latent; no explainer, search or scorer is handed one. The stages hand
each a view of its own, made here from the record:

- ``ExplainerView``: the train examples, the negatives drawn for the explainer alone (``contrast``, only when the
  contrastive explainer asks for them), the promoted and suppressed tokens and the statistics. Never a test,
  validation or scored negative example, nor the top examples (which may be test examples).
- ``HeldOut`` of split ``test``: what a reported score is computed on, the test examples and the scored negatives.
- ``HeldOut`` of split ``validation``: what a search's judge chooses on, disjoint from both of the above.

An explainer that reached for a scorer's examples would find no attribute to read: the honesty rule (the examples a
score is computed on are never shown to an explainer nor used to choose) holds by construction, not by care.
"""

from dataclasses import dataclass, field

from .records import Example, LatentRecord, LatentStats

EXPLAINER_SEES = {
    "short": "train examples (firing tokens and short contexts)",
    "default": "train examples",
    "activations": "train examples and their activations",
    "contrastive": "train examples and non-activating examples drawn for the explainer alone",
    "logits": "train examples and the tokens the decoder promotes and suppresses",
    "intervention": "steering effects after prompts the intervention scorer does not use",
    "tokens": "the firing tokens of the train examples",
}
"""What each explainer is shown, in words (the dataset card says it per run)."""

LEAKING_BEFORE = ("contrastive", "intervention")
"""Explainers whose prompts held what their scorers score before every explainer had a view of its own: the
contrastive one showed the scored negatives, the intervention one steered after the scorer's prompts."""


def made_with_leaking_prompts(row: dict) -> bool:
    """Whether an explanation line (ok) was made from what its scorers score: by a ``LEAKING_BEFORE`` explainer before
    it had a view of its own (no ``separated``), or chosen by a search judged by the intervention scorer (on the very
    prompts that scorer reports on). ``interp explain --redo`` makes it again, apart."""
    if row.get("status") != "ok":
        return False
    judged_on_scored = (row.get("judge") or {}).get("scorer") == "intervention"
    return judged_on_scored or (row.get("explainer") in LEAKING_BEFORE and not row.get("separated"))


@dataclass(frozen=True)
class ExplainerView:
    """What an explainer (and a search's prompts) may read of one latent: nothing a scorer or a judge scores."""

    coder: str
    latent: int
    status: str
    stats: LatentStats
    train: list[Example] = field(default_factory=list)
    contrast: list[Example] = field(default_factory=list)
    """Non-activating examples drawn for the contrastive explainer alone, disjoint from every scored and validation
    example (``LatentRecord.contrast_negatives``)."""
    promoted: list[tuple[int, float]] = field(default_factory=list)
    suppressed: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class HeldOut:
    """One held-out split of one latent, all that a scorer (split ``test``) or a judge (``validation``) is handed."""

    coder: str
    latent: int
    status: str
    split: str
    """test (what scores are reported on) or validation (what a search chooses on)."""
    activating: list[Example] = field(default_factory=list)
    """Activating examples over activation quantiles."""
    quantiles: list[int] = field(default_factory=list)
    """Quantile (0 = weakest) of each activating example."""
    negatives: list[Example] = field(default_factory=list)
    hard_negatives: list[Example] = field(default_factory=list)


def explainer_view(record: LatentRecord) -> ExplainerView:
    """What ``record``'s explainer may see."""
    return ExplainerView(
        record.coder,
        record.latent,
        record.status,
        record.stats,
        train=record.train,
        contrast=record.contrast_negatives,
        promoted=record.promoted,
        suppressed=record.suppressed,
    )


def scored_view(record: LatentRecord) -> HeldOut:
    """What ``record``'s scorers score: its test examples and its (hard) negatives."""
    return HeldOut(
        record.coder,
        record.latent,
        record.status,
        "test",
        record.test,
        record.test_quantiles,
        record.negatives,
        record.hard_negatives,
    )


def validation_view(record: LatentRecord) -> HeldOut:
    """What a search's judge may score of ``record``: its validation examples alone."""
    return HeldOut(
        record.coder,
        record.latent,
        record.status,
        "validation",
        record.valid,
        record.valid_quantiles,
        record.valid_negatives,
        record.valid_hard_negatives,
    )
