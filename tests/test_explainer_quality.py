"""The explanation-quality benchmark's search rows and selection-bias table, on a tiny random Llama's run.

The explainer is the scripted server (its reply depends on the request's seed, so candidates differ); the judge and
scorer are the real embedding scorer. The script runs as a developer runs it, in its own process.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from interp.cli import main
from tests.helpers.models import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SPLITS = (
    "--n-train 6 --n-test 6 --n-valid 6 --n-negatives 4 --n-hard-negatives 4 --n-valid-negatives 4 "
    "--n-valid-hard-negatives 4 --min-examples 4 --example-len 16"
).split()


def seeded_reply(body: dict) -> str:
    """The request's seed picks which marked token of the prompt the explanation names."""
    content = [m for m in body["messages"] if m["role"] != "assistant"][-1]["content"]
    tokens = re.findall(r"<<(.*?)>>", content) or ["nothing"]
    return f' the token "{tokens[body.get("seed", 0) % len(tokens)]}"'


@pytest.mark.reliability  # about 2.5 minutes on 2 loaded cores: four explain and score passes, one embedder load each
def test_search_rows_and_the_selection_bias_table(tmp_path, smollm_tokenizer, server):
    model = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    run = tmp_path / "run"
    args = ["cache", "--run-dir", str(run), "--quiet", "--model", str(model)]
    args += ["--coders", "topk-neurons@model.layers.1.mlp", *SPLITS]
    args += "--num-tokens 4096 --ctx-len 32 --shard-windows 32 --batch-size 16 --neuron-k 4".split()
    assert main(args) == 0
    server.request_reply = seeded_reply
    command = [sys.executable, str(ROOT / "benchmarks" / "explainer_quality.py"), str(run)]
    command += "--explainers tokens --searches best-of-4 refine --scorers embedding --latents sample:4".split()
    command += ["--llm", server.base_url, "--llm-model", "scripted"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for label in ("| tokens |", "| best-of-4 |", "| refine (R = 2, 2 per round) |"):
        assert label in out
    table = out.split("selection bias (judge embedding, auroc):", 1)[1]
    row = r"^\| (search's candidates|random explanations) \| (test \(delphi\)|validation \(ours\)) \|"
    ways = re.findall(row, table, re.M)
    assert len(ways) == 4
    # chosen on the test split, the score it chose by is the score it reports
    for line in table.splitlines():
        if "test (delphi)" in line:
            cells = [c.strip() for c in line.split("|")]
            assert cells[3] == cells[4]
