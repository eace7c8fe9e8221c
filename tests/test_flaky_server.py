"""A flaky LLM server: timeouts, 500s and 429s, truncated JSON, dropped and cut connections.

The run completes (retrying what a retry can fix, recording the rest as failures, never raising)
and a later run against the recovered server fills in exactly the failures, ending where a run
against a healthy server ends. The server is the real HTTP server of ``tests/helpers/openai_server.py``.
"""

import hashlib
import json
import random

import pytest

from interp.config import CacheConfig, CoderConfig, CorpusConfig, ExplainConfig, ModelConfig, RunConfig, ScoreConfig
from interp.llm import GenerationParams, OpenAIClient, make_client
from interp.rundir import EXPLANATION_KEY, RunDir
from interp.stages import run_cache, run_explain, run_score, summarize_run
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply
from tests.helpers.results import explanation_lines, score_lines

pytestmark = pytest.mark.reliability

FAILURES = ["500", "429", "truncated", "drop", "cut", "sleep"]


def user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


@pytest.mark.parametrize("failure", ["drop", "cut"])
def test_dropped_and_cut_connections_are_retried(server, failure):
    server.script = [failure, failure]
    [reply] = OpenAIClient(server.base_url, "m", max_retries=2, backoff=0.01).generate(
        [user("hi")], GenerationParams()
    )
    assert reply.text == "echo: hi" and reply.error is None and len(server.requests) == 3


def test_a_server_that_keeps_failing_gives_a_recorded_failure_naming_the_cause(server):
    server.script = ["drop"] * 3 + ["cut"] * 3 + ["sleep"] * 3
    server.sleep = 1.0
    client = OpenAIClient(server.base_url, "m", max_retries=2, backoff=0.01, timeout=0.3, concurrency=1)
    dropped, cut, slow = client.generate([user("a"), user("b"), user("c")], GenerationParams())
    assert "3 tries" in dropped.error and "Disconnected" in dropped.error
    assert "3 tries" in cut.error and "IncompleteRead" in cut.error
    assert "timed out after 0.3 s" in slow.error
    assert all(r.text == "" for r in (dropped, cut, slow))


def flaky(server, seed: int, rate: float = 0.4) -> None:
    """Misbehave at random on a share of requests, and always on prompts whose hash ends in 0 or 1 (of 0-3)."""
    rng = random.Random(seed)
    server.script = [rng.choice(FAILURES) if rng.random() < rate else "ok" for _ in range(5000)]
    server.sleep = 0.5
    broken = lambda content: int(hashlib.sha256(content.encode()).hexdigest(), 16) % 4 < 2  # noqa: E731
    server.body = lambda content: '{"choices": [' if broken(content) else None


def healthy(server) -> None:
    server.script, server.body, server.reply = [], None, scripted_reply


def config(model_dir, url: str) -> RunConfig:
    return RunConfig(
        model=ModelConfig(model=str(model_dir)),
        corpus=CorpusConfig(num_tokens=1024, ctx_len=32),
        coders=CoderConfig(["topk-neurons@model.layers.1.mlp"], neuron_k=4),
        cache=CacheConfig(batch_size=8, shard_windows=8),
        explain=ExplainConfig(llm=url, llm_model="scripted", latents="sample:8", explain_batch=4, max_retries=1),
        score=ScoreConfig(scorers=["detection"], score_mode="generative"),
    )


def client(server, run_dir):
    """A client that gives up fast: 0.2 s per try, 3 tries, through the run's response cache."""
    return make_client(
        server.base_url,
        "scripted",
        cache=RunDir(run_dir).results_db(),
        concurrency=4,
        timeout=0.2,
        max_retries=2,
        backoff=0.01,
    )


def latest(rows: list[dict], fields=None) -> list[dict]:
    """The current lines (``RunDir.explanations`` or ``RunDir.scores``: one per key), ``fields`` of each (or all but
    timing), in a stable order."""
    return sorted(
        ({k: v for k, v in r.items() if (k in fields if fields else k != "batch_seconds_per_latent")} for r in rows),
        key=json.dumps,
    )


def test_a_run_against_a_flaky_server_completes_and_resumes_to_the_healthy_result(tmp_path, server, smollm_tokenizer):
    model_dir = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    cfg = config(model_dir, server.base_url)
    healthy(server)
    ref = tmp_path / "reference"
    run_cache(cfg, ref, progress=False)
    run_explain(cfg, ref, client=client(server, ref), progress=False)
    run_score(cfg, ref, client=client(server, ref), progress=False)
    asked_by_reference = len(server.requests)

    run_dir = tmp_path / "run"
    run_cache(cfg, run_dir, progress=False)
    flaky(server, seed=1)
    run_explain(
        cfg, run_dir, client=client(server, run_dir), progress=False
    )  # completes: failures are recorded, not raised
    rows = explanation_lines(run_dir)  # every line stored: one per latent so far
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 8 and 0 < len(failed) < 8
    assert all("gave up after 3 tries" in r["note"] and r["attempts"] == 2 for r in failed)

    healthy(server)
    sent = len(server.requests)
    summary = run_explain(cfg, run_dir, client=client(server, run_dir), progress=False)
    assert len(server.requests) - sent == len(failed)  # only the failures are asked again
    assert summary["explanations"] == {"ok": 8}
    # the same explanations; a latent whose first try failed shows its sampled retry's attempts and parameters
    what = (*EXPLANATION_KEY, "explanation", "status", "model", "prompt_sha")
    assert latest(RunDir(run_dir).explanations(), what) == latest(RunDir(ref).explanations(), what)
    assert len(explanation_lines(run_dir)) == 8 + len(failed)  # each failure replaced once, kept as history

    flaky(server, seed=2)
    run_score(cfg, run_dir, client=client(server, run_dir), progress=False)
    scored = score_lines(run_dir)
    assert len(scored) == 16 and any(r["metrics"]["failed"] for r in scored)

    healthy(server)
    sent = len(server.requests)
    summary = run_score(cfg, run_dir, client=client(server, run_dir), progress=False)
    assert 0 < len(server.requests) - sent < asked_by_reference / 2  # cached replies are not asked again
    assert latest(RunDir(run_dir).scores()) == latest(RunDir(ref).scores())
    assert summary == summarize_run(ref)  # each re-score replaced its failed line: nothing is counted twice
