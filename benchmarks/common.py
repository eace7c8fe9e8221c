"""What the benchmarks share: which model, on which device and in which dtype, over which corpus, and a
header line that names what was actually used."""

import argparse
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer

from interp.config import CorpusConfig, ModelConfig
from interp.corpus import corpus_windows
from interp.models import EMBEDDED, LoadedModel, model_files

DEVICES = ("cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Data:
    """Which corpus the token windows come from, and how many of what size."""

    corpus: str
    tokens: int
    ctx_len: int

    def windows(self, tokenizer, *, tokens: int | None = None, batch_size: int = 1) -> torch.Tensor:
        """``tokens`` (default: ``self.tokens``) tokens of windows, cut to a whole number of batches."""
        cfg = CorpusConfig(corpus=self.corpus, ctx_len=self.ctx_len, num_tokens=tokens or self.tokens)
        windows = corpus_windows(cfg, tokenizer)
        if len(windows) < batch_size:
            raise SystemExit(
                f"--tokens {cfg.num_tokens} makes {len(windows)} windows of {self.ctx_len}, "
                f"less than one batch of {batch_size}."
            )
        return windows[: len(windows) // batch_size * batch_size]


def add_model_args(
    parser: argparse.ArgumentParser, *, tokens: int, ctx_len: int, batch_size: int, batch_help: str
) -> None:
    """The flags every benchmark takes: --model --device --dtype --threads --corpus --tokens --ctx-len --batch-size."""
    g = parser.add_argument_group("model, device and data")
    g.add_argument(
        "--model",
        default=EMBEDDED,
        help="Hugging Face id, local folder, .gguf file, or 'embedded' (SmolLM2-135M-Instruct; the default)",
    )
    g.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs (default: cpu)")
    g.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="model weights (default: auto, float32 on cpu, bfloat16 on cuda)",
    )
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    g.add_argument(
        "--corpus", default="builtin", help="'builtin', a local file or folder, or a Hub dataset id (default: builtin)"
    )
    g.add_argument("--tokens", type=int, default=tokens, help=f"tokens of corpus windows (default: {tokens:,})")
    g.add_argument("--ctx-len", type=int, default=ctx_len, help=f"tokens per window (default: {ctx_len})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"{batch_help} (default: {batch_size})")


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The ``ModelConfig`` that loads ``args.model`` whole onto ``args.device``, in ``args.dtype``."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine has no CUDA device (torch sees none).")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device == "cuda" else "float32")
    return ModelConfig(model=args.model, dtype=dtype, device_map=args.device)


def data(args: argparse.Namespace) -> Data:
    """The corpus settings the flags give."""
    return Data(args.corpus, args.tokens, args.ctx_len)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch CPU threads, when given."""
    if threads:
        torch.set_num_threads(threads)


def load_tokenizer(cfg: ModelConfig):
    """The model's tokenizer alone, without loading its weights."""
    source, gguf_file = model_files(cfg)
    return AutoTokenizer.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))


def describe(lm: LoadedModel, cfg: ModelConfig) -> str:
    """Model, device, dtype and CPU threads as loaded: the start of a benchmark's header."""
    name = "embedded SmolLM2-135M-Instruct" if lm.name == EMBEDDED else lm.name
    device = lm.device
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    dtype = str(lm.model.dtype).removeprefix("torch.")
    if cfg.quantization != "none":
        dtype = f"{cfg.quantization} bitsandbytes, compute {dtype}"
    return (
        f"{name} ({lm.model.num_parameters() / 1e6:,.0f}M parameters) on {where}, {dtype}, "
        f"{torch.get_num_threads()} torch threads"
    )


def table(head: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def mib(value: float | None) -> str:
    """A memory figure in MiB for a table cell; n/a where there is none (CUDA memory on the CPU)."""
    return "n/a" if value is None else f"{value:,.0f}"


def cuda_sync(device: torch.device | str) -> None:
    """Wait for the GPU's queued work, so a timer reads finished work (nothing on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
