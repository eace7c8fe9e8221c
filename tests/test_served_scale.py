"""The served-LLM scale benchmark runs, and the client keeps ``--concurrency`` requests in flight across latents."""

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_scale_benchmark_keeps_as_many_requests_in_flight_as_asked(capsys):
    path = Path(__file__).parents[1] / "benchmarks" / "served_scale.py"
    spec = importlib.util.spec_from_file_location("served_scale", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # Each reply waits 0.3 s, so the client's 16 requests overlap even on a busy machine: at 0.05 s, a fresh-clone CI
    # run saw 14 at once (replies came back before the last requests were sent).
    bench.main(["--latents", "3", "--concurrency", "1", "16", "--latency", "0.3"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \|", out, flags=re.MULTILINE)
    assert [(int(c), int(inflight)) for c, _, _, inflight in rows] == [(1, 1), (16, 16)]
    assert all(int(latents) == 3 and float(per_latent) > 10 for _, latents, per_latent, _ in rows)
    assert "latents per GPU-hour" in out and "delphi's published 171" in out
