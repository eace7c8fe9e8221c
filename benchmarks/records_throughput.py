"""Records throughput and memory: this project's ``RecordBuilder`` against EleutherAI delphi's ``LatentDataset``.

Both sides build the records of every latent of one coder from their own cache of the same model,
coder and token windows (ours written by ``build_cache``, delphi's by its ``LatentCache``, as
``cache_throughput.py`` writes them; caching is not timed). delphi's ``LatentCache`` holds every
activation in memory until it saves, and was killed for memory at 1,048,576 tokens on this project's
23 GB machine (twice); above ``--peer-cache-max`` tokens its cache is therefore written from ours, in
the layout of its ``save_splits`` and ``save_config`` (the same activations, as float16, as it stores
them), and the table says so:

* ours:   ``CacheView.open`` + ``RecordBuilder.build`` over all latents, as ``interp explain`` streams
  them (top, train, quantile test, random and hard negative examples, statistics, and the promoted and
  suppressed tokens through the unembedding), each record dropped once made;
* delphi: ``LatentDataset(...)`` iterated to its end (its constructor and sampler per latent: top
  train examples, quantile test examples, random non-activating examples), with the same sizes:
  20 train, 20 test over 10 quantiles, 10 non-activating, 32-token examples, 10 examples at least.

The model is by default a randomly initialised Llama (``--hidden`` wide, ``--num-layers`` blocks) with
the embedded SmolLM2's tokenizer and vocabulary, and the coder a random sparsify TopK SAE at block
``--layer``, ``--latents`` wide with ``--k`` active: caching a million tokens of SmolLM2-135M itself
takes most of an hour on 2 CPU cores, and what records cost depends on the cache (tokens, latents,
activations per token, vocabulary), not on the model's weights. ``--model`` takes any model.

Each measurement runs in a fresh process; memory is the peak resident set during the step above the
resident set just before it (Linux ``/proc``), and the whole process's peak. Then ours alone, at each
of ``--growth-tokens`` x ``--growth-latents``: the time per latent should stay flat in the number of
latents (one read of the cache per range of latents, not per batch).

Every measurement of ours, in the comparison and in each cell of the growth table, starts from the
same state: a fresh process, and a cache without its latent offset indexes (``index-NNNNN.safetensors``,
which the first read of a cache writes beside its shards and every later read reuses). They are
removed, untimed, before each measurement, so each one builds them, as the first ``interp explain``
of a freshly cached run does. Before, only the first measurement to read a cache paid for them (at
a size of the growth table alone, its first cell; at a size of the comparison, the comparison's, which
the growth table reuses), and none did where delphi's cache is written from ours, which reads ours
first (1,048,576 tokens by default). The shards themselves come from the page cache in every
measurement: the caches are all written just before.

Run from the repository root, after ``pip install --no-deps eai-delphi`` and
``pip install orjson jaxtyping blobfile asyncer`` (without delphi, ours runs alone)::

    python benchmarks/records_throughput.py                  # about 15 minutes on 2 idle CPU cores
    python benchmarks/records_throughput.py --tokens 100000 --growth-tokens 131072 --growth-latents 512 4608
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from cache_throughput import (
    Job,
    Target,
    _stub_faiss,
    cache_ours,
    cache_peer,
    in_fresh_process,
    measure,
    model_skeleton,
    peer_installed,
    random_sae_targets,
)
from common import Data, describe, load_tokenizer, mib, set_threads, table
from interp.cache import TOKENS_FILE, finalize_stats, shard_file
from interp.cache_index import index_file
from interp.config import CoderConfig, ModelConfig, RecordsConfig, RunConfig
from interp.models import EMBEDDED, load_model, model_files
from interp.records import CacheView, RecordBuilder, logit_lens
from interp.subject import open_coders

RECORDS = RecordsConfig()
"""Our record settings: the defaults (20 train, 20 test over 10 quantiles, 10 random and 10 hard negatives)."""


@dataclass
class RecordsJob:
    """One records measurement: which cache, of which coder, how many of its latents."""

    model: ModelConfig
    threads: int | None
    target: Target
    cache_dir: Path
    tokens: int
    latents: int


@dataclass
class Result:
    """What one records measurement found."""

    tokens: int
    latents: int
    seconds: float
    step_mib: float
    process_mib: float
    made: int
    """Records made (delphi skips latents with too few examples; ours marks them rare or dead)."""
    setup: str

    @property
    def per_s(self) -> float:
        return self.latents / self.seconds


def records_ours(job: RecordsJob) -> Result:
    """Build the records of the first ``job.latents`` latents from our cache, as ``interp explain`` does."""
    set_threads(job.threads)
    lm = load_model(job.model)
    name, coder = next(
        iter(open_coders(RunConfig(model=job.model, coders=CoderConfig([job.target.spec])), lm, None).items())
    )
    decoder = coder.decoder_weight().detach()
    lens = logit_lens(lm.model, decoder)

    def work() -> Counter:
        view = CacheView.open(job.cache_dir, name, bos_token_id=lm.tokenizer.bos_token_id)
        builder = RecordBuilder(view, RECORDS, decoder, lens)
        return Counter(r.status for r in builder.build(name, range(job.latents)))

    made, seconds, step_mib, process_mib, _ = measure(work, torch.device("cpu"))
    return Result(job.tokens, job.latents, seconds, step_mib, process_mib, sum(made.values()), describe(lm, job.model))


def records_peer(job: RecordsJob) -> Result:
    """Build the records of the first ``job.latents`` latents from delphi's cache with its ``LatentDataset``."""
    _stub_faiss()
    from delphi.config import ConstructorConfig, SamplerConfig
    from delphi.latents import LatentDataset

    set_threads(job.threads)
    tokenizer = load_tokenizer(job.model)
    _, hookpoint = job.target.peer
    sampler = SamplerConfig(n_examples_train=RECORDS.n_train, n_examples_test=RECORDS.n_test, train_type="top")
    sampler.n_quantiles = RECORDS.n_quantiles
    constructor = ConstructorConfig(
        example_ctx_len=RECORDS.example_len,
        min_examples=RECORDS.min_examples,
        n_non_activating=RECORDS.n_negatives,
        center_examples=True,  # in delphi 0.1.3 this runs pool_max_activation_windows: windows cut, as ours are
        non_activating_source="random",
    )

    def work() -> int:
        dataset = LatentDataset(
            job.cache_dir,
            sampler,
            constructor,
            tokenizer,
            modules=[hookpoint],
            latents={hookpoint: torch.arange(job.latents)},
        )
        with contextlib.redirect_stdout(io.StringIO()):
            return sum(1 for _ in dataset)

    made, seconds, step_mib, process_mib, _ = measure(work, torch.device("cpu"))
    return Result(job.tokens, job.latents, seconds, step_mib, process_mib, made, "")


def random_model(folder: Path, hidden: int, layers: int) -> ModelConfig:
    """A random Llama ``hidden`` wide with ``layers`` blocks and the embedded model's tokenizer, in ``folder``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_files(ModelConfig(model=EMBEDDED))[0])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelConfig(model=str(folder), dtype="float32", device_map="cpu")


def cache_both(args, model: ModelConfig, target: Target, windows: torch.Tensor, folder: Path, peer: bool) -> str:
    """Our cache (and delphi's, with ``peer``) of ``windows`` in ``folder``/ours and ``folder``/delphi, untimed; how
    delphi's was made."""
    ours = folder / "ours"
    job = Job(model, args.threads, target, windows, args.batch_size, args.shard_windows, args.n_splits, ours)
    in_fresh_process(cache_ours, job)
    if not peer:
        return "none"
    job.out_dir = folder / "delphi"
    if windows.numel() <= args.peer_cache_max:
        in_fresh_process(cache_peer, job)
        return "LatentCache"
    peer_cache_from_ours(folder / "ours", job.out_dir, target.peer[1], windows, args.n_splits, model.model)
    return "written from ours"


def peer_cache_from_ours(ours: Path, folder: Path, module: str, windows: torch.Tensor, n_splits: int, model: str):
    """delphi's cache of the same activations, laid out as its ``LatentCache.save_splits`` + ``save_config`` do
    (locations (window, position, latent - split start) as uint16 or uint32, float16 activations, the int64 token
    windows in every split): for caches too large for its ``LatentCache``, which holds every activation in memory."""
    from delphi.config import CacheConfig as DelphiCacheConfig

    view = CacheView.open(ours, next(p.name for p in ours.iterdir() if p.is_dir()))
    token, latent, activation = (x.numpy() for x in view.triples(torch.arange(view.num_latents)))
    window, position = np.divmod(token, windows.shape[1])
    module_dir = folder / module
    module_dir.mkdir(parents=True)
    bounds = torch.linspace(0, view.num_latents, steps=n_splits + 1).long().tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        a, b = np.searchsorted(latent, [start, end])
        locations = np.stack([window[a:b], position[a:b], latent[a:b] - start], axis=1)
        small = locations[:, 2].max(initial=0) < 2**16 and locations[:, 0].max(initial=0) < 2**16
        split = {
            "locations": locations.astype(np.uint16 if small else np.uint32),
            "activations": activation[a:b].astype(np.float16),
            "tokens": windows.numpy().astype(np.int64),
        }
        save_numpy(split, str(module_dir / f"{start}_{end - 1}.safetensors"))
    cfg = DelphiCacheConfig(cache_ctx_len=windows.shape[1], n_tokens=windows.numel(), n_splits=n_splits).to_dict()
    (module_dir / "config.json").write_text(json.dumps({**cfg, "model_name": model}, indent=4))


def drop_indexes(cache: Path) -> None:
    """Remove the latent offset indexes of our ``cache`` (its first read writes them), so that the next measurement
    starts as every other does: it builds them."""
    for coder_dir in (p for p in cache.iterdir() if p.is_dir()):
        i = 0
        while shard_file(coder_dir, i).is_file():
            index_file(coder_dir, i).unlink(missing_ok=True)
            i += 1


def prefix_cache(source: Path, folder: Path, windows: torch.Tensor) -> bool:
    """Our cache of the first ``windows`` in ``folder``, from the shards of the larger cache ``source`` (what
    ``build_cache`` would write, since each shard holds its own windows), if they end on a shard boundary."""
    name = next(p.name for p in source.iterdir() if p.is_dir())
    metas = [json.loads(p.read_text()) for p in sorted((source / name).glob("shard-*.json"))]
    ends = [m["first_window"] + m["num_windows"] for m in metas]
    if len(windows) not in ends:
        return False
    shards = ends.index(len(windows)) + 1
    (folder / name).mkdir(parents=True)
    save_file({"tokens": windows.contiguous()}, str(folder / TOKENS_FILE))
    shutil.copy(source / name / "coder.json", folder / name)
    for i in range(shards):
        for path in (shard_file(source / name, i), shard_file(source / name, i).with_suffix(".json")):
            shutil.copy(path, folder / name)
    latents = json.loads((source / name / "stats.json").read_text())["num_latents"]
    finalize_stats(folder / name, latents, len(windows), metas[0]["num_windows"])
    return True


def comparison_table(rows: list[tuple[Result, Result | None]]) -> str:
    """Ours against delphi at each cache size, all latents."""
    head = [
        "cached tokens",
        "latents",
        "ours latents/s",
        "delphi latents/s",
        "ratio",
        "ours records MiB",
        "delphi records MiB",
        "ours peak MiB",
        "delphi peak MiB",
        "records made (ours / delphi)",
    ]
    out = []
    for ours, peer in rows:
        cells = (
            ["n/a"] * 4
            if peer is None
            else [
                f"{peer.per_s:,.0f}",
                f"{ours.per_s / peer.per_s:.1f}x",
                mib(peer.step_mib),
                mib(peer.process_mib),
            ]
        )
        out.append(
            [
                f"{ours.tokens:,}",
                f"{ours.latents:,}",
                f"{ours.per_s:,.0f}",
                cells[0],
                cells[1],
                mib(ours.step_mib),
                cells[2],
                mib(ours.process_mib),
                cells[3],
                f"{ours.made:,} / {peer.made:,}" if peer else f"{ours.made:,} / n/a",
            ]
        )
    return table(head, out)


def growth_table(results: dict[tuple[int, int], Result], tokens: list[int], latents: list[int]) -> str:
    """Our milliseconds per latent (and records MiB) by cached tokens (rows) and latents built (columns)."""
    head = ["cached tokens", *(f"{n:,} latents: ms/latent (MiB)" for n in latents), "whole run, s"]
    rows = []
    for t in tokens:
        cells = [f"{1000 * results[t, n].seconds / n:.2f} ({results[t, n].step_mib:,.0f})" for n in latents]
        rows.append([f"{t:,}", *cells, f"{results[t, latents[-1]].seconds:.1f}"])
    return table(head, rows)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("model and coder")
    g.add_argument("--model", default="random", help="'random' (the default: see --hidden), or any model interp loads")
    g.add_argument("--hidden", type=int, default=128, help="width of the random model (default: 128)")
    g.add_argument("--num-layers", type=int, default=2, help="blocks of the random model (default: 2)")
    g.add_argument("--layer", type=int, default=1, help="block whose output the random SAE reads (default: 1)")
    g.add_argument("--latents", type=int, default=4608, help="random SAE width (default: 4,608, as SmolLM2's 576 x 8)")
    g.add_argument("--k", type=int, default=32, help="random SAE's active latents per token (default: 32)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random SAE")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    d = p.add_argument_group("cache")
    d.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_048_576], help="cache sizes of the comparison")
    d.add_argument("--ctx-len", type=int, default=64, help="tokens per window (default: 64)")
    d.add_argument("--batch-size", type=int, default=16, help="windows per forward pass when caching (default: 16)")
    d.add_argument("--shard-windows", type=int, default=256, help="windows per shard of our cache (default: 256)")
    d.add_argument("--n-splits", type=int, default=5, help="files delphi splits its cache into (default: 5)")
    d.add_argument(
        "--peer-cache-max",
        type=int,
        default=262_144,
        help="largest cache delphi's LatentCache writes itself; above it, delphi's cache is written from ours in its "
        "layout (default: 262,144; at 1,048,576 tokens LatentCache was killed for memory on a 23 GB machine)",
    )
    d.add_argument(
        "--growth-tokens",
        type=int,
        nargs="*",
        default=[131_072, 262_144, 524_288, 1_048_576],
        help="cache sizes of our growth table (none: no table)",
    )
    d.add_argument(
        "--growth-latents",
        type=int,
        nargs="+",
        default=[512, 4608],
        help="latents built at each size of the growth table (the last one also the whole run)",
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="records-bench-") as tmp:
        scratch = Path(tmp)
        if args.model == "random":
            model = random_model(scratch / "model", args.hidden, args.num_layers)
        else:
            model = ModelConfig(model=args.model, dtype="float32", device_map="cpu")
        skeleton = model_skeleton(model)
        args.hookpoint, args.layers = None, [args.layer]
        target = random_sae_targets(skeleton, args, scratch / "sae")[0]
        peer = peer_installed() and target.peer is not None
        sizes = sorted(set(args.tokens) | set(args.growth_tokens))
        everything = Data("builtin", max(sizes), args.ctx_len).windows(
            load_tokenizer(model), batch_size=args.batch_size
        )
        caches, made = {}, {}
        for size in sorted(sizes, reverse=True):
            windows = everything[: size // args.ctx_len // args.batch_size * args.batch_size]
            caches[size] = scratch / f"cache-{size}"
            if size not in args.tokens and prefix_cache(caches[max(sizes)] / "ours", caches[size] / "ours", windows):
                continue
            made[size] = cache_both(args, model, target, windows, caches[size], peer and size in args.tokens)

        measured: dict[tuple[int, int], Result] = {}

        def ours(size: int, latents: int) -> Result:
            """Our records of ``latents`` latents from the ``size``-token cache, measured once (the comparison's
            size and latents may be a cell of the growth table too), in a fresh process, its indexes built anew."""
            if (size, latents) not in measured:
                drop_indexes(caches[size] / "ours")
                job = RecordsJob(model, args.threads, target, caches[size] / "ours", size, latents)
                measured[size, latents] = in_fresh_process(records_ours, job)
            return measured[size, latents]

        rows = []
        for size in args.tokens:
            mine = ours(size, args.latents)
            theirs = None
            if peer:
                job = RecordsJob(model, args.threads, target, caches[size] / "delphi", size, args.latents)
                theirs = in_fresh_process(records_peer, job)
            rows.append((mine, theirs))
        print(
            f"\n{rows[0][0].setup}; coder {target.spec.split('@')[-1]} (random sparsify TopK, "
            f"{args.latents:,} latents, k={args.k}); ctx_len {args.ctx_len}; "
            f"load average {load:.1f} before / {os.getloadavg()[0]:.1f} after\n"
        )
        print(comparison_table(rows))
        for size in args.tokens:
            if made.get(size) == "written from ours":
                print(
                    f"\nNote: delphi's cache of {size:,} tokens was written from ours in its save_splits layout "
                    f"(its LatentCache holds every activation in memory; above --peer-cache-max "
                    f"{args.peer_cache_max:,} tokens it was killed for memory on this machine)."
                )
        if not peer:
            print("\nNote: delphi is not installed (or cannot hook this coder): ours ran alone.")
        if args.growth_tokens:
            latents = sorted(min(n, args.latents) for n in args.growth_latents)
            results = {(t, n): ours(t, n) for t in args.growth_tokens for n in latents}
            print("\nOur records by cached tokens and latents built (ms per latent; MiB above the process before):\n")
            print(growth_table(results, args.growth_tokens, latents))


if __name__ == "__main__":
    sys.exit(main())
