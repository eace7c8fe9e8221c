"""The served-LLM scale benchmark runs, the client keeps ``--concurrency`` requests in flight across latents, and the
stand-in server explains each latent differently, so that the random-explanation baseline is paid for."""

import importlib.util
import re
from pathlib import Path

import pytest

from interp.rundir import RunDir

pytestmark = pytest.mark.slow


def load_benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "served_scale.py"
    spec = importlib.util.spec_from_file_location("served_scale", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_stand_in_explains_each_prompt_its_own_way_and_the_same_prompt_the_same_way():
    bench = load_benchmark()
    prompt = [{"role": "system", "content": "Explain."}, {"role": "user", "content": "Examples of latent 3"}]
    other = [prompt[0], {"role": "user", "content": "Examples of latent 4"}]
    assert bench.explanation(prompt) == bench.explanation([dict(m) for m in prompt])
    assert bench.explanation(prompt) != bench.explanation(other)
    assert bench.explanation(prompt).startswith("[EXPLANATION]: ")


def test_the_scale_benchmark_keeps_as_many_requests_in_flight_as_asked_and_pays_for_the_baseline(capsys, monkeypatch):
    bench = load_benchmark()
    runs: dict[int, tuple[list[dict], list[dict]]] = {}
    measure = bench.measure

    def measure_and_read(base, work, cfg, server, concurrency):
        row = measure(base, work, cfg, server, concurrency)
        run = RunDir(work / f"c{concurrency}")
        runs[concurrency] = (run.usable_explanations("default"), run.scores())
        return row

    monkeypatch.setattr(bench, "measure", measure_and_read)
    # Each reply waits 0.3 s, so the client's 16 requests overlap even on a busy machine: at 0.05 s, a fresh-clone CI
    # run saw 14 at once (replies came back before the last requests were sent). 4, not 1, as the lower concurrency:
    # the ~130 requests a latent, one at a time, would take two minutes.
    bench.main(["--latents", "3", "--concurrency", "4", "16", "--latency", "0.3"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \|", out, flags=re.MULTILINE)
    assert [(int(c), int(inflight)) for c, _, _, inflight in rows] == [(4, 4), (16, 16)]
    assert all(int(latents) == 3 and float(per_latent) > 10 for _, latents, per_latent, _ in rows)
    assert "latents per GPU-hour" in out and "delphi's published 171" in out

    (explained, scores), (explained_16, _) = runs[4], runs[16]
    own = {r["latent"]: r["explanation"] for r in explained}
    assert len(own) == 3 and len(set(own.values())) == 3  # each latent its own explanation
    assert own == {r["latent"]: r["explanation"] for r in explained_16}  # the same prompts, the same replies
    baselines = [s for s in scores if s["baseline"]]
    assert {s["scorer"] for s in baselines} == {"detection-logprob", "fuzzing-logprob"} and len(baselines) == 6
    # another latent's explanation: prompts the response cache had not seen, so the server was asked them
    assert all(s["explanation"] != own[s["latent"]] for s in baselines)
