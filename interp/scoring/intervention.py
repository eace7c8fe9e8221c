"""Intervention scorer: does steering the latent make the text more about its explanation?

Explanations of what activates a latent miss latents whose meaning is in what they *do* to the
output (arXiv:2410.13928, section 3.3.5). For each latent, its steering strength is calibrated
so the next-token distribution moves by the same KL divergence (``target_kl``); short greedy
continuations of a few neutral prompts are generated with and without steering. The subject
model then reads each passage followed by 'The above passage contains an amplified amount of
"<explanation>"', and the scorer measures the log-probability of the explanation in that
sentence. A prompt's score is how much more likely the explanation is after the steered
passage than after the clean one; a latent's score is the mean over prompts divided by the KL
actually applied (nats of log-probability gained per nat of intervention), the ``score``
metric. The ``auroc`` metric (what the run summary reports) ranks the explanation's
log-probability after each steered passage against after each clean one: 1 when every steered
passage makes it likelier than every clean one, 0.5 when steering makes no difference. The
random explanation scored on the same continuations shows how much of that any text would gain.
A result's examples are the prompts (``index`` is the prompt's number), each twice: ``kind``
steered (label True) and clean (label False), scored by the explanation's log-probability.
"""

from collections.abc import Mapping, Sequence

from ..coders.base import SparseCoder
from ..errors import InterpError
from ..models import LoadedModel
from ..prompts import render
from ..steer import Edit, steer
from ..steer_effects import Calibration, calibrate_strength, continue_prompts, encode_prompts
from ..views import HeldOut
from .base import ScoredExample, Scorer
from .metrics import auroc
from .surprisal import SurprisalScorer

SENTINEL = "\x00"
MIN_KL = 1e-6
"""Below this the latent does not move the output at all and the normalised score is undefined."""


def statement_parts(explanation: str) -> tuple[str, str]:
    """The statement after a passage, split around the explanation: (text before it, explanation and what follows)."""
    before, after = render("intervention_statement", explanation=SENTINEL).split(SENTINEL)
    return "\n\n" + before, explanation + after


class InterventionScorer(Scorer):
    """Log-prob gain of the explanation after steered vs clean continuations, per nat of KL."""

    name = "intervention"

    def __init__(
        self,
        lm: LoadedModel,
        coders: Mapping[str, SparseCoder],
        prompts: Sequence[str],
        *,
        target_kl: float = 1.0,
        max_new_tokens: int = 16,
        batch_size: int = 16,
    ):
        self.lm = lm
        self.coders = coders
        self.prompts = list(prompts)
        self.target_kl = target_kl
        self.max_new_tokens = max_new_tokens
        self.prompt_ids = encode_prompts(lm, self.prompts, max_new_tokens)
        self._reader = SurprisalScorer(lm, batch_size=batch_size)
        self._clean: list[list[int]] | None = None
        # A latent's explanation and its random baseline are scored on the same continuations.
        self._steered: dict[tuple[str, int], tuple[Calibration, list[list[int]]]] = {}

    def clean(self) -> list[list[int]]:
        """Greedy continuations of the prompts without steering (computed once)."""
        if self._clean is None:
            self._clean = continue_prompts(self.lm, self.prompt_ids, self.max_new_tokens)
        return self._clean

    def steered(self, coder_name: str, latent: int) -> tuple[Calibration, list[list[int]]]:
        """The calibrated strength of ``latent`` and the prompts' continuations under it (computed once per latent)."""
        key = (coder_name, latent)
        if key not in self._steered:
            if coder_name not in self.coders:
                raise InterpError(
                    f"The intervention scorer has no coder named {coder_name!r} (it has {', '.join(self.coders)})."
                )
            coder = self.coders[coder_name]
            cal = calibrate_strength(self.lm, coder, latent, self.prompts, self.target_kl)
            with steer(self.lm.model, coder, [Edit(latent, "add", cal.strength)]):
                self._steered[key] = cal, continue_prompts(self.lm, self.prompt_ids, self.max_new_tokens)
        return self._steered[key]

    def _ids(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def explanation_logprobs(self, passages: list[list[int]], explanations: list[str]) -> list[float]:
        """Log-probability of each explanation (and the statement's closing) after its passage and
        the statement's opening.

        Passages keep their exact tokens; identical (passage, explanation) pairs are read once.
        """
        cases = []
        for passage, explanation in zip(passages, explanations, strict=True):
            before, rest = statement_parts(explanation)
            cases.append((tuple(passage + self._ids(before)), tuple(self._ids(rest))))
        unique = list(dict.fromkeys(cases))
        losses = self._reader.losses([list(p) for p, _ in unique], [list(b) for _, b in unique])
        logprob = {case: -loss * len(case[1]) for case, loss in zip(unique, losses, strict=True)}
        return [logprob[case] for case in cases]

    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        clean = self.clean()
        runs = [self.steered(record.coder, record.latent) for record, _ in items]
        passages, explanations = [], []
        for (_, explanation), (_, steered) in zip(items, runs, strict=True):
            for prompt, c, s in zip(self.prompt_ids, clean, steered, strict=True):
                passages += [prompt + s, prompt + c]
                explanations += [explanation, explanation]
        logprobs = self.explanation_logprobs(passages, explanations)
        out, n = [], len(self.prompts)
        for i, (cal, steered) in enumerate(runs):
            rows = logprobs[2 * n * i : 2 * n * (i + 1)]
            after_steered, after_clean = rows[0::2], rows[1::2]
            mean_gain = sum(s - c for s, c in zip(after_steered, after_clean, strict=True)) / n
            examples = [ScoredExample(j, True, None, lp, "steered") for j, lp in enumerate(after_steered)]
            examples += [ScoredExample(j, False, None, lp, "clean") for j, lp in enumerate(after_clean)]
            metrics = {
                "auroc": auroc([e.label for e in examples], [e.score for e in examples]),
                "score": mean_gain / cal.kl if cal.kl > MIN_KL else None,
                "logprob_gain": mean_gain,
                "kl": cal.kl,
                "strength": cal.strength,
                "reached_target": cal.reached,
                "changed": sum(s != c for s, c in zip(steered, clean, strict=True)),
                "prompts": n,
            }
            out.append((metrics, examples))
        return out
