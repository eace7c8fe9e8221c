"""Every scorer by name, built from a run's settings: the one list the pipeline, ``interp validate`` and the app
use."""

import typing
from dataclasses import replace

from ..config import RunConfig, ScoreConfig, ScorerName, check_config
from ..llm import LLMClient
from ..models import LoadedModel
from ..steer_effects import load_steer_prompts
from .base import Scorer
from .classify import DetectionScorer, FuzzingScorer
from .embedding import EmbeddingScorer, load_embedder
from .intervention import InterventionScorer
from .intruder import IntruderScorer
from .simulation import SimulationScorer
from .surprisal import SurprisalScorer

CLASSIFIERS = {"detection": DetectionScorer, "fuzzing": FuzzingScorer}
LLM_SCORERS = (*CLASSIFIERS, "intruder", "simulation")
"""Scorers that ask an LLM; the others need only the subject model or an embedder."""
SCORERS: tuple[ScorerName, ...] = typing.get_args(ScorerName)
"""Every scorer, in the order they are offered."""


def needs_llm(scorers: list[str]) -> bool:
    """Whether any of these scorers asks an LLM."""
    return any(name in LLM_SCORERS for name in scorers)


def line_name(name: str, mode: str) -> str:
    """What the lines of scorer ``name`` in ``mode`` are called: detection in logprob mode writes
    ``detection-logprob``; a scorer with no modes writes its name."""
    return f"{name}-logprob" if name in LLM_SCORERS and mode == "logprob" else name


def scorer_settings(score: ScoreConfig, line_name: str) -> ScoreConfig:
    """``score`` set to make the one scorer whose lines are called ``line_name``: ``detection-logprob`` is
    detection in logprob mode, ``detection`` in generative mode; a scorer with no modes keeps ``score``'s."""
    name = line_name.removesuffix("-logprob")
    if name not in LLM_SCORERS:
        return replace(score, scorers=[name])
    return replace(score, scorers=[name], score_mode="logprob" if line_name.endswith("-logprob") else "generative")


def make_scorers(
    cfg: RunConfig, client: LLMClient | None, lm: LoadedModel, coders: dict | None = None
) -> list[Scorer]:
    """The scorers ``cfg.score`` names, sharing one LLM client; surprisal and intervention read the subject model
    (intervention steers ``coders``)."""
    check_config(cfg)
    s = cfg.score
    tokenizer = lm.tokenizer
    scorers: list[Scorer] = []
    for name in s.scorers:
        if name == "embedding":
            scorers.append(EmbeddingScorer(tokenizer, load_embedder(s.embedder)))
        elif name == "intruder":
            scorers.append(IntruderScorer(client, tokenizer, mode=s.score_mode, group_size=s.texts_per_prompt))
        elif name == "surprisal":
            scorers.append(SurprisalScorer(lm, batch_size=s.texts_per_prompt * 4))
        elif name == "intervention":
            v = cfg.intervene
            prompts = load_steer_prompts(v.steer_prompts, v.num_steer_prompts)
            scorers.append(
                InterventionScorer(
                    lm,
                    coders or {},
                    prompts,
                    target_kl=v.target_kl,
                    max_new_tokens=v.steer_new_tokens,
                    batch_size=s.texts_per_prompt * 4,
                )
            )
        elif name == "simulation":
            scorers.append(SimulationScorer(client, tokenizer, mode=s.score_mode))
        else:
            scorers.append(CLASSIFIERS[name](client, tokenizer, mode=s.score_mode, batch_size=s.texts_per_prompt))
    return scorers
