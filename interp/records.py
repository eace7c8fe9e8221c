"""Latent records: what a reader (human or LLM) needs to understand one latent.

Cache windows are cut into examples of ``example_len`` tokens. For each latent, an example's
score is its largest activation. From those come the top examples, a train set for the
explainer and a disjoint, quantile-spread test set for the scorers (disjoint by construction:
test examples are drawn from the activating examples left after the train set is taken),
random and hard non-activating examples, a validation split (activating examples and negatives drawn last,
from what the others leave, with a random stream of its own: what an explanation search chooses on), statistics and
the tokens the latent promotes.

Latents are walked in ranges (thousands at a time; memory is bounded by the range, not by the number
of latents): each range is one slice of each shard (``interp.cache_index``), and everything but the
per-latent random draws is computed for the whole range at once. Each latent draws from its own
stream (``records_seed``, latent), so a record does not depend on which other latents are built with it.
"""

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import TOKENS_FILE, load_stats, load_tensors
from .cache_index import read_range
from .config import RecordsConfig
from .errors import InterpError
from .jsonl import append_jsonl

HISTOGRAM_BINS = 20
TOP_EXAMPLES = 10
"""Top examples kept for display, whatever the train sampling."""
RANGE_LATENTS = 4096
"""Most latents built from one read of the cache."""
RANGE_TRIPLES = 1 << 20
"""Most cached activations (of the latents a range spans) held at once; a latent with more is a range of its own."""
LOGIT_FLOATS = 1 << 22
"""Most logits (latents x vocabulary) computed at once for promoted and suppressed tokens."""


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
    valid: list[Example] = field(default_factory=list)
    """The validation split's activating examples: what an explanation search chooses on, never a reported score."""
    valid_quantiles: list[int] = field(default_factory=list)
    valid_negatives: list[Example] = field(default_factory=list)
    valid_hard_negatives: list[Example] = field(default_factory=list)
    contrast_negatives: list[Example] = field(default_factory=list)
    """Non-activating examples shown to the contrastive explainer alone (hard ones first, then random ones), drawn
    last, disjoint from every scored and validation example; only built when asked for (``build(contrast=True)``)."""

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
        """(global token, latent, activation) of the sorted ``latents``, sorted by latent (then by token).

        Only the slice from the first to the last of ``latents`` is read from each shard; the shards'
        slices are merged by their per-latent counts, without a sort.
        """
        wanted = latents.long().numpy()
        if not len(wanted):
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0)
        lo, hi = int(wanted[0]), int(wanted[-1]) + 1
        parts = list(read_range(self.coder_dir, len(self.tokens), self.num_latents, lo, hi))
        counts = np.stack([p.counts for p in parts])  # [shards, hi - lo]
        total = counts.sum(axis=0)
        start = np.cumsum(total) - total
        block = start + np.cumsum(counts, axis=0) - counts  # where each shard's triples of each latent go
        tok = np.empty(int(total.sum()), dtype=np.int64)
        act = np.empty(len(tok), dtype=np.float32)
        for part, to in zip(parts, block, strict=True):
            dest = np.repeat(to - (np.cumsum(part.counts) - part.counts), part.counts) + np.arange(len(part.token))
            tok[dest] = part.token.astype(np.int64) + part.meta.first_window * part.meta.ctx_len
            act[dest] = part.activation
        lat = np.repeat(np.arange(lo, hi), total)
        if len(wanted) < hi - lo:
            keep = np.isin(lat, wanted)
            tok, lat, act = tok[keep], lat[keep], act[keep]
        return torch.from_numpy(tok), torch.from_numpy(lat), torch.from_numpy(act)


def _spans(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Every index of the slices ``[starts[i], ends[i])``, in order, without a Python loop over them."""
    lengths = ends - starts
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """``values`` without repeats, each where it first appears."""
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def _by_strength(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The order that sorts by ``group`` (ascending), then by ``value`` (positive float32, descending), ties in place.

    One stable sort of an int64 key: a positive float's bits, read as an integer, sort as the float does.
    """
    bits = value.astype(np.float32).view(np.int32).astype(np.int64)
    return np.argsort((group.astype(np.int64) << 31) | (0x7FFFFFFF - bits), kind="stable")


def _spread(indices: np.ndarray, n: int, n_quantiles: int, rng) -> tuple[list[int], list[int]]:
    """Up to ``n`` of ``indices`` (sorted by increasing activation), spread evenly over quantiles.

    The quantiles are ``np.array_split``'s sections of the positions; each draws its share with one
    ``rng.choice`` of its positions.
    """
    if len(indices) == 0 or n <= 0:
        return [], []
    k = min(n_quantiles, len(indices))
    size, longer = divmod(len(indices), k)  # the first ``longer`` sections hold one more
    chosen, quantile, start = [], [], 0
    for q in range(k):
        end = start + size + (q < longer)
        take = rng.choice(np.arange(start, end), size=min(n // k + (q < n % k), end - start), replace=False)
        chosen.append(indices[np.sort(take)])
        quantile += [q] * len(take)
        start = end
    return np.concatenate(chosen).tolist(), quantile


def _train_share(available: int, n_train: int, n_test: int) -> int:
    """Train examples to take: ``n_train`` when there are enough, else a proportional share, so the
    test set is never empty.
    """
    if available >= n_train + n_test or available < 2:
        return min(n_train, available)
    return max(1, min(n_train, available * n_train // (n_train + n_test)))


@dataclass
class _Range:
    """The activations of a range of latents, grouped by (latent, example); arrays over triples, pairs or latents.

    Triples are sorted by latent then token, so each latent's triples, and each of its examples'
    triples, are contiguous, and its examples come in increasing order.
    """

    latents: np.ndarray
    offset: np.ndarray
    """Per triple: its position inside its example."""
    act: np.ndarray
    latent_start: np.ndarray
    """[latents + 1]: where each latent's triples start."""
    pair_start: np.ndarray
    """[pairs + 1]: where each (latent, example) pair's triples start."""
    pair_example: np.ndarray
    pair_latent_start: np.ndarray
    """[latents + 1]: where each latent's pairs start."""
    by_strength: np.ndarray
    """Pairs, each latent's by decreasing largest activation (ties: by example), in place of its own pairs."""
    peak_token: np.ndarray
    """Per pair: the token at the example's first largest activation."""
    maximum: np.ndarray
    """Per latent: the largest activation (0 for a latent that never fires)."""
    histogram: np.ndarray
    """[latents, HISTOGRAM_BINS]: as ``torch.histc(acts, HISTOGRAM_BINS, 0, max)``."""


class RecordBuilder:
    """Builds ``LatentRecord``s from a ``CacheView``, walking latents in ranges that each read the cache once."""

    def __init__(self, view: CacheView, cfg: RecordsConfig, decoder: torch.Tensor | None = None, unembed=None):
        self.view = view
        self.cfg = cfg
        e = cfg.example_len
        self.per_window = view.tokens.shape[1] // e
        self.example_tokens = view.tokens[:, : self.per_window * e].reshape(-1, e)
        self.num_examples = len(self.example_tokens)
        self._tokens = self.example_tokens.numpy()
        self._flat_tokens = view.tokens.flatten().numpy()
        # which examples hold each token id, CSR style: for hard negatives of many latents at once
        flat = self._tokens.flatten().astype(np.int64)
        order = np.argsort(flat, kind="stable")
        token, example = flat[order], order // e
        first = np.ones(len(token), dtype=bool)
        first[1:] = (token[1:] != token[:-1]) | (example[1:] != example[:-1])
        self._token_examples = example[first]
        counts = np.bincount(token[first], minlength=int(flat.max(initial=0)) + 1)
        self._token_start = np.concatenate([[0], np.cumsum(counts)])
        self.decoder = decoder
        self.unembed = unembed

    def build(self, coder: str, latents, *, top_only: bool = False, contrast: bool = False) -> Iterator[LatentRecord]:
        """Records for ``latents`` of ``coder``, in increasing latent order, streamed range by range.

        With ``top_only``, each record has its statistics, promoted tokens and top examples but no sampled split
        (train, test, negatives, validation): what a published dataset row holds, at a fraction of the cost; the top
        examples are those of a whole record (they take no random draw). With ``contrast``, each record also draws
        the contrastive explainer's negatives (``contrast_negatives``); every other split is the same either way."""
        wanted = np.unique(np.array([int(i) for i in latents], dtype=np.int64))
        n = self.view.num_latents
        bad = wanted[(wanted < 0) | (wanted >= n)]
        if len(bad):
            raise InterpError(f"Latents {bad[:5].tolist()} do not exist: this coder has {n} latents (0-{n - 1}).")
        for chunk in self._ranges(wanted):
            yield from self._range_records(coder, chunk, top_only, contrast)

    def _ranges(self, wanted: np.ndarray) -> Iterator[np.ndarray]:
        """``wanted`` cut into ranges of at most ``RANGE_LATENTS`` whose span holds at most ``RANGE_TRIPLES`` cached
        activations (a latent with more is a range of its own)."""
        before = np.concatenate([[0], np.cumsum(self.view.count.numpy())])  # cached triples before each latent
        ends = before[wanted + 1]
        i = 0
        while i < len(wanted):
            j = int(np.searchsorted(ends, before[wanted[i]] + RANGE_TRIPLES, side="right"))
            j = min(max(j, i + 1), i + RANGE_LATENTS)
            yield wanted[i:j]
            i = j

    def _read(self, latents: np.ndarray) -> _Range:
        """The range's triples from the cache, grouped, with everything per latent that needs no random draw."""
        tok, lat, act = (x.numpy() for x in self.view.triples(torch.from_numpy(latents)))
        e, ctx = self.cfg.example_len, self.view.tokens.shape[1]
        window, pos = np.divmod(tok, ctx)
        keep = pos < self.per_window * e  # the tail of a window too short for an example is dropped
        if self.view.bos_token_id is not None and self.cfg.skip_bos:
            keep &= self._flat_tokens[tok] != self.view.bos_token_id
        tok, lat, act, window, pos = tok[keep], lat[keep], act[keep], window[keep], pos[keep]
        part, offset = np.divmod(pos, e)
        example = window * self.per_window + part
        position = np.zeros(latents[-1] - latents[0] + 1, dtype=np.int64)
        position[latents - latents[0]] = np.arange(len(latents))
        where = position[lat - latents[0]]  # each triple's latent, as a position in the range
        latent_start = np.searchsorted(where, np.arange(len(latents) + 1))
        new_pair = np.ones(len(act), dtype=bool)
        new_pair[1:] = (where[1:] != where[:-1]) | (example[1:] != example[:-1])
        pair_start = np.append(np.flatnonzero(new_pair), len(act))
        pair_of = np.cumsum(new_pair) - 1
        pair_max = np.maximum.reduceat(act, pair_start[:-1]) if len(act) else act
        pair_where = where[pair_start[:-1]]
        peak = np.flatnonzero(act == pair_max[pair_of])
        first = np.ones(len(peak), dtype=bool)
        first[1:] = pair_of[peak][1:] != pair_of[peak][:-1]
        peak = peak[first]  # the first largest of each pair (none when no latent of the range fires)
        maximum = np.zeros(len(latents), dtype=np.float32)
        fired = latent_start[1:] > latent_start[:-1]
        if len(act):
            maximum[fired] = np.maximum.reduceat(act, latent_start[:-1][fired])
        # torch.histc's bin, computed as it does (in float32), with the top edge in the last bin
        bins = (act * np.float32(HISTOGRAM_BINS) / maximum[where]).astype(np.int64) if len(act) else where
        bins = np.minimum(bins, HISTOGRAM_BINS - 1)
        histogram = np.bincount(where * HISTOGRAM_BINS + bins, minlength=len(latents) * HISTOGRAM_BINS)
        return _Range(
            latents=latents,
            offset=offset,
            act=act,
            latent_start=latent_start,
            pair_start=pair_start,
            pair_example=example[pair_start[:-1]],
            pair_latent_start=np.searchsorted(pair_where, np.arange(len(latents) + 1)),
            by_strength=_by_strength(pair_where, pair_max),
            peak_token=self._flat_tokens[tok[peak]].astype(np.int64),
            maximum=maximum,
            histogram=histogram.reshape(len(latents), HISTOGRAM_BINS),
        )

    def _logit_tokens(self, latents: np.ndarray) -> list[tuple[list[tuple[int, float]], list[tuple[int, float]]]]:
        """Per latent, the tokens whose logits its decoder direction raises and lowers most.

        One float32 matmul per block of latents (``LOGIT_FLOATS`` logits) finds twice the tokens wanted
        each way; their logits are then taken in float64 and rounded, and those rank them, so a latent's
        tokens do not depend on which latents shared its block.
        """
        n = self.cfg.n_logit_tokens
        if self.decoder is None or self.unembed is None or n <= 0:
            return [([], [])] * len(latents)
        lens = self.unembed
        step = max(1, LOGIT_FLOATS // lens.vocab_size)
        out = []
        for i in range(0, len(latents), step):
            directions = self.decoder[torch.from_numpy(latents[i : i + step])]
            logits = lens(directions)
            sides = []
            for largest in (True, False):  # promoted, then suppressed
                candidates = logits.topk(min(2 * n, lens.vocab_size), dim=1, largest=largest).indices
                exact = lens.logits_of(directions, candidates)
                best = exact.topk(n, dim=1, largest=largest).indices
                tokens, values = candidates.gather(1, best).tolist(), exact.gather(1, best).tolist()
                sides.append([list(zip(t, v, strict=True)) for t, v in zip(tokens, values, strict=True)])
            out += zip(*sides, strict=True)
        return out

    def _range_records(
        self, coder: str, latents: np.ndarray, top_only: bool, contrast: bool
    ) -> Iterator[LatentRecord]:
        r = self._read(latents)
        act = torch.from_numpy(r.act)
        for i, (latent, logit_tokens) in enumerate(zip(latents.tolist(), self._logit_tokens(latents), strict=True)):
            a, b = r.latent_start[i], r.latent_start[i + 1]
            p, q = r.pair_latent_start[i], r.pair_latent_start[i + 1]
            count = int(b - a)
            stats = LatentStats(
                count=count,
                frequency=count / max(self.view.num_tokens, 1),
                max=float(r.maximum[i]),
                mean=float(act[a:b].mean()) if count else 0.0,  # torch's float32 mean, as records always had
                histogram=r.histogram[i].tolist(),
                num_examples=int(q - p),
            )
            status = "dead" if count == 0 else "rare" if q - p < self.cfg.min_examples else "ok"
            record = LatentRecord(coder, latent, status, stats, promoted=logit_tokens[0], suppressed=logit_tokens[1])
            if count and top_only:
                record.top = self._activating(r, r.by_strength[p : min(q, p + TOP_EXAMPLES)])
            elif count:
                self._sample(record, r, p, q, contrast)
            yield record

    def _sample(self, record: LatentRecord, r: _Range, p: int, q: int, contrast: bool) -> None:
        """Fill ``record``'s examples from its pairs ``[p, q)`` of ``r``, with the latent's own random stream."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.records_seed, record.latent])
        by_strength = r.by_strength[p:q] - p  # the latent's pairs, as 0..q-p-1
        n_train = _train_share(q - p, cfg.n_train, cfg.n_test)
        if cfg.train_sampling == "top":
            train = by_strength[:n_train]
        else:
            train = np.array(_spread(by_strength[::-1].copy(), n_train, cfg.n_quantiles, rng)[0], dtype=np.int64)
        rest = np.ones(q - p, dtype=bool)
        rest[train] = False
        weakest_first = by_strength[::-1]
        test, record.test_quantiles = _spread(weakest_first[rest[weakest_first]], cfg.n_test, cfg.n_quantiles, rng)
        top = by_strength[:TOP_EXAMPLES]
        examples = self._activating(r, p + np.concatenate([top, train, np.array(test, dtype=np.int64)]))
        record.top = examples[: len(top)]
        record.train = examples[len(top) : len(top) + len(train)]
        record.test = examples[len(top) + len(train) :]
        blocked = np.zeros(self.num_examples, dtype=bool)  # the examples no negative may be: here, where it fires
        blocked[r.pair_example[p:q]] = True
        record.negatives = self._negatives(blocked, cfg.n_negatives, rng)
        record.hard_negatives = self._hard_negatives(r.peak_token[p + train], blocked, cfg.n_hard_negatives, rng)
        self._validation(record, r, p, q, np.concatenate([train, np.array(test, dtype=np.int64)]), train, blocked)
        if contrast:
            self._contrast(record, r.peak_token[p + train], blocked)

    def _validation(
        self,
        record: LatentRecord,
        r: _Range,
        p: int,
        q: int,
        used: np.ndarray,
        train: np.ndarray,
        blocked: np.ndarray,
    ) -> None:
        """The validation split: activating examples over quantiles and random and hard negatives, drawn after every
        other split from what they leave, with a random stream of the latent's own (``[records_seed, latent, 1]``), so
        the other splits are as they were before there was a validation split. ``blocked`` (the examples the latent
        fires in) is extended in place with the negatives taken."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.records_seed, record.latent, 1])
        rest = np.ones(q - p, dtype=bool)
        rest[used] = False
        weakest_first = r.by_strength[p:q][::-1] - p
        valid, record.valid_quantiles = _spread(weakest_first[rest[weakest_first]], cfg.n_valid, cfg.n_quantiles, rng)
        record.valid = self._activating(r, p + np.array(valid, dtype=np.int64))
        blocked[[ex.index for ex in record.negatives + record.hard_negatives]] = True
        record.valid_negatives = self._negatives(blocked, cfg.n_valid_negatives, rng)
        blocked[[ex.index for ex in record.valid_negatives]] = True
        peaks = r.peak_token[p + train]
        record.valid_hard_negatives = self._hard_negatives(peaks, blocked, cfg.n_valid_hard_negatives, rng)
        blocked[[ex.index for ex in record.valid_hard_negatives]] = True

    def _contrast(self, record: LatentRecord, peaks: np.ndarray, blocked: np.ndarray) -> None:
        """The contrastive explainer's own negatives: hard ones (its train examples' peak tokens, no firing) first,
        topped up with random ones, drawn after every other split from what they leave (``blocked``: where the latent
        fires and every negative already taken), with a stream of their own (``[records_seed, latent, 2]``)."""
        rng = np.random.default_rng([self.cfg.records_seed, record.latent, 2])
        n = self.cfg.n_contrast_negatives
        hard = self._hard_negatives(peaks, blocked, n, rng)
        blocked[[ex.index for ex in hard]] = True
        record.contrast_negatives = hard + self._negatives(blocked, n - len(hard), rng)

    def _activating(self, r: _Range, pairs: np.ndarray) -> list[Example]:
        """The examples of ``pairs`` of ``r``, with the latent's activation on each token."""
        triples = _spans(r.pair_start[pairs], r.pair_start[pairs + 1])
        rows = np.repeat(np.arange(len(pairs)), r.pair_start[pairs + 1] - r.pair_start[pairs])
        acts = np.zeros((len(pairs), self.cfg.example_len), dtype=np.float32)
        acts[rows, r.offset[triples]] = r.act[triples]
        ids = r.pair_example[pairs]
        return [
            Example(t, a, i) for t, a, i in zip(self._tokens[ids].tolist(), acts.tolist(), ids.tolist(), strict=True)
        ]

    def _inactive(self, ids: np.ndarray) -> list[Example]:
        zeros = [0.0] * self.cfg.example_len
        return [Example(t, list(zeros), i) for t, i in zip(self._tokens[ids].tolist(), ids.tolist(), strict=True)]

    def _negatives(self, blocked: np.ndarray, n: int, rng) -> list[Example]:
        """``n`` random examples not ``blocked`` (a mask over examples): the first distinct ones of batches of ``2 n``
        draws."""
        free = self.num_examples - int(np.count_nonzero(blocked))
        if n <= 0 or free <= 0:
            return []
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < min(n, free):
            draws = rng.integers(0, self.num_examples, size=2 * n)
            chosen = _first_occurrences(np.concatenate([chosen, draws[~blocked[draws]]]))[:n]
        return self._inactive(np.sort(chosen))

    def _hard_negatives(self, peaks: np.ndarray, blocked: np.ndarray, n: int, rng) -> list[Example]:
        """Examples not ``blocked`` (a mask over examples) containing the tokens the latent fires most strongly on
        (``peaks``, one per train example): those of the first peak token first, each once.

        One mask pass per distinct peak token (each token's examples are listed ascending, each once), not a sort
        of every candidate: a common token is in a fixed share of the examples, so the candidates grow with the
        cache."""
        if n <= 0:
            return []
        peaks = _first_occurrences(peaks)
        if self.view.bos_token_id is not None:
            peaks = peaks[peaks != self.view.bos_token_id]
        taken = blocked.copy()
        parts = []
        for token in peaks.tolist():
            examples = self._token_examples[self._token_start[token] : self._token_start[token + 1]]
            examples = examples[~taken[examples]]
            taken[examples] = True
            parts.append(examples)
        candidates = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        if len(candidates) > n:
            candidates = np.sort(rng.choice(candidates, size=n, replace=False))
        return self._inactive(candidates)


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


@dataclass
class LogitLens:
    """``directions -> logits``: residual-stream directions (``[d]`` or ``[n, d]``) through the final norm's gain and
    the unembedding."""

    head: torch.Tensor
    """``[vocab, d]`` unembedding."""
    gain: torch.Tensor
    """``[d]`` final norm gain (ones where the model has none)."""

    @property
    def vocab_size(self) -> int:
        """Logits per direction."""
        return self.head.shape[0]

    def __call__(self, directions: torch.Tensor) -> torch.Tensor:
        return (directions.float().to(self.head.device) * self.gain) @ self.head.T

    def logits_of(self, directions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``[n, k]`` logits of ``tokens`` (``[n, k]``) for each of ``directions`` (``[n, d]``), in float64 rounded
        to float32: the same whatever else is computed with them."""
        scaled = directions.double().to(self.head.device) * self.gain.double()
        return torch.einsum("nd,nkd->nk", scaled, self.head[tokens.to(self.head.device)].double()).float()


def logit_lens(model, decoder: torch.Tensor) -> LogitLens | None:
    """The logit lens of ``model`` if ``decoder`` writes to the residual stream, else None."""
    head = model.get_output_embeddings().weight.detach().float()
    if decoder.shape[-1] != head.shape[1]:
        return None
    norm = getattr(getattr(model, model.base_model_prefix, model), "norm", None)
    gain = norm.weight.detach().float() if getattr(norm, "weight", None) is not None else torch.ones(head.shape[1])
    return LogitLens(head, gain.to(head.device))


def save_records(path: Path, records: list[LatentRecord]) -> None:
    """Append records to a JSONL file (materialised records for inspection or other tools)."""
    append_jsonl(path, [r.to_dict() for r in records])
