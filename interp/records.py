"""Latent records: what a reader (human or LLM) needs to understand one latent.

Cache windows are cut into examples of ``example_len`` tokens. For each latent, an example's
score is its largest activation. From those come the top examples, a train set for the
explainer and a disjoint, quantile-spread test set for the scorers (disjoint by construction:
test examples are drawn from the activating examples left after the train set is taken),
random and hard non-activating examples, statistics and the tokens the latent promotes.

Reading is per latent range: shards are sorted by latent, so a range is one slice per shard.
"""

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import TOKENS_FILE, iter_shards, load_stats, load_tensors
from .config import RecordsConfig
from .errors import InterpError
from .jsonl import append_jsonl

HISTOGRAM_BINS = 20
TOP_EXAMPLES = 10
"""Top examples kept for display, whatever the train sampling."""


@dataclass
class Example:
    """A span of ``example_len`` tokens and the latent's activation on each."""

    tokens: list[int]
    acts: list[float]
    index: int
    """Which example of the corpus this is (window * examples_per_window + offset)."""

    @property
    def max_act(self) -> float:
        """The largest activation in the example."""
        return max(self.acts)


@dataclass
class LatentStats:
    """How often and how strongly a latent fires over the cached tokens."""

    count: int
    frequency: float
    max: float
    mean: float
    histogram: list[int]
    """Counts of activations in ``HISTOGRAM_BINS`` equal bins from 0 to ``max``."""
    num_examples: int
    """Examples in which the latent fires at least once."""


@dataclass
class LatentRecord:
    """Everything known about one latent of one coder."""

    coder: str
    latent: int
    status: str
    """ok, dead (never fires) or rare (fewer than ``min_examples`` activating examples)."""
    stats: LatentStats
    top: list[Example] = field(default_factory=list)
    train: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    test_quantiles: list[int] = field(default_factory=list)
    """Quantile (0 = weakest) of each test example."""
    negatives: list[Example] = field(default_factory=list)
    hard_negatives: list[Example] = field(default_factory=list)
    promoted: list[tuple[int, float]] = field(default_factory=list)
    suppressed: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class CacheView:
    """One coder's cache opened for record building: tokens, stats and shard layout."""

    coder_dir: Path
    tokens: torch.Tensor
    """``[windows, ctx_len]`` token ids."""
    count: torch.Tensor
    num_latents: int
    bos_token_id: int | None = None

    @classmethod
    def open(cls, cache_dir: Path, coder: str, bos_token_id: int | None = None) -> "CacheView":
        """Open ``cache_dir/coder`` (a finished cache)."""
        cache_dir = Path(cache_dir)
        stats = load_stats(cache_dir / coder)
        tokens = load_tensors(cache_dir / TOKENS_FILE, ("tokens",))["tokens"]
        return cls(cache_dir / coder, tokens, stats["count"], len(stats["count"]), bos_token_id)

    @property
    def num_tokens(self) -> int:
        """Tokens in the cache."""
        return self.tokens.numel()

    def triples(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(global token, latent, activation) of the sorted ``latents``, from every shard, sorted by latent."""
        latents = latents.to(torch.int32)
        tok, lat, act = [], [], []
        for meta, t in iter_shards(self.coder_dir, len(self.tokens)):
            lo = torch.searchsorted(t.latent, latents)
            hi = torch.searchsorted(t.latent, latents + 1)
            lengths = hi - lo
            # every index in the slices [lo, hi), without a Python loop over latents
            starts = torch.repeat_interleave(lo - torch.cumsum(lengths, 0) + lengths, lengths)
            idx = starts + torch.arange(int(lengths.sum()))
            tok.append(t.token[idx].long() + meta.first_window * meta.ctx_len)
            lat.append(t.latent[idx].long())
            act.append(t.activation[idx])
        if not tok:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0)
        tok, lat, act = torch.cat(tok), torch.cat(lat), torch.cat(act)
        order = torch.argsort(lat, stable=True)  # shards are each sorted; their concatenation is not
        return tok[order], lat[order], act[order]


def _histogram(acts: torch.Tensor, top: float) -> list[int]:
    if acts.numel() == 0 or top <= 0:
        return [0] * HISTOGRAM_BINS
    return torch.histc(acts, bins=HISTOGRAM_BINS, min=0.0, max=top).long().tolist()


def _spread(indices: np.ndarray, n: int, n_quantiles: int, rng) -> tuple[list[int], list[int]]:
    """Up to ``n`` of ``indices`` (sorted by increasing activation), spread evenly over quantiles."""
    if len(indices) == 0 or n <= 0:
        return [], []
    bins = np.array_split(np.arange(len(indices)), min(n_quantiles, len(indices)))
    per_bin = [n // len(bins) + (1 if i < n % len(bins) else 0) for i in range(len(bins))]
    chosen, quantile = [], []
    for q, (members, want) in enumerate(zip(bins, per_bin, strict=True)):
        take = rng.choice(members, size=min(want, len(members)), replace=False)
        chosen.extend(indices[sorted(take)].tolist())
        quantile.extend([q] * len(take))
    return chosen, quantile


def _train_share(available: int, n_train: int, n_test: int) -> int:
    """Train examples to take: ``n_train`` when there are enough, else a proportional share, so the
    test set is never empty.
    """
    if available >= n_train + n_test or available < 2:
        return min(n_train, available)
    return max(1, min(n_train, available * n_train // (n_train + n_test)))


class RecordBuilder:
    """Builds ``LatentRecord``s from a ``CacheView``; one instance serves many latent ranges."""

    def __init__(self, view: CacheView, cfg: RecordsConfig, decoder: torch.Tensor | None = None, unembed=None):
        self.view = view
        self.cfg = cfg
        e = cfg.example_len
        self.per_window = view.tokens.shape[1] // e
        self.example_tokens = view.tokens[:, : self.per_window * e].reshape(-1, e)
        self.num_examples = len(self.example_tokens)
        flat = self.example_tokens.flatten()
        self._sorted_positions = torch.argsort(flat, stable=True)
        self._sorted_tokens = flat[self._sorted_positions]
        self.decoder = decoder
        self.unembed = unembed

    def _example_of(self, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(example index, offset inside it) of global token positions, or -1 for dropped tail tokens."""
        ctx = self.view.tokens.shape[1]
        window, pos = token // ctx, token % ctx
        e = self.cfg.example_len
        valid = pos < self.per_window * e
        example = torch.where(valid, window * self.per_window + pos // e, torch.full_like(window, -1))
        return example, pos % e

    def _examples_with_token(self, token_id: int) -> torch.Tensor:
        lo, hi = torch.searchsorted(
            self._sorted_tokens, torch.tensor([token_id, token_id + 1], dtype=self._sorted_tokens.dtype)
        ).tolist()
        return torch.unique(self._sorted_positions[lo:hi] // self.cfg.example_len)

    def _make(self, example: int, offsets: torch.Tensor, values: torch.Tensor) -> Example:
        acts = torch.zeros(self.cfg.example_len)
        acts[offsets] = values
        return Example(self.example_tokens[example].tolist(), acts.tolist(), int(example))

    def logit_tokens(self, latent: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Tokens whose logits the latent's decoder direction raises and lowers most."""
        if self.decoder is None or self.unembed is None or self.cfg.n_logit_tokens <= 0:
            return [], []
        logits = self.unembed(self.decoder[latent])
        n = self.cfg.n_logit_tokens
        up, down = logits.topk(n), (-logits).topk(n)
        return (
            [(int(i), float(v)) for v, i in zip(up.values, up.indices, strict=True)],
            [(int(i), float(-v)) for v, i in zip(down.values, down.indices, strict=True)],
        )

    def build(self, coder: str, latents: list[int]) -> Iterator[LatentRecord]:
        """Records for ``latents`` of ``coder``, in increasing latent order."""
        wanted = torch.tensor(sorted(set(latents)), dtype=torch.long)
        tok, lat, act = self.view.triples(wanted)
        if self.view.bos_token_id is not None and self.cfg.skip_bos:
            keep = self.view.tokens.flatten()[tok] != self.view.bos_token_id
            tok, lat, act = tok[keep], lat[keep], act[keep]
        example, offset = self._example_of(tok)
        keep = example >= 0
        example, offset, lat, act = example[keep], offset[keep], lat[keep], act[keep]
        lo, hi = torch.searchsorted(lat, wanted), torch.searchsorted(lat, wanted + 1)
        for latent, a, b in zip(wanted.tolist(), lo.tolist(), hi.tolist(), strict=True):
            yield self._record(coder, latent, example[a:b], offset[a:b], act[a:b])

    def _record(
        self, coder: str, latent: int, example: torch.Tensor, offset: torch.Tensor, act: torch.Tensor
    ) -> LatentRecord:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.records_seed, latent])
        count = len(act)
        top_act = float(act.max()) if count else 0.0
        ids, inverse = torch.unique(example, return_inverse=True)
        maxima = (
            torch.zeros(len(ids)).scatter_reduce(0, inverse, act, "amax", include_self=False)
            if count
            else torch.zeros(0)
        )
        stats = LatentStats(
            count=count,
            frequency=count / max(self.view.num_tokens, 1),
            max=top_act,
            mean=float(act.mean()) if count else 0.0,
            histogram=_histogram(act, top_act),
            num_examples=len(ids),
        )
        promoted, suppressed = self.logit_tokens(latent)
        status = "dead" if count == 0 else "rare" if len(ids) < cfg.min_examples else "ok"
        record = LatentRecord(coder, latent, status, stats, promoted=promoted, suppressed=suppressed)
        if count == 0:
            return record

        def make(j: int) -> Example:
            members = inverse == j
            return self._make(int(ids[j]), offset[members], act[members])

        by_strength = torch.argsort(maxima, descending=True, stable=True).numpy()
        record.top = [make(j) for j in by_strength[:TOP_EXAMPLES]]
        n_train = _train_share(len(ids), cfg.n_train, cfg.n_test)
        if cfg.train_sampling == "top":
            train = by_strength[:n_train].tolist()
        else:
            train, _ = _spread(by_strength[::-1].copy(), n_train, cfg.n_quantiles, rng)
        taken = set(train)
        rest = np.array([j for j in by_strength[::-1] if j not in taken], dtype=np.int64)
        test, quantiles = _spread(rest, cfg.n_test, cfg.n_quantiles, rng)
        record.train = [make(j) for j in train]
        record.test = [make(j) for j in test]
        record.test_quantiles = quantiles
        active = set(ids.tolist())
        record.negatives = self._negatives(active, cfg.n_negatives, rng)
        record.hard_negatives = self._hard_negatives(record.train, active, cfg.n_hard_negatives, rng)
        return record

    def _inactive(self, index: int) -> Example:
        return Example(self.example_tokens[index].tolist(), [0.0] * self.cfg.example_len, int(index))

    def _negatives(self, active: set[int], n: int, rng) -> list[Example]:
        free = self.num_examples - len(active)
        if n <= 0 or free <= 0:
            return []
        chosen: set[int] = set()
        while len(chosen) < min(n, free):
            for j in rng.integers(0, self.num_examples, size=2 * n).tolist():
                if j not in active and len(chosen) < n:
                    chosen.add(j)
        return [self._inactive(j) for j in sorted(chosen)]

    def _hard_negatives(self, train: list[Example], active: set[int], n: int, rng) -> list[Example]:
        """Non-activating examples containing the tokens the latent fires most strongly on."""
        if n <= 0:
            return []
        peak_tokens: list[int] = []
        for ex in train:
            t = ex.tokens[int(np.argmax(ex.acts))]
            if t not in peak_tokens and t != self.view.bos_token_id:
                peak_tokens.append(t)
        candidates: list[int] = []
        for t in peak_tokens:
            candidates.extend(
                j for j in self._examples_with_token(t).tolist() if j not in active and j not in candidates
            )
        if len(candidates) > n:
            candidates = sorted(rng.choice(candidates, size=n, replace=False).tolist())
        return [self._inactive(j) for j in candidates]


def select_latents(spec: str, count: torch.Tensor, *, min_count: int, seed: int) -> list[int]:
    """Latent indices for ``spec``: all, sample:N (among latents firing at least ``min_count``
    times), A-B, or A,B,C.
    """
    n = len(count)
    try:
        if spec == "all":
            return list(range(n))
        if spec.startswith("sample:"):
            alive = torch.nonzero(count >= min_count).flatten().tolist()
            wanted = int(spec.split(":", 1)[1])
            if wanted < 1:
                raise ValueError(spec)
            k = min(wanted, len(alive))
            return sorted(random.Random(seed).sample(alive, k))
        if "-" in spec:
            a, b = (int(x) for x in spec.split("-", 1))
            if a <= b and not 0 <= a <= b < n:  # checked before it is listed: A-B may name billions
                raise InterpError(f"Latents {a}-{b} do not all exist: this coder has {n} latents (0-{n - 1}).")
            chosen = list(range(a, b + 1))
        else:
            chosen = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InterpError(
            f"Cannot read latent selection {spec!r}: use all, sample:N (N >= 1), A-B or A,B,C."
        ) from None
    if not chosen:
        raise InterpError(f"Latent selection {spec!r} selects no latents (a range A-B needs A <= B).")
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise InterpError(f"Latents {bad[:5]} do not exist: this coder has {n} latents (0-{n - 1}).")
    return chosen


def logit_lens(model, decoder: torch.Tensor):
    """``direction -> logits`` (final norm gain, then unembedding) if ``decoder`` writes to the
    residual stream, else None.
    """
    head = model.get_output_embeddings().weight.detach().float()
    if decoder.shape[-1] != head.shape[1]:
        return None
    norm = getattr(getattr(model, model.base_model_prefix, model), "norm", None)
    gain = norm.weight.detach().float() if getattr(norm, "weight", None) is not None else torch.ones(head.shape[1])

    def apply(direction: torch.Tensor) -> torch.Tensor:
        return head @ (direction.float().to(head.device) * gain.to(head.device))

    return apply


def save_records(path: Path, records: list[LatentRecord]) -> None:
    """Append records to a JSONL file (materialised records for inspection or other tools)."""
    append_jsonl(path, [r.to_dict() for r in records])
