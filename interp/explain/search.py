"""Explanation search: several candidates per latent, the best on the validation split kept.

``best-of-k`` asks the explainer for ``candidates`` explanations (the first greedy, as ``--search none`` asks; the
others sampled, each with its own seed, so that each is its own entry in the response cache and a resumed search
asks nothing twice). ``refine`` then shows the explainer its current best with the validation examples the judge
got wrong, for ``rounds`` rounds. The search is handed two views of each latent (``interp.views``): the explainer's
(its prompts are built from it alone) and the validation split (all that the judge scores, and all that a refinement
round shows besides): no test or scored negative example is ever in a prompt or in the judge's inputs, so a latent's
test score is not a maximum over candidates. The intervention scorer cannot judge: it reads no examples, only its own
steering prompts, so choosing by it would choose on what ``interp score`` reports. EleutherAI delphi's best-of-k
chooses on the test examples and reports the same score: the maximum of K noisy scores, inflated by the choosing.
"""

import logging
import time
from dataclasses import asdict, dataclass, field, replace

from ..config import ExplainConfig
from ..llm.base import GenerationParams, LLMClient, Prompt
from ..prompts import render
from ..records import Example
from ..scoring.base import ScoredExample, Scorer, labelled_examples
from ..scoring.results import main_metric
from ..steer_effects import PromptEffect
from ..views import ExplainerView, HeldOut
from .explainers import Explanation, TokenText, explain_prompt, prompt_sha, read_reply, token_list_explanation
from .short import REPLY_START, context

log = logging.getLogger(__name__)

SHOWN_MISTAKES = 4
"""Most missed activating examples, and most false alarms, shown in a refinement prompt."""


@dataclass
class SearchSettings:
    """What a search does; saved on every explanation line it makes."""

    search: str
    candidates: int
    temperature: float
    tokens_candidate: bool
    judge: str
    rounds: int

    @classmethod
    def of(cls, cfg: ExplainConfig) -> "SearchSettings":
        """The search settings of an explain configuration (rounds are 0 but for refine)."""
        return cls(
            cfg.search,
            cfg.candidates,
            cfg.temperature,
            cfg.tokens_candidate,
            cfg.judge,
            cfg.rounds if cfg.search == "refine" else 0,
        )

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class Candidate:
    """One explanation a search considered."""

    text: str | None
    status: str
    """ok, flagged (not worth scoring, so not scored) or failed (the request failed or the reply did not parse)."""
    round: int
    """0 for the first candidates, 1.. for refinement rounds."""
    source: str = "explainer"
    """explainer, or tokens (the firing-token list, ``--tokens-candidate``)."""
    score: float | None = None
    """The judge's score on the validation split; None when not scored."""
    note: str | None = None
    raw: str | None = None
    prompt_sha: str | None = None
    params: dict | None = None
    outcomes: list[ScoredExample] = field(default_factory=list)
    """The judge's verdict on each validation example (what a refinement round shows); not saved."""

    def to_dict(self) -> dict:
        """The saved form: text, status, round, source, validation score and note."""
        return {k: getattr(self, k) for k in ("text", "status", "round", "source", "score", "note")}


def mistakes(outcomes: list[ScoredExample], n: int = SHOWN_MISTAKES) -> tuple[list[int], list[int]]:
    """(missed, false alarms): example indices of the activating examples the judge did not call activating, and of
    the others it did, the worst first, at most ``n`` of each.

    A ranking judge (embedding, surprisal: no yes/no calls) calls activating as many examples as there are activating
    ones, the highest-scored first.
    """
    if all(o.prediction is None for o in outcomes):
        ranked = sorted((o for o in outcomes if o.score is not None), key=lambda o: -o.score)
        positives = sum(o.label for o in ranked)
        called = {id(o) for o in ranked[:positives]}
        missed = [o for o in reversed(ranked) if o.label and id(o) not in called]
        alarms = [o for o in ranked if not o.label and id(o) in called]
    else:
        missed = [o for o in outcomes if o.label and o.prediction is False]
        alarms = [o for o in outcomes if not o.label and o.prediction]
    return [o.index for o in missed[:n]], [o.index for o in alarms[:n]]


def refine_prompt(base: Prompt, current: str, missed: list[Example], alarms: list[Example], text: TokenText) -> Prompt:
    """``base`` (the explainer's prompt) continued: its answer ``current``, then the validation examples it got wrong
    and a request for a better one. A started reply (``short``'s ``Fires on``) is started again."""
    messages = list(base)
    started = messages[-1]["role"] == "assistant"
    answer = f"{REPLY_START} {current}" if started else current
    if started:
        messages[-1] = {"role": "assistant", "content": answer}
    else:
        messages.append({"role": "assistant", "content": answer})
    special = set(text.tokenizer.all_special_ids)  # BOS and the like: not text the explainer should read
    missed_lines = "\n".join(f"{i}. {context(ex, text)}" for i, ex in enumerate(missed, 1)) or "(none)"
    alarm_lines = "\n".join(
        f"{i}. {' '.join(''.join(text([t for t in ex.tokens if t not in special])).split())}"
        for i, ex in enumerate(alarms, 1)
    )
    ask = render("explain_refine", current=current, missed=missed_lines, false_alarms=alarm_lines or "(none)")
    messages.append({"role": "user", "content": ask})
    if started:
        messages.append({"role": "assistant", "content": REPLY_START})
    return tuple(messages)


def best(candidates: list[Candidate]) -> Candidate | None:
    """The candidate a search keeps: the highest validation score (the earliest of equals); with none scored, the first
    ok one, else the first flagged one; None when every candidate failed."""
    scored = [c for c in candidates if c.status == "ok" and c.score is not None]
    if scored:
        return max(scored, key=lambda c: c.score)  # max keeps the first of equals
    for status in ("ok", "flagged"):
        found = next((c for c in candidates if c.status == status), None)
        if found:
            return found
    return None


class Search:
    """Explains records by searching: candidates from the explainer, chosen by ``judge`` on validation alone."""

    def __init__(
        self,
        settings: SearchSettings,
        judge: Scorer,
        explainer: str,
        text: TokenText,
        client: LLMClient,
        params: GenerationParams,
    ):
        self.settings = settings
        self.judge = judge
        self.metric = main_metric(judge.name)
        self.explainer = explainer
        self.text = text
        self.client = client
        self.params = params

    def explain(
        self,
        records: list[ExplainerView],
        judged: list[HeldOut],
        effects: list[list[PromptEffect] | None] | None = None,
    ) -> list[Explanation]:
        """One explanation per latent, in order, from its explainer's view (``records``) chosen on its validation split
        (``judged``, in the same order); latents that are dead or rare keep their status."""
        start = time.perf_counter()
        if any(h.split != "validation" for h in judged):
            raise ValueError("A search chooses on validation splits alone, never on what is scored.")
        live = [i for i, r in enumerate(records) if r.status == "ok"]
        views = {i: judged[i] for i in live}
        found: dict[int, list[Candidate]] = {i: [] for i in live}
        effects = effects or [None] * len(records)
        base = {i: explain_prompt(records[i], self.explainer, self.text, effects[i]) for i in live}
        self._ask(found, base, 0)
        if self.settings.tokens_candidate:
            for i in live:
                found[i].append(Candidate(token_list_explanation(records[i], self.text), "ok", 0, source="tokens"))
        self._score(found, views)
        for round_ in range(1, self.settings.rounds + 1):
            prompts = {}
            for i in live:
                current = best(found[i])
                if current is None or current.status != "ok" or current.score is None:
                    continue  # nothing the judge scored to refine from
                missed, alarms = mistakes(current.outcomes)
                if missed or alarms:
                    examples = {ex.index: ex for ex, *_ in labelled_examples(views[i])}
                    prompts[i] = refine_prompt(
                        base[i], current.text, [examples[j] for j in missed], [examples[j] for j in alarms], self.text
                    )
            if not prompts:
                break
            self._ask(found, prompts, round_)
            self._score(found, views)
        elapsed = (time.perf_counter() - start) / max(len(records), 1)
        out = []
        for i, r in enumerate(records):
            e = self._explanation(r, judged[i], found.get(i))
            e.batch_seconds_per_latent = elapsed
            out.append(e)
        return out

    def _ask(self, found: dict[int, list[Candidate]], prompts: dict[int, Prompt], round_: int) -> None:
        """``candidates`` replies to each prompt, one batched ``generate`` per candidate: the first greedy, the others
        sampled with seeds of their own (identical requests would be one entry of the response cache).

        From the second refinement round on, every candidate is sampled, with seeds of the round's own: a latent whose
        best did not change is sent the prompt of the round before, which greedy or same-seed requests would answer
        as before (from the response cache), adding nothing."""
        order = list(prompts)
        n = self.settings.candidates
        for k in range(n):
            seed = self.params.seed + (k if round_ < 2 else round_ * n + k)
            sampled = replace(self.params, temperature=self.settings.temperature, seed=seed)
            params = self.params if k == 0 and round_ < 2 else sampled
            replies = self.client.generate([prompts[i] for i in order], params)
            for i, reply in zip(order, replies, strict=True):
                parsed, status, note = read_reply(reply, self.explainer)
                found[i].append(
                    Candidate(
                        parsed,
                        status,
                        round_,
                        note=note,
                        raw=reply.text if status != "ok" else None,
                        prompt_sha=prompt_sha(prompts[i]),
                        params=params.to_dict(),
                    )
                )

    def _score(self, found: dict[int, list[Candidate]], views: dict[int, HeldOut]) -> None:
        """The judge's validation score of every ok candidate not scored yet, in one batched call."""
        todo = [(i, c) for i, cands in found.items() for c in cands if c.status == "ok" and not c.outcomes]
        if not todo:
            return
        results = self.judge.score([(views[i], c.text) for i, c in todo])
        for (_, c), (metrics, outcomes) in zip(todo, results, strict=True):
            c.score, c.outcomes = metrics.get(self.metric), outcomes

    def _explanation(self, record: ExplainerView, judged: HeldOut, candidates: list[Candidate] | None) -> Explanation:
        e = Explanation(record.coder, record.latent, self.explainer, None, record.status)
        if candidates is None:
            return e
        chosen = best(candidates)
        e.model, e.search = self.client.model, self.settings.to_dict()
        e.attempts = sum(c.source == "explainer" for c in candidates)
        e.candidates = [c.to_dict() for c in candidates]
        e.judge = {
            "scorer": self.judge.name,
            "metric": self.metric,
            "validation_score": chosen.score if chosen else None,
            "validation_examples": len(judged.activating) + len(judged.negatives) + len(judged.hard_negatives),
        }
        if chosen is None:
            first = candidates[0]
            e.status, e.note, e.raw, e.params = "failed", first.note, first.raw, first.params
            return e
        e.explanation, e.status, e.note = chosen.text, chosen.status, chosen.note
        e.raw, e.prompt_sha, e.params = chosen.raw, chosen.prompt_sha, chosen.params
        return e


def note_other_searches(settings: SearchSettings | None, kept: list[dict], redo: bool) -> None:
    """Say (one line) when chosen latents keep explanations made by another search than this command's (or by none):
    they are not redone silently."""
    wanted = settings.to_dict() if settings else None
    others = sum(r.get("search") != wanted and r.get("status") == "ok" for r in kept)
    if others and not redo:
        log.warning(
            "%d chosen latents already have explanations made with other search settings, kept; to explain them "
            "again with --search %s, add --redo.",
            others,
            settings.search if settings else "none",
        )
