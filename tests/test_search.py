"""Explanation search: the validation split, and best-of-k and refinement choosing on it alone.

A tiny random Llama's cached run, explained through the scripted server by an explainer whose reply depends on the
request's seed (so candidates differ); the judge is the real embedding scorer, watched by a spy that records what
it is handed.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from interp.cli import main
from interp.config import RecordsConfig
from interp.explain.parse import flag
from interp.explain.search import mistakes
from interp.rundir import RunDir
from interp.scoring.base import ScoredExample
from interp.views import validation_view
from tests.helpers.leaks import leaks
from tests.helpers.search import (
    cache_tiny_run,
    copy_of,
    explain_args,
    explainer_reply,
    records_of,
    spy_on_judges,
)

OLD_FIELDS = ("top", "train", "test", "test_quantiles", "negatives", "hard_negatives", "stats", "status")


@pytest.fixture(scope="module")
def cached(tmp_path_factory, smollm_tokenizer) -> tuple[Path, Path]:
    """(model folder, a cached run of it with small splits), made once; tests explain copies of the run."""
    return cache_tiny_run(tmp_path_factory, smollm_tokenizer)


@pytest.fixture
def judged(monkeypatch):
    """What the judges of the explain commands are handed, and a way to interrupt the next one."""
    return spy_on_judges(monkeypatch)


def asked(server) -> list[str]:
    """Each request the server received, as the canonical JSON of its messages, seed and temperature."""
    out = []
    for r in server.requests:
        body = json.loads(r["body"])
        out.append(json.dumps([body["messages"], body.get("seed"), body.get("temperature")], sort_keys=True))
    return out


def test_the_validation_split_is_disjoint_and_leaves_the_other_splits_as_they_were(cached, smollm_tokenizer):
    _, run = cached
    cfg = RunDir(run).read_config().records
    with_valid = records_of(run, smollm_tokenizer, cfg)
    without = records_of(run, smollm_tokenizer, replace(cfg, n_valid=0, n_valid_negatives=0, n_valid_hard_negatives=0))
    ok = [r for r in with_valid.values() if r.status == "ok"]
    assert len(ok) >= 10
    assert sum(len(r.valid) == cfg.n_valid for r in ok) >= 5
    assert sum(len(r.valid_hard_negatives) > 0 for r in ok) >= 3
    for r in ok:
        old = without[r.latent]
        assert all(getattr(r, f) == getattr(old, f) for f in OLD_FIELDS), r.latent
        assert not old.valid and not old.valid_negatives and not old.valid_hard_negatives
        train, test, valid = ({ex.index for ex in split} for split in (r.train, r.test, r.valid))
        assert not (train & test or train & valid or test & valid)
        assert all(ex.max_act > 0 for ex in r.valid) and len(r.valid_quantiles) == len(r.valid)
        used_negatives = {ex.index for ex in r.negatives + r.hard_negatives}
        valid_negatives = [ex.index for ex in r.valid_negatives + r.valid_hard_negatives]
        assert len(set(valid_negatives)) == len(valid_negatives)
        assert not set(valid_negatives) & (used_negatives | train | test | valid)
        assert all(max(ex.acts) == 0 for ex in r.valid_negatives + r.valid_hard_negatives)
        view = validation_view(r)
        assert view.split == "validation" and [ex.index for ex in view.activating] == [ex.index for ex in r.valid]
        judged = {ex.index for ex in view.activating + view.negatives + view.hard_negatives}
        assert not judged & (test | used_negatives)


def test_the_contrastive_explainers_negatives_are_its_own_and_change_no_other_split(cached, smollm_tokenizer):
    _, run = cached
    plain, contrast = records_of(run, smollm_tokenizer), records_of(run, smollm_tokenizer, contrast=True)
    ok = [r for r in contrast.values() if r.status == "ok"]
    assert sum(len(r.contrast_negatives) == 4 for r in ok) >= 5
    for r in ok:
        old = plain[r.latent]
        assert not old.contrast_negatives and replace(r, contrast_negatives=[]) == old
        shown = [ex.index for ex in r.contrast_negatives]
        others = r.train + r.test + r.valid + r.negatives + r.hard_negatives + r.valid_negatives
        assert len(set(shown)) == len(shown) and not set(shown) & {ex.index for ex in others + r.valid_hard_negatives}
        assert all(max(ex.acts) == 0 for ex in r.contrast_negatives)


def test_a_search_cannot_be_judged_by_the_intervention_scorer(cached, tmp_path, server, capsys):
    run = copy_of(cached[1], tmp_path)
    assert main(explain_args(run, server.base_url, "--search", "best-of-k", "--judge", "intervention")) != 0
    err = capsys.readouterr().err
    assert "--judge) cannot be intervention" in err and len(err.strip().splitlines()) == 1
    assert not server.requests


def test_a_run_made_before_the_validation_split_keeps_its_config_and_its_splits(cached, tmp_path, smollm_tokenizer):
    _, made = cached
    run = copy_of(made, tmp_path)
    config = json.loads((run / "config.json").read_text())
    for key in ("n_valid", "n_valid_negatives", "n_valid_hard_negatives"):
        del config["records"][key]  # as a run made before there was a validation split
    (run / "config.json").write_text(json.dumps(config))
    rd = RunDir(run)
    cfg = rd.read_config()
    defaults = RecordsConfig()
    assert (cfg.records.n_valid, cfg.records.n_valid_negatives, cfg.records.n_valid_hard_negatives) == (
        defaults.n_valid,
        defaults.n_valid_negatives,
        defaults.n_valid_hard_negatives,
    )  # missing fields read as their defaults
    rd.check(cfg)  # nothing fixed differs: the run is still valid
    before = records_of(made, smollm_tokenizer)
    after = records_of(run, smollm_tokenizer)
    assert all(getattr(after[i], f) == getattr(before[i], f) for i in before for f in OLD_FIELDS)


def test_mistakes_of_a_ranking_judge_are_the_misranked_examples():
    outcomes = [
        ScoredExample(1, True, None, 0.9, "test"),
        ScoredExample(2, True, None, 0.1, "test"),
        ScoredExample(3, False, None, 0.5, "negative"),
        ScoredExample(4, False, None, 0.0, "negative"),
    ]
    assert mistakes(outcomes) == ([2], [3])
    called = [ScoredExample(1, True, False, None, "test"), ScoredExample(2, False, True, None, "negative")]
    assert mistakes(called) == ([1], [2])


def searched(cached, tmp_path: Path, server, search: str) -> tuple[Path, list[dict]]:
    """A copy of the cached run explained with ``search`` through the scripted explainer, and its explanation lines."""
    run = copy_of(cached[1], tmp_path)
    server.request_reply = explainer_reply
    assert main(explain_args(run, server.base_url, *search.split())) == 0
    return run, RunDir(run).explanations("short")


def test_refine_from_the_cli_never_shows_nor_judges_a_test_example(cached, tmp_path, server, judged, smollm_tokenizer):
    run, lines = searched(cached, tmp_path, server, "--search refine --rounds 2 --candidates 3 --judge embedding")
    assert len(lines) == 4 and all(r["status"] == "ok" for r in lines)
    for r in lines:
        assert r["search"] == {
            "search": "refine",
            "candidates": 3,
            "temperature": 0.7,
            "tokens_candidate": False,
            "judge": "embedding",
            "rounds": 2,
        }
        assert r["judge"]["scorer"] == "embedding" and r["judge"]["metric"] == "auroc"
        first = [c for c in r["candidates"] if c["round"] == 0]
        assert len(first) == 3 and {c["round"] for c in r["candidates"]} <= {0, 1, 2}
        scored = [c for c in r["candidates"] if c["score"] is not None]
        chosen = max(scored, key=lambda c: c["score"])
        assert r["explanation"] == chosen["text"] and r["judge"]["validation_score"] == chosen["score"]
    assert any(c["round"] > 0 for r in lines for c in r["candidates"])  # refinement asked again
    records = records_of(run, smollm_tokenizer)
    prompts = [m["content"] for r in server.requests for m in json.loads(r["body"])["messages"]]
    seen, _ = judged
    assert seen and not leaks([records[r["latent"]] for r in lines], prompts, seen, smollm_tokenizer)
    for given, _ in seen:
        assert [ex.index for ex in given.activating] == [ex.index for ex in records[given.latent].valid]


def test_a_failing_candidate_leaves_the_others(cached, tmp_path, server, judged):
    _, made = cached
    run = copy_of(made, tmp_path)
    server.request_reply = explainer_reply
    server.script = ["400", "ok", "ok", "400"]  # a 400 is not retried: exactly two candidates fail
    assert main(explain_args(run, server.base_url, "--search", "best-of-k", "--candidates", "3")) == 0
    lines = RunDir(run).explanations("short")
    failed = [c for r in lines for c in r["candidates"] if c["status"] == "failed"]
    assert len(failed) == 2 and all(c["score"] is None and c["note"] for c in failed)
    assert all(r["status"] == "ok" and r["explanation"] for r in lines)


def test_an_interrupted_search_resumes_without_asking_anything_twice(cached, tmp_path, server, judged):
    _, made = cached
    whole, broken = copy_of(made, tmp_path, "whole"), copy_of(made, tmp_path, "broken")
    server.request_reply = explainer_reply
    search = "--search refine --rounds 2 --candidates 2 --tokens-candidate".split()
    assert main(explain_args(whole, server.base_url, *search)) == 0
    _, control = judged
    calls = control["spies"][-1].calls
    uninterrupted = asked(server)
    server.requests.clear()
    control["stop_at"] = calls - 1  # mid-search: the last batch's first rounds are answered, not yet written
    with pytest.raises(KeyboardInterrupt):
        main(explain_args(broken, server.base_url, *search))
    first = asked(server)
    assert 0 < len(RunDir(broken).explanations("short")) < 4
    server.requests.clear()
    control["stop_at"] = None
    assert main(explain_args(broken, server.base_url, *search)) == 0
    resumed = asked(server)
    assert not set(first) & set(resumed)
    assert sorted(first + resumed) == sorted(uninterrupted)

    def kept(run):
        return [(r["latent"], r["explanation"], r["candidates"]) for r in RunDir(run).explanations("short")]

    assert sorted(kept(broken)) == sorted(kept(whole))
    assert any(c["source"] == "tokens" for _, _, cands in kept(whole) for c in cands)


def test_every_refinement_round_asks_anew_even_where_the_best_did_not_change(cached, tmp_path, server, judged):
    _, lines = searched(cached, tmp_path, server, "--search refine --rounds 3 --candidates 2")
    per_round = [sum(c["round"] == k for r in lines for c in r["candidates"]) for k in range(4)]
    assert per_round[0] == 8 and per_round[2] > 0
    assert len(server.requests) == sum(per_round)  # none answered from the response cache: no repeated request
    assert len(set(asked(server))) == len(server.requests)


def test_a_reply_that_repeats_the_refinement_request_is_flagged():
    assert flag("The feature does not fire anywhere here, but your explanation suggests") == "echoes the prompt"
    assert flag("The feature fires on the marked token here, but your explanation does") == "echoes the prompt"
    assert flag("fires on the word crown and on royal titles") is None
