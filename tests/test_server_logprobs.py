"""Log-prob scores from a server are on one scale: an answer missing from the server's top list
is bounded, not floored, and a real llama.cpp server scores as the local model does.

The llama.cpp test starts ``python -m llama_cpp.server`` on the embedded GGUF. It needs a python
that can import ``llama_cpp.server`` (``pip install 'llama-cpp-python[server]'``): the one named
by ``$INTERP_LLAMA_PYTHON`` (an error if it cannot), else this one; it is skipped when neither can.
"""

import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from interp.llm import OpenAIClient, TransformersClient
from interp.llm.openai_client import TOP_LOGPROBS
from interp.models import embedded_gguf_path
from interp.scoring.classify import DetectionScorer
from interp.views import HeldOut
from tests.helpers.scoring import CAT_TEXTS, MONEY_TEXTS, example

LLAMA_PYTHON = "INTERP_LLAMA_PYTHON"

TOLERANCE = 0.4
"""Most a llama.cpp log-odds may differ from the local model's, in nats: twice the largest
difference measured. Both run the same Q4_1 weights through different kernels (llama.cpp's
quantized matmuls; transformers on the dequantized weights): on these 48 prompts the log-odds
differed by 0.001 to 0.20 (median 0.055)."""

EXPLANATIONS = ["Mentions of a cat", "Words about money and finance", "The weather", "Verbs in the past tense"]


def cat_record(tokenizer) -> HeldOut:
    """The test split of a latent that fires on "cat" in six texts; six texts about money are its negatives."""
    return HeldOut(
        "sae",
        5,
        "ok",
        "test",
        [example(tokenizer, t, i) for i, t in enumerate(CAT_TEXTS)],
        [0, 0, 1, 1, 2, 2],
        [example(tokenizer, t, 100 + i) for i, t in enumerate(MONEY_TEXTS)],
    )


def ranking(named: dict[str, float], fillers: int = 40) -> list[tuple[str, float]]:
    """A whole next-token distribution, best first: ``named`` probabilities, the rest spread evenly
    over filler tokens.
    """
    rest = (1 - sum(named.values())) / fillers
    probs = {**named, **{f"w{k}": rest for k in range(fillers)}}
    return sorted(((t, math.log(p)) for t, p in probs.items()), key=lambda tp: -tp[1])


CAT_ODDS = {"1": 0.8, "0": 0.001}
"""A cat text: "0" ranks below 40 fillers, out of a 20-long list."""
MONEY_ODDS = {"1": 0.05, "0": 0.7}


def test_an_answer_missing_from_the_top_list_gives_a_bound_on_the_same_scale(server, smollm_tokenizer):
    server.top = lambda content: ranking(CAT_ODDS if "cat" in content.split("Text:")[-1] else MONEY_ODDS)
    server.max_top_logprobs = TOP_LOGPROBS  # as OpenAI, and vLLM without --max-logprobs
    llm = OpenAIClient(server.base_url, "scripted", concurrency=4, max_retries=0)
    metrics, outcomes = DetectionScorer(llm, smollm_tokenizer, mode="logprob").score(
        [(cat_record(smollm_tokenizer), "A cat")]
    )[0]
    cats = [o for o in outcomes if o.label]
    money = [o for o in outcomes if not o.label]
    assert all(o.bound for o in cats) and not any(o.bound for o in money) and metrics["bounded"] == 6
    true_cat, true_money = math.log(0.8 / 0.001), math.log(0.05 / 0.7)
    for o in cats:  # "0" unlisted: its ceiling stands in, so the score is a lower bound on the log-odds, near it
        assert true_cat - 2 < o.score <= true_cat and o.prediction is True
    assert all(o.score == pytest.approx(true_money) and o.prediction is False for o in money)
    assert metrics["auroc"] == 1.0 and metrics["failed"] == 0  # a -100 floor gave ~100 against -2.6


def can_serve(python: str) -> bool:
    """Whether ``python`` exists and imports ``llama_cpp.server``."""
    return (
        Path(python).is_file()
        and subprocess.run([python, "-c", "import llama_cpp.server"], capture_output=True, timeout=120).returncode == 0
    )


def llama_python() -> str | None:
    """The python named by ``$INTERP_LLAMA_PYTHON`` (it must work), else this one if it can serve."""
    named = os.environ.get(LLAMA_PYTHON)
    if named:
        if not can_serve(named):
            pytest.fail(f"${LLAMA_PYTHON}={named} cannot import llama_cpp.server")
        return named
    return sys.executable if can_serve(sys.executable) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """The base URL of llama-cpp-python's server on the embedded GGUF, started for this module."""
    python = llama_python()
    if python is None:
        pytest.skip(
            "no llama.cpp server: pip install 'llama-cpp-python[server]', "
            f"or set ${LLAMA_PYTHON} to a python that has it"
        )
    port = free_port()
    log = (
        tmp_path_factory.mktemp("llama") / "server.log"
    )  # a file, not a pipe: its verbose log would fill a pipe and stall it
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                python,
                "-m",
                "llama_cpp.server",
                "--model",
                str(embedded_gguf_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(server, base_url, log)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_until_serving(server: subprocess.Popen, base_url: str, log: Path, limit: float = 120) -> None:
    """Poll ``/models`` until the server answers; fail with its log's end if it exits or takes over
    ``limit`` seconds.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    state = "exited" if server.poll() is not None else f"did not answer within {limit:g} s"
    pytest.fail(f"llama.cpp server {state}: {log.read_text(errors='replace')[-2000:]}")


def detection_scores(client, tokenizer) -> dict[tuple[str, int], tuple[float | None, bool]]:
    """(explanation, example index) -> (log-odds, bound) for the cat record under each explanation."""
    record = cat_record(tokenizer)
    results = DetectionScorer(client, tokenizer, mode="logprob").score([(record, e) for e in EXPLANATIONS])
    return {
        (e, o.index): (o.score, o.bound)
        for e, (_, outcomes) in zip(EXPLANATIONS, results, strict=True)
        for o in outcomes
    }


@pytest.mark.slow
def test_llama_cpp_log_odds_agree_with_the_local_model(llama_server, smollm, smollm_tokenizer):
    local = detection_scores(TransformersClient(lm=smollm), smollm_tokenizer)
    wide = detection_scores(OpenAIClient(llama_server, "smollm2", concurrency=2), smollm_tokenizer)
    assert len(local) == len(wide) == 48 and not any(
        bound for _, bound in wide.values()
    )  # 200 listed: both answers in
    differences = sorted(abs(wide[k][0] - local[k][0]) for k in local)
    assert differences[-1] < TOLERANCE, f"median {differences[24]:.3f}, max {differences[-1]:.3f}"

    narrow_client = OpenAIClient(llama_server, "smollm2", concurrency=2)
    narrow_client.top_logprobs = TOP_LOGPROBS  # what OpenAI and vLLM list
    narrow = detection_scores(narrow_client, smollm_tokenizer)
    bounds = [k for k, (_, bound) in narrow.items() if bound]
    assert 0 < len(bounds) < 48  # "0" ranks 9th to 33rd: out of the list for some prompts only
    for k, (score, bound) in narrow.items():
        if bound:  # "0" unlisted: a lower bound on the log-odds, within a few nats of it
            assert local[k][0] - 3 < score < local[k][0] + TOLERANCE
        else:
            assert score == pytest.approx(wide[k][0], abs=1e-3)
