"""Explaining and scoring across processes (``accelerate launch --cpu --num_processes 2``): each process takes its
share of the selected latents, and the run ends with exactly the lines one process writes (same keys and texts for
the deterministic tokens explainer and the embedding scorer; no key twice)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interp.cli import main
from tests.helpers.models import save_tiny_model

pytestmark = pytest.mark.reliability  # two accelerate launches: a minute or two on 2 busy cores

LAUNCH = [
    sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--cpu", "--num_processes", "2",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "interp",
]  # fmt: skip


def _lines(path: Path, drop: tuple[str, ...]) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _keyed(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    out = {tuple(r[k] for k in key): r for r in rows}
    assert len(out) == len(rows), "a key written twice"
    return out


def test_two_processes_explain_and_score_exactly_what_one_does(tmp_path, smollm_tokenizer):
    model = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    one = tmp_path / "one"
    cache = ["cache", str(one), "--model", str(model), "--quiet"] + (
        "--num-tokens 1024 --ctx-len 32 --shard-windows 8 --batch-size 8 --coders topk-neurons@model.layers.1.mlp"
    ).split()
    assert main(cache) == 0
    two = tmp_path / "two"
    shutil.copytree(one, two)
    explain = ["--explainer", "tokens", "--latents", "0-39", "--quiet"]
    score = ["--explainer", "tokens", "--scorers", "embedding", "--quiet"]
    assert main(["explain", str(one), *explain]) == 0
    assert main(["score", str(one), *score]) == 0
    for stage, args in (("explain", explain), ("score", score)):
        done = subprocess.run([*LAUNCH, stage, str(two), *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    ekey, skey = ("coder", "latent", "explainer"), ("scorer", "coder", "latent", "explainer", "baseline")
    timing = ("batch_seconds_per_latent",)
    assert _keyed(_lines(two / "explanations.jsonl", timing), ekey) == _keyed(
        _lines(one / "explanations.jsonl", timing), ekey
    )
    assert _keyed(_lines(two / "scores.jsonl", ()), skey) == _keyed(_lines(one / "scores.jsonl", ()), skey)
