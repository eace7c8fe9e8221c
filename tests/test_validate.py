"""Planted latents of known meaning: the records are right, and the scorers prefer the true explanation."""

from dataclasses import replace

import pytest

from interp.cli import main
from interp.config import CorpusConfig
from interp.corpus import corpus_windows
from interp.scoring.embedding import EmbeddingScorer, load_embedder
from interp.scoring.surprisal import SurprisalScorer
from interp.validate import PLANTED, planted_records, validate_scorers


@pytest.fixture(scope="module")
def planted(smollm_tokenizer):
    windows = corpus_windows(CorpusConfig(num_tokens=20_000), smollm_tokenizer)
    return planted_records(windows, smollm_tokenizer, n_test=12, n_negatives=12)


def test_planted_latents_fire_exactly_on_their_words(planted, smollm_tokenizer):
    assert len(planted) >= 6
    for record, explanation in planted:
        words = PLANTED[explanation]
        assert record.split == "test"
        for ex in record.activating + record.negatives:
            pieces = [p.strip().lower() for p in smollm_tokenizer.batch_decode([[t] for t in ex.tokens])]
            assert ex.acts == [1.0 if p in words else 0.0 for p in pieces]
        assert all(ex.max_act == 1.0 for ex in record.activating) and all(ex.max_act == 0 for ex in record.negatives)
        assert not {ex.index for ex in record.activating} & {ex.index for ex in record.negatives}


def test_embedding_scorer_prefers_the_true_explanation(planted, smollm_tokenizer):
    [result] = validate_scorers([EmbeddingScorer(smollm_tokenizer, load_embedder())], planted, progress=False)
    assert result.latents == len(planted) and result.wins >= len(planted) - 1
    assert result.margin > 0.2


@pytest.mark.slow
def test_surprisal_scorer_prefers_the_true_explanation(planted, smollm):
    small = [
        (replace(r, activating=r.activating[:6], quantiles=r.quantiles[:6], negatives=r.negatives[:6]), e)
        for r, e in planted[:3]
    ]
    [result] = validate_scorers([SurprisalScorer(smollm, batch_size=16)], small, progress=False)
    assert result.wins >= 2 and result.margin > 0.1


def test_validate_command_prints_the_table(capsys):
    assert main(["validate", "--scorers", "embedding", "--num-tokens", "20000", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["scorer", "metric", "true", "random", "margin", "wins"]
    assert out.splitlines()[1].startswith("embedding")
