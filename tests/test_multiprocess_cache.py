"""Caching across processes (``torchrun``, which ``accelerate`` reads as a launch): each process writes its own
shards, and the result is the one-process cache, byte for byte."""

import subprocess
import sys

import pytest

from interp.cli import main
from tests.helpers.models import save_tiny_model

pytestmark = pytest.mark.slow


def test_two_processes_cache_exactly_what_one_does(tmp_path, smollm_tokenizer):
    model = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    args = ["--model", str(model)] + (
        "--num-tokens 2048 --ctx-len 32 --shard-windows 8 --batch-size 8 "
        "--coders topk-neurons@model.layers.1.mlp neurons@model.layers.2.mlp --quiet"
    ).split()
    assert main(["cache", str(tmp_path / "one"), *args]) == 0
    # torchrun, as tests/test_accelerate_split.py: `accelerate launch --cpu --num_processes 2` starts one process
    # unless MPI runs it (this test compared one process with itself until stop 29).
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, "-m", "interp", "cache", str(tmp_path / "two"), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert len([p for p in one if p.name.startswith("shard-")]) == 2 * 2 * 8  # 8 shards (and sidecars) per coder
    assert one == two
